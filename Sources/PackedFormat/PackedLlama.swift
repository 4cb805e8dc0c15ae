import Checkpoint
import Kernels
import Llama
import Quantizer

extension PackedModel {
    /// The Llama model running straight from the codes: every quantized linear becomes an
    /// `AQLMLinear` (lookup-table decode, dequantize-tile prefill), so no block weight is ever
    /// expanded to Float32 as a whole. Linears left unquantized run dense.
    public func llamaModel() throws -> LlamaModel {
        let c = config
        func tensor(_ name: String) throws -> WeightTensor {
            guard let t = dense[name] else { throw PackedFormatError("packed model lacks tensor '\(name)'") }
            return t
        }
        func linear(_ name: String) throws -> any LinearOperator {
            if let code = linears[name] {
                return try AQLMLinear(codes: code.codes, codebooks: code.codebooks, scales: code.scales,
                                      outputSize: code.dOut, inputSize: code.dIn, scheme: code.scheme, name: name)
            }
            let t = try tensor(name + ".weight")
            return DenseLinear(weights: t.values, outputSize: t.shape[0], inputSize: t.shape[1])
        }
        let layers = try (0..<c.numLayers).map { l -> LlamaBlock in
            let p = "model.layers.\(l)."
            return LlamaBlock(
                inputNorm: try tensor(p + "input_layernorm.weight").values,
                postAttentionNorm: try tensor(p + "post_attention_layernorm.weight").values,
                q: try linear(p + LlamaLinear.q.rawValue), k: try linear(p + LlamaLinear.k.rawValue),
                v: try linear(p + LlamaLinear.v.rawValue), o: try linear(p + LlamaLinear.o.rawValue),
                gate: try linear(p + LlamaLinear.gate.rawValue), up: try linear(p + LlamaLinear.up.rawValue),
                down: try linear(p + LlamaLinear.down.rawValue),
                qBias: c.attentionBias ? try tensor(p + "self_attn.q_proj.bias").values : nil,
                kBias: c.attentionBias ? try tensor(p + "self_attn.k_proj.bias").values : nil,
                vBias: c.attentionBias ? try tensor(p + "self_attn.v_proj.bias").values : nil)
        }
        let embedding = try tensor("model.embed_tokens.weight")
        let head = c.tiedEmbeddings ? embedding : try tensor("lm_head.weight")
        return LlamaModel(config: c, embedding: embedding.values, finalNorm: try tensor("model.norm.weight").values,
                          layers: layers,
                          head: DenseLinear(weights: head.values, outputSize: head.shape[0], inputSize: head.shape[1]))
    }
}
