/// config.json of a Hugging Face causal LM <-> `LlamaConfig`. Llama, Mistral and Qwen2 share the
/// block math; Qwen2 always has q/k/v biases, Llama has them when `attention_bias` is true.

public struct HuggingFaceConfig {
    public static let fileName = "config.json"

    /// Hugging Face class name -> our architecture name.
    public static let architectureClasses: [String: String] = [
        "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
    ]

    /// More layers than any real model has (a few hundred at most); each one names nine tensors
    /// or more, so a corrupt count would have readers list millions of names.
    static let maxLayers = 1 << 12

    public var llama: LlamaConfig
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    /// The whole document, for keys `LlamaConfig` does not model (e.g. "quantization_config").
    public var json: JSONValue

    /// `quantization_config.quant_method` ("aqlm", "gptq", ...), if the checkpoint is quantized.
    public var quantizationMethod: String? { json["quantization_config"]?["quant_method"]?.string }

    public init(path: String) throws {
        try self.init(json: try readJSONFile(path), path: path)
    }

    /// Interprets a parsed config.json; `path` only names the file in errors.
    public init(json: JSONValue, path: String) throws {
        guard json.members != nil else { throw CheckpointError.invalid(path, detail: "config is not a JSON object") }
        self.json = json
        let arch = try Self.architecture(json, path: path)
        let reader = ConfigReader(json: json, path: path)

        let hidden = try reader.positive("hidden_size")
        let heads = try reader.positive("num_attention_heads")
        let kvHeads = try reader.positive("num_key_value_heads", default: heads)
        guard heads % kvHeads == 0 else {
            throw CheckpointError.invalid(path, detail: "num_attention_heads \(heads) is not a multiple of num_key_value_heads \(kvHeads)")
        }
        let headDim = try reader.positive("head_dim", default: hidden / heads)
        if let act = json["hidden_act"]?.string, act != "silu" {
            throw CheckpointError.invalid(path, detail: "hidden_act '\(act)' is not supported (only silu)")
        }
        if let scaling = json["rope_scaling"], !scaling.isNull {
            throw CheckpointError.invalid(path, detail: "rope_scaling \(scaling.serialized(indent: nil)) is not supported")
        }
        // transformers 5 writes RoPE as rope_parameters {rope_theta, rope_type} instead of a
        // top-level rope_theta; a wrong theta runs silently with garbage positions.
        var ropeTheta = try reader.float("rope_theta", default: 10000)
        if let rope = json["rope_parameters"], !rope.isNull {
            if let type = rope["rope_type"]?.string, type != "default" {
                throw CheckpointError.invalid(path, detail: "rope_parameters.rope_type '\(type)' is not supported (only default)")
            }
            if json["rope_theta"] == nil || json["rope_theta"]!.isNull {
                ropeTheta = try ConfigReader(json: rope, path: path + " rope_parameters").float("rope_theta", default: 10000)
            }
        }
        let attentionBias = try arch == "qwen2" || (arch == "llama" && reader.bool("attention_bias", default: false))
        llama = LlamaConfig(
            architecture: arch,
            vocabSize: try reader.positive("vocab_size"),
            hiddenSize: hidden,
            intermediateSize: try reader.positive("intermediate_size"),
            numLayers: try reader.positive("num_hidden_layers", limit: HuggingFaceConfig.maxLayers),
            numHeads: heads,
            numKVHeads: kvHeads,
            headDim: headDim,
            contextLength: try Self.contextLength(json, reader: reader, arch: arch),
            ropeTheta: ropeTheta,
            rmsNormEps: try reader.float("rms_norm_eps", default: 1e-6),
            tiedEmbeddings: try reader.bool("tie_word_embeddings", default: false),
            attentionBias: attentionBias)
        bosTokenId = json["bos_token_id"]?.int
        // Some configs list several end-of-sequence ids; the first is the canonical one.
        eosTokenId = json["eos_token_id"]?.int ?? json["eos_token_id"]?.array?.first?.int
    }

    /// `architectures[0]` when present (a head other than the causal LM is unsupported), else `model_type`.
    static func architecture(_ json: JSONValue, path: String) throws -> String {
        if let classes = json["architectures"]?.array {
            guard let name = classes.first?.string else {
                throw CheckpointError.invalid(path, detail: "architectures is empty")
            }
            guard let arch = architectureClasses[name] else { throw CheckpointError.unsupportedArchitecture(path, name) }
            return arch
        }
        guard let type = json["model_type"]?.string else { throw CheckpointError.missingKey(path, key: "architectures") }
        guard LlamaConfig.supportedArchitectures.contains(type) else { throw CheckpointError.unsupportedArchitecture(path, type) }
        return type
    }

    /// max_position_embeddings, capped by an active sliding window: within the window, sliding
    /// and full attention are the same computation, so the cap keeps the model exact.
    static func contextLength(_ json: JSONValue, reader: ConfigReader, arch: String) throws -> Int {
        let maxPositions = try reader.positive("max_position_embeddings", default: 2048)
        let windowActive = try arch == "mistral" || (arch == "qwen2" && reader.bool("use_sliding_window", default: false))
        guard windowActive, let window = json["sliding_window"]?.int, window > 0 else { return maxPositions }
        return min(maxPositions, window)
    }

