/// The one in-memory description every checkpoint reader produces: hyper-parameters, the
/// tokenizer's vocabulary, and Float32 weights named in the Hugging Face scheme
/// (`model.layers.3.self_attn.q_proj.weight`, ...), with q/k rows in Hugging Face order
/// (rotate-half RoPE pairs), whatever order the file stored them in.

public struct LlamaConfig: Sendable, Equatable, Codable {
    /// "llama", "mistral" or "qwen2": the same block math; qwen2 adds q/k/v biases.
    public var architecture: String
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var contextLength: Int
    public var ropeTheta: Float
    public var rmsNormEps: Float
    public var tiedEmbeddings: Bool
    public var attentionBias: Bool

    public init(architecture: String, vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numLayers: Int,
                numHeads: Int, numKVHeads: Int, headDim: Int? = nil, contextLength: Int, ropeTheta: Float,
                rmsNormEps: Float, tiedEmbeddings: Bool, attentionBias: Bool = false) {
        self.architecture = architecture
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numLayers = numLayers
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim ?? hiddenSize / numHeads
        self.contextLength = contextLength
        self.ropeTheta = ropeTheta
        self.rmsNormEps = rmsNormEps
        self.tiedEmbeddings = tiedEmbeddings
        self.attentionBias = attentionBias
    }

    public static let supportedArchitectures: Set<String> = ["llama", "mistral", "qwen2"]

    /// Every tensor the model needs with its row-major shape.
    public var expectedShapes: [(String, [Int])] {
        var out: [(String, [Int])] = [("model.embed_tokens.weight", [vocabSize, hiddenSize]), ("model.norm.weight", [hiddenSize])]
        if !tiedEmbeddings { out.append(("lm_head.weight", [vocabSize, hiddenSize])) }
        let q = numHeads * headDim, kv = numKVHeads * headDim
        for l in 0..<numLayers {
            let p = "model.layers.\(l)."
            out.append((p + "input_layernorm.weight", [hiddenSize]))
            out.append((p + "post_attention_layernorm.weight", [hiddenSize]))
            out.append((p + "self_attn.q_proj.weight", [q, hiddenSize]))
            out.append((p + "self_attn.k_proj.weight", [kv, hiddenSize]))
            out.append((p + "self_attn.v_proj.weight", [kv, hiddenSize]))
            out.append((p + "self_attn.o_proj.weight", [hiddenSize, q]))
            out.append((p + "mlp.gate_proj.weight", [intermediateSize, hiddenSize]))
            out.append((p + "mlp.up_proj.weight", [intermediateSize, hiddenSize]))
            out.append((p + "mlp.down_proj.weight", [hiddenSize, intermediateSize]))
            if attentionBias {
                out.append((p + "self_attn.q_proj.bias", [q]))
                out.append((p + "self_attn.k_proj.bias", [kv]))
                out.append((p + "self_attn.v_proj.bias", [kv]))
            }
        }
        return out
    }

    /// The seven linear layers of block `l`, in forward order.
    public static func linearNames(layer l: Int) -> [String] {
        let p = "model.layers.\(l)."
        return ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"].map { p + $0 }
    }
}

/// A byte-level BPE vocabulary as stored in GGUF metadata or tokenizer.json.
public struct TokenizerSpec: Sendable, Equatable {
    /// Token strings in the GPT-2 byte-to-unicode alphabet, indexed by id.
    public var tokens: [String]
    /// "a b" merge rules, highest priority first.
    public var merges: [String]
    /// llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    public var tokenTypes: [Int]
    /// Pre-tokenizer name as in GGUF's tokenizer.ggml.pre ("smollm", "gpt2", "llama-bpe", "qwen2", ...).
    public var preTokenizer: String
    public var bosId: Int?
    public var eosId: Int?
    public var addBOS: Bool
    /// The Jinja chat template (GGUF `tokenizer.chat_template`, tokenizer_config.json
    /// `chat_template`), carried through so written checkpoints keep it for chat clients.
    public var chatTemplate: String?

    public init(tokens: [String], merges: [String], tokenTypes: [Int], preTokenizer: String,
                bosId: Int?, eosId: Int?, addBOS: Bool, chatTemplate: String? = nil) {
        self.tokens = tokens
        self.merges = merges
        self.tokenTypes = tokenTypes
        self.preTokenizer = preTokenizer
        self.bosId = bosId
        self.eosId = eosId
        self.addBOS = addBOS
        self.chatTemplate = chatTemplate
    }
}

public struct WeightTensor: Sendable {
    public var shape: [Int]
    public var values: [Float]
    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count)
        self.shape = shape
        self.values = values
    }
}

public struct ModelWeights: Sendable {
    public var config: LlamaConfig
    public var tokenizer: TokenizerSpec
    public var tensors: [String: WeightTensor]
    /// Where the weights came from (for messages).
    public var source: String

    public init(config: LlamaConfig, tokenizer: TokenizerSpec, tensors: [String: WeightTensor], source: String) {
        self.config = config
        self.tokenizer = tokenizer
        self.tensors = tensors
        self.source = source
    }

    /// Checks that every tensor the config implies is present with the implied shape.
    public func validate() throws {
        for (name, shape) in config.expectedShapes {
            guard let t = tensors[name] else { throw CheckpointError.missingTensor(source, tensor: name) }
            guard t.shape == shape else {
                throw CheckpointError.shapeMismatch(source, tensor: name, expected: shape, found: t.shape)
            }
        }
    }

    public subscript(_ name: String) -> WeightTensor {
        guard let t = tensors[name] else { preconditionFailure("validated model lacks \(name)") }
        return t
    }

    /// The output head: lm_head, or the embedding when tied.
    public var outputHead: WeightTensor { tensors["lm_head.weight"] ?? self["model.embed_tokens.weight"] }
}

/// Reorders q/k rows between GGUF's interleaved RoPE pairs (rows 2i, 2i+1 of a head rotate
/// together) and Hugging Face's rotate-half order (rows i, i + headDim/2). convert_hf_to_gguf
/// applies reshape(heads, 2, hd/2, cols).swapaxes(1, 2); this is its inverse.
public func unpermuteRopeRows(_ w: [Float], heads: Int, cols: Int) -> [Float] {
    reorderRopeRows(w, heads: heads, cols: cols, toGGUF: false)
}

/// The forward permutation (Hugging Face order -> GGUF order), used by writers and tests.
public func permuteRopeRows(_ w: [Float], heads: Int, cols: Int) -> [Float] {
    reorderRopeRows(w, heads: heads, cols: cols, toGGUF: true)
}

/// Row (h, i, half) sits at h·hd + 2i + half in GGUF order and at h·hd + half·hd/2 + i in
/// Hugging Face order; copy each row from one position to the other.
private func reorderRopeRows(_ w: [Float], heads: Int, cols: Int, toGGUF: Bool) -> [Float] {
    let rows = w.count / cols
    let hd = rows / heads
    var out = [Float](repeating: 0, count: w.count)
    for h in 0..<heads {
        for i in 0..<(hd / 2) {
            for half in 0..<2 {
                let gguf = (h * hd + 2 * i + half) * cols
                let hf = (h * hd + half * (hd / 2) + i) * cols
                let (src, dst) = toGGUF ? (hf, gguf) : (gguf, hf)
                for c in 0..<cols { out[dst + c] = w[src + c] }
            }
        }
    }
    return out
}
