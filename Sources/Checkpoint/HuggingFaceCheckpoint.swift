import Foundation

/// A Hugging Face model directory: config.json, model.safetensors (or sharded with
/// model.safetensors.index.json), tokenizer.json and tokenizer_config.json. Tensor names are
/// already ours and q/k rows are already in rotate-half order, so weights load as stored.
public enum HuggingFaceCheckpoint {
    /// Whether `directory` holds a config.json (the file that makes it a model directory).
    public static func isCheckpoint(directory: String) -> Bool {
        fileExists(joinPath(directory, HuggingFaceConfig.fileName))
    }

    /// Every tensor the config implies, matrices left in the map as stored (F32, F16, BF16),
    /// plus the tokenizer.
    public static func modelWeights(directory: String) throws -> ModelWeights {
        let configPath = joinPath(directory, HuggingFaceConfig.fileName)
        let config = try HuggingFaceConfig(path: configPath)
        if let method = config.quantizationMethod {
            if method == "aqlm" {
                throw CheckpointError.invalid(directory, detail: "packed AQLM checkpoint: open it with PackedFormat")
            }
            throw CheckpointError.invalid(configPath, detail: "quantization_config quant_method '\(method)' is not supported")
        }
        let checkpoint = try SafeTensorsCheckpoint(directory: directory)
        let spec = try tokenizer(directory: directory, config: config.llama, checkpoint: checkpoint)
        var tensors: [String: WeightTensor] = [:]
        for (name, shape) in config.llama.expectedShapes {
            guard let info = checkpoint.info(name), let file = checkpoint.file(for: name) else {
                throw CheckpointError.missingTensor(checkpoint.path, tensor: name)
            }
            guard info.shape == shape else {
                throw CheckpointError.shapeMismatch(file.path, tensor: name, expected: shape, found: info.shape)
            }
            tensors[name] = try file.weightTensor(info)
        }
        let weights = ModelWeights(config: config.llama, tokenizer: spec, tensors: tensors, source: directory)
        try weights.validate()
        return weights
    }

    /// The tokenizer, padded with unused tokens to the embedding's rows as llama.cpp does. The
    /// embedding's shape is checked first: a corrupt vocab_size (up to 2^24) must be refused
    /// before millions of padding tokens are made for it.
    public static func tokenizer(directory: String, config: LlamaConfig, checkpoint: SafeTensorsCheckpoint) throws -> TokenizerSpec {
        let embedding = "model.embed_tokens.weight", shape = [config.vocabSize, config.hiddenSize]
        guard let info = checkpoint.info(embedding), let file = checkpoint.file(for: embedding) else {
            throw CheckpointError.missingTensor(checkpoint.path, tensor: embedding)
        }
        guard info.shape == shape else {
            throw CheckpointError.shapeMismatch(file.path, tensor: embedding, expected: shape, found: info.shape)
        }
        let vocabSize = config.vocabSize
        let spec = try HuggingFaceTokenizer.read(directory: directory)
        guard spec.tokens.count <= vocabSize else {
            throw CheckpointError.invalid(joinPath(directory, HuggingFaceTokenizer.fileName),
                                          detail: "\(spec.tokens.count) tokens, more than config.json's vocab_size \(vocabSize)")
        }
        return spec.padded(toVocabSize: vocabSize)
    }

    /// Writes `weights` as a model directory (created if needed) with tensors stored as `dtype`
    /// (F32, F16 or BF16); `extraConfig` members are added to config.json.
    public static func write(_ weights: ModelWeights, toDirectory directory: String, dtype: SafeTensorsDType = .f32,
                             extraConfig: [(String, JSONValue)] = []) throws {
        try weights.validate()
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError.unreadable(directory, reason: "cannot create directory: \(error.localizedDescription)")
        }
        var writer = SafeTensorsWriter(metadata: ["format": "pt"])
        for (name, shape) in weights.config.expectedShapes {
            try writer.add(name, tensor: weights[name], as: dtype)
        }
        try writer.write(to: joinPath(directory, SafeTensorsCheckpoint.singleFileName))
        try HuggingFaceTokenizer.write(weights.tokenizer, toDirectory: directory)
        try HuggingFaceConfig.write(weights.config, bosTokenId: weights.tokenizer.bosId, eosTokenId: weights.tokenizer.eosId,
                                    extra: extraConfig, to: joinPath(directory, HuggingFaceConfig.fileName))
    }
}