    // MARK: writing

    /// config.json's `transformers_version`: the newest transformers our files are cross-checked
    /// against (tools/hf_crosscheck.py). Without it, transformers 4.57.3-4.x takes any local
    /// tokenizer with over 100,000 tokens (Qwen2.5's) for a possibly broken Mistral one and tells
    /// the user to load it with `fix_mistral_regex=True`, which changes its tokenization; 5.x and
    /// 4.57.x both skip that check for a version >= 5.0.0, and use the field for nothing else.
    public static let transformersVersion = "5.25.0"

    /// config.json for `config`, with `extra` members added last (replacing same-named ones),
    /// e.g. ("quantization_config", {...}) for a packed checkpoint.
    public static func json(for config: LlamaConfig, bosTokenId: Int? = nil, eosTokenId: Int? = nil,
                            extra: [(String, JSONValue)] = []) throws -> JSONValue {
        guard let className = architectureClasses.first(where: { $0.value == config.architecture })?.key else {
            throw CheckpointError.unsupportedArchitecture("config.json", config.architecture)
        }
        if config.architecture == "qwen2" && !config.attentionBias || config.architecture == "mistral" && config.attentionBias {
            throw CheckpointError.invalid("config.json", detail: "\(config.architecture) cannot be written with attention_bias \(config.attentionBias)")
        }
        var members: [(String, JSONValue)] = [("architectures", .array([.string(className)]))]
        if config.architecture == "llama" { members.append(("attention_bias", .bool(config.attentionBias))) }
        members += [
            ("bos_token_id", bosTokenId.map(JSONValue.int) ?? .null),
            ("eos_token_id", eosTokenId.map(JSONValue.int) ?? .null),
            ("head_dim", .int(config.headDim)),
            ("hidden_act", .string("silu")),
            ("hidden_size", .int(config.hiddenSize)),
            ("intermediate_size", .int(config.intermediateSize)),
            ("max_position_embeddings", .int(config.contextLength)),
            ("model_type", .string(config.architecture)),
            ("num_attention_heads", .int(config.numHeads)),
            ("num_hidden_layers", .int(config.numLayers)),
            ("num_key_value_heads", .int(config.numKVHeads)),
            ("rms_norm_eps", .float(config.rmsNormEps)),
            ("rope_scaling", .null),
            ("rope_theta", .float(config.ropeTheta)),
            ("tie_word_embeddings", .bool(config.tiedEmbeddings)),
            ("torch_dtype", .string("float32")),
            ("transformers_version", .string(transformersVersion)),
            ("vocab_size", .int(config.vocabSize)),
        ]
        if config.architecture == "mistral" { members.append(("sliding_window", .null)) }
        var json = JSONValue.object(members)
        for (k, v) in extra { json = json.setting(k, v) }
        return json
    }

    public static func write(_ config: LlamaConfig, bosTokenId: Int? = nil, eosTokenId: Int? = nil,
                             extra: [(String, JSONValue)] = [], to path: String) throws {
        try writeJSONFile(try json(for: config, bosTokenId: bosTokenId, eosTokenId: eosTokenId, extra: extra), to: path)
    }
}

/// Typed access to config.json keys, each failure naming the file and key.
struct ConfigReader {
    let json: JSONValue
    let path: String

    /// A positive integer up to `limit`; a missing key takes `fallback` (derived from other keys),
    /// which must be in the same range. Sizes are bounded like GGUF's (2^24) so that no shape
    /// product can overflow; a larger value is corruption, not a model to enumerate.
    func positive(_ key: String, default fallback: Int? = nil, limit: Int = GGUFFile.maxHyperParameter) throws -> Int {
        let v: Int
        if let value = json[key], !value.isNull {
            guard let i = value.int, i > 0, i <= limit else {
                throw CheckpointError.invalid(path, detail: "\(key) is \(value.serialized(indent: nil).prefix(40)), expected a positive integer up to \(limit)")
            }
            v = i
        } else {
            guard let fallback else { throw CheckpointError.missingKey(path, key: key) }
            guard fallback > 0, fallback <= limit else {
                throw CheckpointError.invalid(path, detail: "\(key) is missing and its default \(fallback) is not a positive integer up to \(limit)")
            }
            v = fallback
        }
        return v
    }

    func float(_ key: String, default fallback: Float) throws -> Float {
        guard let value = json[key], !value.isNull else { return fallback }
        guard let v = value.float, v.isFinite, v > 0 else {
            throw CheckpointError.invalid(path, detail: "\(key) is \(value.serialized(indent: nil)), expected a positive number")
        }
        return v
    }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard let value = json[key], !value.isNull else { return fallback }
        guard let v = value.bool else {
            throw CheckpointError.invalid(path, detail: "\(key) is \(value.serialized(indent: nil)), expected true or false")
        }
        return v
    }
}
