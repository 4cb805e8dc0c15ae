/// ModelWeights -> GGUF, the inverse of `GGUFFile.modelWeights()`: llama.cpp's metadata keys,
/// GGUF tensor names, and q/k rows permuted into GGUF's interleaved RoPE order as
/// convert_hf_to_gguf does for llama and mistral (qwen2 is stored as is).

extension ModelWeights {
    /// A writer holding this model: matrices encoded as `weightType`, vectors (norms, biases)
    /// kept F32 as llama.cpp's converter does. Matrix rows must be whole `weightType` blocks.
    public func ggufWriter(weightType: GGMLType = .f32, name: String = "model") throws -> GGUFWriter {
        try validate()
        var writer = GGUFWriter()
        for (key, value) in ggufMetadata(name: name) { writer.setMetadata(key, value) }
        let permuted = config.architecture != "qwen2"
        for (hfName, shape) in config.expectedShapes {
            guard let ggufName = GGUFFile.ggufName(hfName) else {
                throw CheckpointError.invalid(source, detail: "tensor '\(hfName)' has no GGUF name")
            }
            var values = self[hfName].values
            if permuted, let heads = ropeHeads(hfName) {
                values = permuteRopeRows(values, heads: heads, cols: shape.count == 2 ? shape[1] : 1)
            }
            try writer.addTensor(ggufName, shape: shape, type: shape.count == 2 ? weightType : .f32, values: values)
        }
        return writer
    }

    /// Writes this model as a GGUF v3 file (atomically, see `GGUFWriter.write(to:)`).
    public func writeGGUF(to path: String, weightType: GGMLType = .f32, name: String = "model") throws {
        try ggufWriter(weightType: weightType, name: name).write(to: path)
    }

    /// Heads of a q/k projection weight or bias (whose rows RoPE rotates), nil for other tensors.
    private func ropeHeads(_ hfName: String) -> Int? {
        if hfName.hasSuffix("q_proj.weight") || hfName.hasSuffix("q_proj.bias") { return config.numHeads }
        if hfName.hasSuffix("k_proj.weight") || hfName.hasSuffix("k_proj.bias") { return config.numKVHeads }
        return nil
    }

    /// The keys `llamaConfig()` and `tokenizerSpec()` read, under llama.cpp's names and types.
    func ggufMetadata(name: String) -> [(String, GGUFValue)] {
        let c = config, a = config.architecture
        var m: [(String, GGUFValue)] = [
            ("general.architecture", .string(a)),
            ("general.name", .string(name)),
            ("\(a).vocab_size", .uint32(UInt32(c.vocabSize))),
            ("\(a).context_length", .uint32(UInt32(c.contextLength))),
            ("\(a).embedding_length", .uint32(UInt32(c.hiddenSize))),
            ("\(a).block_count", .uint32(UInt32(c.numLayers))),
            ("\(a).feed_forward_length", .uint32(UInt32(c.intermediateSize))),
            ("\(a).attention.head_count", .uint32(UInt32(c.numHeads))),
            ("\(a).attention.head_count_kv", .uint32(UInt32(c.numKVHeads))),
            ("\(a).rope.dimension_count", .uint32(UInt32(c.headDim))),
            ("\(a).rope.freq_base", .float32(c.ropeTheta)),
            ("\(a).attention.layer_norm_rms_epsilon", .float32(c.rmsNormEps)),
        ]
        if c.headDim * c.numHeads != c.hiddenSize {
            m.append(("\(a).attention.key_length", .uint32(UInt32(c.headDim))))
            m.append(("\(a).attention.value_length", .uint32(UInt32(c.headDim))))
        }
        let t = tokenizer
        m.append(("tokenizer.ggml.model", .string("gpt2")))
        m.append(("tokenizer.ggml.pre", .string(t.preTokenizer)))
        m.append(("tokenizer.ggml.tokens", .array(t.tokens.map { .string($0) })))
        m.append(("tokenizer.ggml.token_type", .array(t.tokenTypes.map { .int32(Int32($0)) })))
        m.append(("tokenizer.ggml.merges", .array(t.merges.map { .string($0) })))
        if let bos = t.bosId { m.append(("tokenizer.ggml.bos_token_id", .uint32(UInt32(bos)))) }
        if let eos = t.eosId { m.append(("tokenizer.ggml.eos_token_id", .uint32(UInt32(eos)))) }
        m.append(("tokenizer.ggml.add_bos_token", .bool(t.addBOS)))
        if let template = t.chatTemplate { m.append(("tokenizer.chat_template", .string(template))) }
        return m
    }
}
