/// GGUF -> ModelWeights: hyper-parameters from `{arch}.*` metadata, the BPE vocabulary from
/// `tokenizer.ggml.*`, and tensors renamed to the Hugging Face scheme.

extension GGUFFile {
    /// Upper bound for any size in a config (2^24: vocabularies and contexts of millions fit).
    static let maxHyperParameter = 1 << 24

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
        let layers = try int("block_count"), ffn = try int("feed_forward_length"), context = try int("context_length")
        // Every layer needs its own tensors, and sizes are bounded so that shape products cannot
        // overflow: larger values are corruption, not a model to enumerate.
        let sizes = [hidden, heads, kvHeads, headDim, ffn, vocab, context]
        guard layers >= 0, layers <= tensors.count, sizes.allSatisfy({ (0...Self.maxHyperParameter).contains($0) }) else {
            throw CheckpointError.invalid(path, detail: "implausible hyper-parameters (\(layers) layers for \(tensors.count) tensors, "
                + "hidden \(hidden), heads \(heads)/\(kvHeads), head dim \(headDim), feed-forward \(ffn), vocab \(vocab), context \(context))")
        }
        return LlamaConfig(
            architecture: arch,
            vocabSize: vocab,
            hiddenSize: hidden,
            intermediateSize: ffn,
            numLayers: layers,
            numHeads: heads,
            numKVHeads: kvHeads,
            headDim: headDim,
            contextLength: context,
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
            addBOS: metadata["tokenizer.ggml.add_bos_token"]?.bool ?? false,
            chatTemplate: metadata["tokenizer.chat_template"]?.string)
    }

    /// Per-block tensors: GGUF suffix after `blk.N.` -> Hugging Face suffix after `model.layers.N.`.
    static let blockTensorNames: [String: String] = [
        "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
        "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
        "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
        "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
        "attn_v.bias": "self_attn.v_proj.bias",
        "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
        "ffn_down.weight": "mlp.down_proj.weight",
    ]
    static let globalTensorNames: [String: String] = [
        "token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    ]
    static let inverseBlockTensorNames = Dictionary(uniqueKeysWithValues: blockTensorNames.map { ($1, $0) })
    static let inverseGlobalTensorNames = Dictionary(uniqueKeysWithValues: globalTensorNames.map { ($1, $0) })

    /// GGUF tensor name -> Hugging Face name (nil for tensors the model does not use).
    public static func huggingFaceName(_ g: String) -> String? {
        globalTensorNames[g] ?? renamedBlockTensor(g, from: "blk.", to: "model.layers.", blockTensorNames)
    }

    /// Hugging Face name -> GGUF tensor name (nil for names outside the Llama scheme).
    public static func ggufName(_ h: String) -> String? {
        inverseGlobalTensorNames[h] ?? renamedBlockTensor(h, from: "model.layers.", to: "blk.", inverseBlockTensorNames)
    }

    /// `<prefix><layer>.<suffix>` -> `<newPrefix><layer>.<suffixes[suffix]>`; the layer must be
    /// written canonically ("7", not "07"), so two stored names never map to one.
    private static func renamedBlockTensor(_ name: String, from prefix: String, to newPrefix: String,
                                           _ suffixes: [String: String]) -> String? {
        guard name.hasPrefix(prefix) else { return nil }
        let rest = name.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]), layer >= 0,
              String(layer) == rest[..<dot] else { return nil }
        return suffixes[String(rest[rest.index(after: dot)...])].map { "\(newPrefix)\(layer).\($0)" }
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
                let expected = [heads * config.headDim, config.hiddenSize]
                guard shape == expected else {
                    throw CheckpointError.shapeMismatch(path, tensor: info.name, expected: expected, found: shape)
                }
                values = unpermuteRopeRows(values, heads: heads, cols: shape[1])
            } else if permuted, name.hasSuffix("q_proj.bias") || name.hasSuffix("k_proj.bias") {
                let heads = name.hasSuffix("q_proj.bias") ? config.numHeads : config.numKVHeads
                guard shape == [heads * config.headDim] else {
                    throw CheckpointError.shapeMismatch(path, tensor: info.name, expected: [heads * config.headDim], found: shape)
                }
                values = unpermuteRopeRows(values, heads: heads, cols: 1)
            }
            tensors[name] = WeightTensor(shape: shape, values: values)
        }
        let weights = ModelWeights(config: config, tokenizer: spec, tensors: tensors, source: path)
        try weights.validate()
        return weights
    }
}
