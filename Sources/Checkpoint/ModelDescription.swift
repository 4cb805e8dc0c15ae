/// The one description every checkpoint reader produces: hyper-parameters, the tokenizer's
/// vocabulary, and weights (left in the file's memory map until used, see `WeightTensor`)
/// named in the Hugging Face scheme
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
    /// The model's Jinja chat template (GGUF `tokenizer.chat_template`, tokenizer_config.json's
    /// `chat_template`), kept as text: `generate --chat` recognises ChatML in it.
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

/// One named tensor: its row-major shape and its values, either held in memory as Float32 or
/// left in the checkpoint's memory map in the type the file stores (GGUF blocks, F16, BF16, F32)
/// and converted only when asked. Readers hand over mapped tensors, so opening a model reads
/// nothing; `values` converts the whole tensor, `readRows` a slice of it (an embedding row, a
/// chunk), and `releasePages` hands the map's pages back once a caller is done with them. The
/// Float32 form exists only while a caller holds it: memory follows what is being worked on,
/// not the model's size.
public struct WeightTensor: @unchecked Sendable {
    public let shape: [Int]
    private var storage: Storage

    private enum Storage {
        case values([Float])
        case mapped(MappedRows)
    }

    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count)
        self.shape = shape
        self.storage = .values(values)
    }

    /// A tensor left in a memory map: `rows` × `width` values of `type` in `bytes` (which
    /// `owner` keeps mapped), row r stored at row `rowOrder[r]` when given (a row permutation
    /// such as GGUF's RoPE order, undone on reading). `width` must be whole blocks of `type`.
    init(shape: [Int], mapped bytes: UnsafeRawBufferPointer, type: GGMLType, owner: AnyObject, rowOrder: [Int]? = nil) {
        let width = shape.count > 1 ? shape.dropFirst().reduce(1, *) : shape.reduce(1, *)
        precondition(type.canDequantize && width % type.blockSize == 0, "rows of \(type.name) are not whole blocks")
        self.shape = shape
        self.storage = .mapped(MappedRows(owner: owner, bytes: bytes, type: type, width: width, rowOrder: rowOrder))
    }

    /// Rows as the first dimension, the rest flattened into one row (a vector is one row).
    public var rowCount: Int { shape.count > 1 ? shape[0] : 1 }
    public var rowWidth: Int { shape.count > 1 ? shape.dropFirst().reduce(1, *) : shape.reduce(1, *) }
    public var elementCount: Int { shape.reduce(1, *) }

    /// The type the values are stored in (F32 once in memory).
    public var storedType: GGMLType {
        if case .mapped(let m) = storage { return m.type }
        return .f32
    }

    /// Whether the values are still in the map (converted on every access, never kept).
    public var isMapped: Bool {
        if case .mapped = storage { return true }
        return false
    }

    /// The Float32 values, converted from the stored type on each read of a mapped tensor;
    /// setting them keeps them in memory.
    public var values: [Float] {
        get {
            switch storage {
            case .values(let v): return v
            case .mapped(let m):
                return [Float](unsafeUninitializedCapacity: elementCount) { buffer, count in
                    m.read(0..<rowCount, into: buffer.baseAddress!)
                    count = elementCount
                }
            }
        }
        set {
            precondition(newValue.count == elementCount)
            storage = .values(newValue)
        }
    }

    /// Rows `range` as Float32 into `out[0 ..< range.count · rowWidth]`.
    public func readRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= rowCount, "rows \(range) outside 0..<\(rowCount)")
        switch storage {
        case .values(let v):
            v.withUnsafeBufferPointer { out.update(from: $0.baseAddress! + range.lowerBound * rowWidth, count: range.count * rowWidth) }
        case .mapped(let m): m.read(range, into: out)
        }
    }

    /// The stored bytes of a mapped tensor in file order (nil once in memory): for readers that
    /// keep a type as is, such as a Q8_0 head.
    public var storedBytes: UnsafeRawBufferPointer? {
        if case .mapped(let m) = storage, m.rowOrder == nil { return m.bytes }
        return nil
    }

    /// Drops the map's pages of this tensor from the process (they stay in the page cache): once
    /// a mapped tensor has been converted, its bytes need not stay resident.
    public func releasePages() {
        if case .mapped(let m) = storage { releaseMappedPages(m.bytes) }
    }

    /// Whether every value is finite, read in chunks of rows (no whole Float32 copy); the map's
    /// pages are released after.
    public func allValuesFinite() -> Bool {
        defer { releasePages() }
        let chunkRows = max(1, (1 << 16) / max(rowWidth, 1))
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: chunkRows * rowWidth)
        defer { buffer.deallocate() }
        for start in stride(from: 0, to: rowCount, by: chunkRows) {
            let range = start..<min(rowCount, start + chunkRows)
            readRows(range, into: buffer)
            for i in 0..<(range.count * rowWidth) where !buffer[i].isFinite { return false }
        }
        return true
    }
}

/// The mapped form of a `WeightTensor`: rows of whole `type` blocks, converted on demand.
private final class MappedRows: @unchecked Sendable {
    let owner: AnyObject
    let bytes: UnsafeRawBufferPointer
    let type: GGMLType
    let width: Int
    let rowBytes: Int
    let rowOrder: [Int]?

    init(owner: AnyObject, bytes: UnsafeRawBufferPointer, type: GGMLType, width: Int, rowOrder: [Int]?) {
        self.owner = owner
        self.bytes = bytes
        self.type = type
        self.width = width
        self.rowBytes = width / type.blockSize * type.typeSize
        self.rowOrder = rowOrder
    }

    func read(_ rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        if rowOrder == nil {
            // Consecutive stored rows: one call over the whole run.
            let raw = UnsafeRawBufferPointer(rebasing: bytes[(rows.lowerBound * rowBytes)..<(rows.upperBound * rowBytes)])
            dequantize(type, raw, into: UnsafeMutableBufferPointer(start: out, count: rows.count * width))
            return
        }
        for (i, r) in rows.enumerated() {
            let s = rowOrder![r]
            let raw = UnsafeRawBufferPointer(rebasing: bytes[(s * rowBytes)..<((s + 1) * rowBytes)])
            dequantize(type, raw, into: UnsafeMutableBufferPointer(start: out + i * width, count: width))
        }
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

/// For each row in Hugging Face order, the row of GGUF's interleaved order that holds it (the
/// inverse of `permuteRopeRows` as an index list, for reading rows straight from the file).
public func ropeRowOrderFromGGUF(heads: Int, rows: Int) -> [Int] {
    let hd = rows / heads
    var order = [Int](repeating: 0, count: rows)
    for h in 0..<heads {
        for i in 0..<(hd / 2) {
            for half in 0..<2 { order[h * hd + half * (hd / 2) + i] = h * hd + 2 * i + half }
        }
    }
    return order
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
