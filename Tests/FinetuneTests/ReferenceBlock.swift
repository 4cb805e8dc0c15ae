import Checkpoint
import Finetune
import Foundation
import Kernels
import Llama
import Quantizer

/// One quantized linear in Float64: Ŵ[r, group j] = s_r·Σ_m (B_m·A_m)[b_{r,j,m}].
struct ReferenceLinear {
    let scheme: AQLMScheme
    let dOut: Int
    let dIn: Int
    let codes: [UInt16]
    var codebooks: [Double]
    var transform: [Double]?
    var scales: [Double]

    init(_ l: TrainableLinear) {
        scheme = l.scheme
        dOut = l.dOut
        dIn = l.dIn
        codes = l.codes
        codebooks = l.codebooks.map(Double.init)
        transform = l.transform?.map(Double.init)
        scales = l.scales.map(Double.init)
    }

    func codeword(_ m: Int, _ c: Int) -> [Double] {
        let g = scheme.groupSize, k = scheme.codebookSize
        let base = Array(codebooks[((m * k + c) * g)..<((m * k + c + 1) * g)])
        guard let transform else { return base }
        var out = [Double](repeating: 0, count: g)
        for row in 0..<g {
            for col in 0..<g { out[col] += base[row] * transform[(m * g + row) * g + col] }
        }
        return out
    }

    var weight: [Double] {
        let g = scheme.groupSize, groups = dIn / g, m = scheme.codebookCount
        var w = [Double](repeating: 0, count: dOut * dIn)
        for r in 0..<dOut {
            for j in 0..<groups {
                for book in 0..<m {
                    let c = codeword(book, Int(codes[(r * groups + j) * m + book]))
                    for a in 0..<g { w[r * dIn + j * g + a] += scales[r] * c[a] }
                }
            }
        }
        return w
    }
}

/// A Llama block written as plainly as possible in Float64 (Hugging Face semantics, like
/// LlamaTests' NaiveLlama), over a `TrainableBlock`'s parameters: the finite-difference
/// reference for the gradients.
struct ReferenceBlock {
    let config: LlamaConfig
    var inputNorm: [Double]
    var postAttentionNorm: [Double]
    var quantized: [LlamaLinear: ReferenceLinear]
    let dense: [LlamaLinear: [Double]]
    let biases: [LlamaLinear: [Double]]

    init(_ block: TrainableBlock, config: LlamaConfig) {
        self.config = config
        inputNorm = block.inputNorm.map(Double.init)
        postAttentionNorm = block.postAttentionNorm.map(Double.init)
        quantized = block.quantized.mapValues(ReferenceLinear.init)
        var dense: [LlamaLinear: [Double]] = [:]
        let frozen = block.llamaBlock()
        for linear in LlamaLinear.allCases where block.quantized[linear] == nil {
            dense[linear] = (frozen[linear] as! DenseLinear).weights.map(Double.init)
        }
        self.dense = dense
        var biases: [LlamaLinear: [Double]] = [:]
        if let b = frozen.qBias { biases[.q] = b.map(Double.init) }
        if let b = frozen.kBias { biases[.k] = b.map(Double.init) }
        if let b = frozen.vBias { biases[.v] = b.map(Double.init) }
        self.biases = biases
    }

    func project(_ linear: LlamaLinear, _ x: [Double], _ weights: [LlamaLinear: [Double]]) -> [Double] {
        let w = weights[linear]!
        let cols = x.count, rows = w.count / cols
        var y = (0..<rows).map { r in (0..<cols).reduce(0.0) { $0 + w[r * cols + $1] * x[$1] } }
        if let b = biases[linear] { y = zip(y, b).map(+) }
        return y
    }

    func rmsNorm(_ x: [Double], _ w: [Double]) -> [Double] {
        let inv = 1 / (x.reduce(0) { $0 + $1 * $1 } / Double(x.count) + Double(config.rmsNormEps)).squareRoot()
        return zip(x, w).map { $0 * inv * $1 }
    }

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

    /// Block output rows for input rows at positions 0...
    func output(_ input: [[Double]]) -> [[Double]] {
        let c = config, hd = c.headDim, t = input.count
        var x = input
        var weights = dense
        for (linear, layer) in quantized { weights[linear] = layer.weight }
        func project(_ linear: LlamaLinear, _ x: [Double]) -> [Double] { self.project(linear, x, weights) }
        let normed = x.map { rmsNorm($0, inputNorm) }
        let q = normed.map { project(.q, $0) }, k = normed.map { project(.k, $0) }, v = normed.map { project(.v, $0) }
        var attention = [[Double]](repeating: [Double](repeating: 0, count: c.numHeads * hd), count: t)
        for row in 0..<t {
            for h in 0..<c.numHeads {
                let g = h / (c.numHeads / c.numKVHeads)
                let qh = rope(Array(q[row][(h * hd)..<((h + 1) * hd)]), position: row)
                var scores = (0...row).map { j -> Double in
                    let kj = rope(Array(k[j][(g * hd)..<((g + 1) * hd)]), position: j)
                    return zip(qh, kj).reduce(0) { $0 + $1.0 * $1.1 } / Double(hd).squareRoot()
                }
                let m = scores.max()!
                scores = scores.map { exp($0 - m) }
                let total = scores.reduce(0, +)
                for j in 0...row {
                    for i in 0..<hd { attention[row][h * hd + i] += scores[j] / total * v[j][g * hd + i] }
                }
            }
        }
        for row in 0..<t {
            x[row] = zip(x[row], project(.o, attention[row])).map(+)
            let h = rmsNorm(x[row], postAttentionNorm)
            let hidden = zip(project(.gate, h), project(.up, h)).map { g, u in g / (1 + exp(-g)) * u }
            x[row] = zip(x[row], project(.down, hidden)).map(+)
        }
        return x
    }

    /// ‖Y − Y*‖²/‖Y*‖², the block fine-tuning loss of one sequence.
    func loss(_ input: [[Double]], target: [[Double]]) -> Double {
        let y = output(input)
        let difference = zip(y.joined(), target.joined()).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
        return difference / target.joined().reduce(0.0) { $0 + $1 * $1 }
    }
}
