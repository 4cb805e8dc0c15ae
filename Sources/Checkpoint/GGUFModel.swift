/// GGUF -> ModelWeights: hyper-parameters from `{arch}.*` metadata, the BPE vocabulary from
/// `tokenizer.ggml.*`, and tensors renamed to the Hugging Face scheme.

extension GGUFFile {
    public func llamaConfig() throws -> LlamaConfig {
        guard let arch = metadata["general.architecture"]?.string else {
            throw CheckpointError.missingKey(path, key: "general.architecture")
        }
        guard LlamaConfig.supportedArchitectures.contains(arch) else {
            throw CheckpointError.unsupportedArchitecture(path, arch)
        }
        func int(_ k: String) throws -> Int {
            guard let v = metadata["\(arch).\(k)"]?.int else { throw CheckpointError.missingKey(path, key: "\(arch).\(k)") }
            return v
        }
        let hidden = try int("embedding_length")
        let heads = try int("attention.head_count")
        let kvHeads = metadata["\(arch).attention.head_count_kv"]?.int ?? heads
        guard hidden > 0, heads > 0, kvHeads > 0, heads % kvHeads == 0 else {
            throw CheckpointError.invalid(path, detail: "inconsistent head counts (\(heads) heads, \(kvHeads) kv heads)")
        }
        let headDim = metadata["\(arch).attention.key_length"]?.int ?? hidden / heads
        let vocab = metadata["\(arch).vocab_size"]?.int ?? metadata["tokenizer.ggml.tokens"]?.array?.count ?? 0
        return LlamaConfig(
            architecture: arch,
            vocabSize: vocab,
            hiddenSize: hidden,
            intermediateSize: try int("feed_forward_length"),
            numLayers: try int("block_count"),
            numHeads: heads,
            numKVHeads: kvHeads,
            headDim: headDim,
            contextLength: try int("context_length"),
            ropeTheta: Float(metadata["\(arch).rope.freq_base"]?.double ?? 10000),
            rmsNormEps: Float(metadata["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5),
            tiedEmbeddings: tensor("output.weight") == nil,
            attentionBias: tensor("blk.0.attn_q.bias") != nil
        )
    }

    public func tokenizerSpec() throws -> TokenizerSpec {
        let model = metadata["tokenizer.ggml.model"]?.string ?? "?"
        guard model == "gpt2" else {
            throw CheckpointError.invalid(path, detail: "tokenizer.ggml.model '\(model)' is not supported (only byte-level BPE, 'gpt2')")
        }
        guard let tokens = metadata["tokenizer.ggml.tokens"]?.array?.compactMap(\.string), !tokens.isEmpty else {
            throw CheckpointError.missingKey(path, key: "tokenizer.ggml.tokens")
        }
        let merges = metadata["tokenizer.ggml.merges"]?.array?.compactMap(\.string) ?? []
        let types = metadata["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) ?? Array(repeating: 1, count: tokens.count)
        return TokenizerSpec(
            tokens: tokens, merges: merges, tokenTypes: types,
            preTokenizer: metadata["tokenizer.ggml.pre"]?.string ?? "default",
            bosId: metadata["tokenizer.ggml.bos_token_id"]?.int,
            eosId: metadata["tokenizer.ggml.eos_token_id"]?.int,
            addBOS: metadata["tokenizer.ggml.add_bos_token"]?.bool ?? false)
    }

    /// GGUF tensor name -> Hugging Face name (nil for tensors the model does not use).
    public static func huggingFaceName(_ g: String) -> String? {
        switch g {
        case "token_embd.weight": return "model.embed_tokens.weight"
        case "output_norm.weight": return "model.norm.weight"
        case "output.weight": return "lm_head.weight"
        default: break
        }
        let parts = g.split(separator: ".", maxSplits: 2).map(String.init)
        guard parts.count == 3, parts[0] == "blk", let l = Int(parts[1]) else { return nil }
        let map = [
            "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
            "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
            "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
            "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
            "attn_v.bias": "self_attn.v_proj.bias",
            "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
            "ffn_down.weight": "mlp.down_proj.weight",
        ]
        return map[parts[2]].map { "model.layers.\(l).\($0)" }
    }

    /// Reads the whole model into Float32, un-permuting q/k for llama-style RoPE.
    public func modelWeights() throws -> ModelWeights {
        let config = try llamaConfig()
        let spec = try tokenizerSpec()
        // llama.cpp's converter permutes q/k rows for llama and mistral; qwen2 is stored as is.
        let permuted = config.architecture != "qwen2"
        var tensors: [String: WeightTensor] = [:]
        for info in self.tensors {
            guard let name = Self.huggingFaceName(info.name) else { continue }
            var values = try floats(info)
            let shape = info.shape
            if permuted, name.hasSuffix("q_proj.weight") || name.hasSuffix("k_proj.weight") {
                let heads = name.hasSuffix("q_proj.weight") ? config.numHeads : config.numKVHeads
                guard shape.count == 2, shape[0] == heads * config.headDim else {
                    throw CheckpointError.shapeMismatch(path, tensor: info.name, expected: [heads * config.headDim, config.hiddenSize], found: shape)
                }
                values = unpermuteRopeRows(values, heads: heads, cols: shape[1])
            } else if permuted, name.hasSuffix("q_proj.bias") || name.hasSuffix("k_proj.bias") {
                let heads = name.hasSuffix("q_proj.bias") ? config.numHeads : config.numKVHeads
                values = unpermuteRopeRows(values, heads: heads, cols: 1)
            }
            tensors[name] = WeightTensor(shape: shape, values: values)
        }
        let weights = ModelWeights(config: config, tokenizer: spec, tensors: tensors, source: path)
        try weights.validate()
        return weights
    }
}
