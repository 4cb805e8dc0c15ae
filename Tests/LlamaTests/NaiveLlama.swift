import Checkpoint
import Foundation

/// A Llama forward pass written as plainly as possible, in Double, straight from the
/// Hugging Face modeling code (LlamaRMSNorm, rotate_half RoPE, repeat_kv GQA, SwiGLU), with
/// no cache and no batching: the reference the optimised Float32 pass is checked against.
struct NaiveLlama {
    let weights: ModelWeights
    var config: LlamaConfig { weights.config }

    func tensor(_ name: String) -> [Double] { weights[name].values.map(Double.init) }

    /// y = W x for W [rows × cols] row-major.
    func matvec(_ w: [Double], _ x: [Double]) -> [Double] {
        let cols = x.count, rows = w.count / cols
        return (0..<rows).map { r in (0..<cols).reduce(0.0) { $0 + w[r * cols + $1] * x[$1] } }
    }

    func rmsNorm(_ x: [Double], _ w: [Double]) -> [Double] {
        let meanSquare = x.reduce(0) { $0 + $1 * $1 } / Double(x.count)
        let inv = 1 / (meanSquare + Double(config.rmsNormEps)).squareRoot()
        return zip(x, w).map { $0 * inv * $1 }
    }

    /// Rotate-half RoPE on one head vector at position p.
    func rope(_ x: [Double], position p: Int) -> [Double] {
        let d = x.count, half = d / 2
        var out = x
        for i in 0..<half {
            let angle = Double(p) * pow(Double(config.ropeTheta), -2 * Double(i) / Double(d))
            out[i] = x[i] * cos(angle) - x[i + half] * sin(angle)
            out[i + half] = x[i + half] * cos(angle) + x[i] * sin(angle)
        }
        return out
    }

    /// Logits [tokens][vocab] for every position of `tokens` (positions 0...).
    func logits(_ tokens: [Int]) -> [[Double]] {
        let c = config, d = c.hiddenSize, hd = c.headDim
        let embedding = tensor("model.embed_tokens.weight")
        var x = tokens.map { Array(embedding[($0 * d)..<(($0 + 1) * d)]) }
        for l in 0..<c.numLayers {
            let p = "model.layers.\(l)."
            let normed = x.map { rmsNorm($0, tensor(p + "input_layernorm.weight")) }
            func project(_ name: String, _ input: [Double]) -> [Double] {
                var y = matvec(tensor(p + name + ".weight"), input)
                if c.attentionBias, weights.tensors[p + name + ".bias"] != nil {
                    y = zip(y, tensor(p + name + ".bias")).map(+)
                }
                return y
            }
            let q = normed.map { project("self_attn.q_proj", $0) }
            let k = normed.map { project("self_attn.k_proj", $0) }
            let v = normed.map { project("self_attn.v_proj", $0) }
            var attention = [[Double]](repeating: [Double](repeating: 0, count: c.numHeads * hd), count: tokens.count)
            for t in 0..<tokens.count {
                for h in 0..<c.numHeads {
                    let g = h / (c.numHeads / c.numKVHeads)
                    let qh = rope(Array(q[t][(h * hd)..<((h + 1) * hd)]), position: t)
                    var scores = (0...t).map { j -> Double in
                        let kj = rope(Array(k[j][(g * hd)..<((g + 1) * hd)]), position: j)
                        return zip(qh, kj).reduce(0) { $0 + $1.0 * $1.1 } / Double(hd).squareRoot()
                    }
                    let m = scores.max()!
                    scores = scores.map { exp($0 - m) }
                    let total = scores.reduce(0, +)
                    for j in 0...t {
                        for i in 0..<hd { attention[t][h * hd + i] += scores[j] / total * v[j][g * hd + i] }
                    }
                }
            }
            for t in 0..<tokens.count {
                x[t] = zip(x[t], matvec(tensor(p + "self_attn.o_proj.weight"), attention[t])).map(+)
                let h = rmsNorm(x[t], tensor(p + "post_attention_layernorm.weight"))
                let gate = matvec(tensor(p + "mlp.gate_proj.weight"), h)
                let up = matvec(tensor(p + "mlp.up_proj.weight"), h)
                let hidden = zip(gate, up).map { g, u in g / (1 + exp(-g)) * u }
                x[t] = zip(x[t], matvec(tensor(p + "mlp.down_proj.weight"), hidden)).map(+)
            }
        }
        let head = weights.outputHead.values.map(Double.init)
        return x.map { matvec(head, rmsNorm($0, tensor("model.norm.weight"))) }
    }
}
