import Checkpoint
import Kernels

/// The seven linear layers of a Llama block, in forward order.
public enum LlamaLinear: String, Sendable, CaseIterable {
    case q = "self_attn.q_proj", k = "self_attn.k_proj", v = "self_attn.v_proj", o = "self_attn.o_proj"
    case gate = "mlp.gate_proj", up = "mlp.up_proj", down = "mlp.down_proj"

    /// The activation this linear reads (q/k/v share one input, gate/up share one).
    public var input: LinearInputSite {
        switch self {
        case .q, .k, .v: return .attention
        case .o: return .attentionOutput
        case .gate, .up: return .mlp
        case .down: return .mlpHidden
        }
    }

    /// The Hugging Face weight name in block `layer`.
    public func weightName(layer: Int) -> String { "model.layers.\(layer).\(rawValue).weight" }
}

/// The weights of one decoder block. Every linear is a `LinearOperator`, so dense Float32
/// layers and packed AQLM layers are interchangeable (`block[.q] = packedLayer`).
public struct LlamaBlock: Sendable {
    /// RMSNorm gains before attention and before the MLP, [hidden] each.
    public var inputNorm: [Float]
    public var postAttentionNorm: [Float]
    public var q: any LinearOperator
    public var k: any LinearOperator
    public var v: any LinearOperator
    public var o: any LinearOperator
    public var gate: any LinearOperator
    public var up: any LinearOperator
    public var down: any LinearOperator
    /// q/k/v biases (qwen2 only), [numHeads·headDim] and [numKVHeads·headDim].
    public var qBias: [Float]?
    public var kBias: [Float]?
    public var vBias: [Float]?

    public init(inputNorm: [Float], postAttentionNorm: [Float],
                q: any LinearOperator, k: any LinearOperator, v: any LinearOperator, o: any LinearOperator,
                gate: any LinearOperator, up: any LinearOperator, down: any LinearOperator,
                qBias: [Float]? = nil, kBias: [Float]? = nil, vBias: [Float]? = nil) {
        self.inputNorm = inputNorm
        self.postAttentionNorm = postAttentionNorm
        self.q = q
        self.k = k
        self.v = v
        self.o = o
        self.gate = gate
        self.up = up
        self.down = down
        self.qBias = qBias
        self.kBias = kBias
        self.vBias = vBias
    }

    public subscript(_ linear: LlamaLinear) -> any LinearOperator {
        get {
            switch linear {
            case .q: return q
            case .k: return k
            case .v: return v
            case .o: return o
            case .gate: return gate
            case .up: return up
            case .down: return down
            }
        }
        set {
            switch linear {
            case .q: q = newValue
            case .k: k = newValue
            case .v: v = newValue
            case .o: o = newValue
            case .gate: gate = newValue
            case .up: up = newValue
            case .down: down = newValue
            }
        }
    }
}

extension LlamaBlock {
    /// Block `layer` of a checkpoint with its linears as dense Float32 layers, converted now
    /// from the stored type (the map's pages of each tensor released once converted), or, with
    /// a `scratch`, left in the stored type as `StreamedLinear`s converted into it on use.
    public init(weights: ModelWeights, layer l: Int, streamingInto scratch: ConversionScratch? = nil) {
        let c = weights.config
        let p = "model.layers.\(l)."
        func values(_ name: String) -> [Float] {
            let t = weights[name]
            defer { t.releasePages() }
            return t.values
        }
        func dense(_ linear: LlamaLinear) -> any LinearOperator {
            let name = linear.weightName(layer: l)
            if let scratch { return StreamedLinear(weight: weights[name], scratch: scratch) }
            let shape = weights[name].shape
            return DenseLinear(weights: values(name), outputSize: shape[0], inputSize: shape[1])
        }
        self.init(
            inputNorm: values(p + "input_layernorm.weight"), postAttentionNorm: values(p + "post_attention_layernorm.weight"),
            q: dense(.q), k: dense(.k), v: dense(.v), o: dense(.o), gate: dense(.gate), up: dense(.up), down: dense(.down),
            qBias: c.attentionBias ? values(p + "self_attn.q_proj.bias") : nil,
            kBias: c.attentionBias ? values(p + "self_attn.k_proj.bias") : nil,
            vBias: c.attentionBias ? values(p + "self_attn.v_proj.bias") : nil)
    }
}

extension EmbeddingTable {
    /// A [rows × width] checkpoint tensor as a table in its stored type, never widened to
    /// Float32 as a whole: GGUF Q8_0 blocks as Q8_0, F16 as F16, BF16 as F16 (bf16 values of a
    /// weight's scale are exact in fp16), Float32 and other block types as Float32 (exact).
    public init(storedTensor t: WeightTensor, name: String) throws {
        precondition(t.shape.count == 2, "\(name) is not a matrix")
        defer { t.releasePages() }
        let (rows, width) = (t.shape[0], t.shape[1])
        if t.storedType == .q8_0, let bytes = t.storedBytes {
            try self.init(q8Blocks: bytes, rows: rows, width: width, name: name, consumed: releaseMappedPages)
            return
        }
        let precision: EmbeddingPrecision = t.storedType == .f16 || t.storedType == .bf16 ? .f16 : .f32
        if precision == .f32 {
            self.init(float32: t.values, rows: rows, width: width)
            return
        }
        // The stored rows' pages are given back as they are converted (the table's peak is then
        // the table plus one run of rows, not plus the whole mapped tensor).
        let bytes = t.storedBytes, rowBytes = (bytes?.count ?? 0) / rows
        try self.init(rows: rows, width: width, precision: precision, name: name,
                      rowsDone: bytes.map { b in { releaseMappedPages(UnsafeRawBufferPointer(rebasing: b[($0.lowerBound * rowBytes)..<($0.upperBound * rowBytes)])) } }) { r, out in
            t.readRows(r..<(r + 1), into: out)
        }
    }
}

/// A Llama-family decoder (llama, mistral, qwen2) in Float32: token embedding, `numLayers`
/// pre-norm blocks (RMSNorm → GQA attention with RoPE → residual, RMSNorm → SwiGLU MLP →
/// residual), a final RMSNorm and the output head. The forward pass is in LlamaForward.swift.
public struct LlamaModel: Sendable {
    public let config: LlamaConfig
    /// [vocabSize × hiddenSize], row t is token t's vector, in Float32, F16 or Q8_0 (a packed
    /// model never holds the Float32 table).
    public var embeddingTable: EmbeddingTable
    public var finalNorm: [Float]
    public var layers: [LlamaBlock]
    /// hidden -> vocabulary logits; when the model ties them, the embedding table's own storage
    /// (`EmbeddingTable.headLinear`: a `DenseLinear` over a Float32 table, the table otherwise).
    public var head: any LinearOperator
    /// How the states this model makes (`makeState`) store their key/value cache.
    public var kvCache: KVCachePrecision = .f32

    public init(config: LlamaConfig, embeddingTable: EmbeddingTable, finalNorm: [Float], layers: [LlamaBlock],
                head: any LinearOperator) {
        precondition(embeddingTable.rows == config.vocabSize && embeddingTable.width == config.hiddenSize,
                     "embedding is not [vocab × hidden]")
        precondition(finalNorm.count == config.hiddenSize, "final norm is not [hidden]")
        precondition(layers.count == config.numLayers, "expected \(config.numLayers) blocks, got \(layers.count)")
        precondition(head.inputSize == config.hiddenSize && head.outputSize == config.vocabSize, "head is not hidden -> vocab")
        let qDim = config.numHeads * config.headDim, kvDim = config.numKVHeads * config.headDim
        for (l, b) in layers.enumerated() {
            let shapes: [(LlamaLinear, Int, Int)] = [
                (.q, config.hiddenSize, qDim), (.k, config.hiddenSize, kvDim), (.v, config.hiddenSize, kvDim),
                (.o, qDim, config.hiddenSize), (.gate, config.hiddenSize, config.intermediateSize),
                (.up, config.hiddenSize, config.intermediateSize), (.down, config.intermediateSize, config.hiddenSize),
            ]
            for (linear, inSize, outSize) in shapes {
                precondition(b[linear].inputSize == inSize && b[linear].outputSize == outSize,
                             "layer \(l) \(linear.rawValue) is not \(inSize) -> \(outSize)")
            }
        }
        self.config = config
        self.embeddingTable = embeddingTable
        self.finalNorm = finalNorm
        self.layers = layers
        self.head = head
    }

    /// A model over a Float32 embedding [vocabSize × hiddenSize] (the array is shared).
    public init(config: LlamaConfig, embedding: [Float], finalNorm: [Float], layers: [LlamaBlock], head: any LinearOperator) {
        precondition(embedding.count == config.vocabSize * config.hiddenSize, "embedding is not [vocab × hidden]")
        self.init(config: config, embeddingTable: EmbeddingTable(float32: embedding, rows: config.vocabSize, width: config.hiddenSize),
                  finalNorm: finalNorm, layers: layers, head: head)
    }

    /// The model over a checkpoint's tensors: norms and biases converted to Float32, block
    /// linears too (`.float32`: one tensor at a time, the map's pages released after each) or
    /// left in the stored type and converted on use into one scratch of the largest linear
    /// (`.streamed`), the embedding table and an untied head in their stored type
    /// (`EmbeddingTable(storedTensor:)`). A tied head is the embedding table itself.
    public init(weights: ModelWeights, denseLinears: DenseLinearStorage = .float32) throws {
        try weights.validate()
        let c = weights.config
        let scratch = denseLinears == .streamed ? ConversionScratch(capacity: Self.largestBlockLinearElements(c)) : nil
        let layers = (0..<c.numLayers).map { LlamaBlock(weights: weights, layer: $0, streamingInto: scratch) }
        let table = try EmbeddingTable(storedTensor: weights["model.embed_tokens.weight"], name: "model.embed_tokens.weight")
        let head: any LinearOperator
        if let untied = weights.tensors["lm_head.weight"] {
            head = try EmbeddingTable(storedTensor: untied, name: "lm_head.weight").headLinear
        } else {
            head = table.headLinear
        }
        self.init(config: c, embeddingTable: table, finalNorm: weights["model.norm.weight"].values, layers: layers, head: head)
    }

    /// The model over a checkpoint's tensors with its block linears as Float32 when their
    /// Float32 bytes fit `denseMemoryBudget`, streamed otherwise (`DenseLinearStorage.choose`).
    public init(weights: ModelWeights, denseMemoryBudget: Int) throws {
        try self.init(weights: weights, denseLinears: .choose(for: weights.config, budgetBytes: denseMemoryBudget))
    }

    /// Weights in all block linears of a model of this shape.
    public static func blockLinearElements(_ c: LlamaConfig) -> Int {
        c.numLayers * LlamaLinear.allCases.reduce(0) { $0 + linearShape($1, c).rows * linearShape($1, c).columns }
    }

    /// Weights in the largest block linear (what one streamed conversion holds as Float32).
    public static func largestBlockLinearElements(_ c: LlamaConfig) -> Int {
        LlamaLinear.allCases.map { linearShape($0, c).rows * linearShape($0, c).columns }.max() ?? 0
    }

    /// [d_out, d_in] of a block linear.
    static func linearShape(_ linear: LlamaLinear, _ c: LlamaConfig) -> (rows: Int, columns: Int) {
        let qDim = c.numHeads * c.headDim, kvDim = c.numKVHeads * c.headDim
        switch linear {
        case .q: return (qDim, c.hiddenSize)
        case .k, .v: return (kvDim, c.hiddenSize)
        case .o: return (c.hiddenSize, qDim)
        case .gate, .up: return (c.intermediateSize, c.hiddenSize)
        case .down: return (c.hiddenSize, c.intermediateSize)
        }
    }

    /// How the block linears hold Float32: all of them (`DenseLinear`), one shared scratch
    /// (`StreamedLinear`), or none (packed layers run through their kernels).
    public var denseLinears: DenseLinearSummary {
        var float32Bytes = 0, scratches: [ObjectIdentifier: Int] = [:], anyDense = false
        for block in layers {
            for linear in LlamaLinear.allCases {
                if let dense = block[linear] as? DenseLinear {
                    float32Bytes += dense.weightBytes
                    anyDense = true
                } else if let streamed = block[linear] as? StreamedLinear {
                    scratches[ObjectIdentifier(streamed.scratch)] = streamed.scratch.bytes
                }
            }
        }
        if !scratches.isEmpty { return DenseLinearSummary(storage: .streamed, float32Bytes: float32Bytes + scratches.values.reduce(0, +)) }
        return DenseLinearSummary(storage: anyDense ? .float32 : nil, float32Bytes: float32Bytes)
    }

    /// A model of block `layer` of `weights` alone (`config.numLayers` 1, the block as layer 0),
    /// without the embedding and head: what runs one block over calibration activations while
    /// the rest of the model stays in the file. Its vocabulary is a one-token placeholder, so
    /// only `forwardBlock(layer: 0, ...)` is meaningful.
    public init(block: LlamaBlock, config: LlamaConfig) {
        var c = config
        c.numLayers = 1
        c.vocabSize = 1
        let placeholder = EmbeddingTable(float32: [Float](repeating: 0, count: c.hiddenSize), rows: 1, width: c.hiddenSize)
        self.init(config: c, embeddingTable: placeholder, finalNorm: [Float](repeating: 1, count: c.hiddenSize),
                  layers: [block], head: placeholder.headLinear)
    }

    /// The Float32 embedding values (a dequantized copy unless the table is Float32).
    @available(*, deprecated, message: "use embeddingTable: for F16/Q8_0 tables this makes a whole Float32 copy")
    public var embedding: [Float] { embeddingTable.dequantized() }

    /// Whether the head reads the embedding table's own storage (a tied model: one table in memory).
    public var headSharesEmbedding: Bool {
        if let table = head as? EmbeddingTable { return table.sharesStorage(with: embeddingTable) }
        if let dense = head as? DenseLinear, embeddingTable.precision == .f32 {
            return EmbeddingTable(float32: dense.weights, rows: dense.outputSize, width: dense.inputSize)
                .sharesStorage(with: embeddingTable)
        }
        return false
    }

    /// The same model with its embedding table, and the head when it is an embedding-shaped
    /// table (tied, or an untied dense `lm_head`), stored at `precision`. A tied head stays the
    /// embedding table itself. Float32 → Float32 shares the arrays.
    public func withEmbedding(_ precision: EmbeddingPrecision) throws -> LlamaModel {
        var model = self
        let shared = headSharesEmbedding
        model.embeddingTable = try embeddingTable.converted(to: precision, name: "model.embed_tokens.weight")
        if shared {
            model.head = model.embeddingTable.headLinear
        } else if let table = head as? EmbeddingTable {
            model.head = try table.converted(to: precision, name: "lm_head.weight").headLinear
        } else if let dense = head as? DenseLinear {
            model.head = try EmbeddingTable(values: dense.weights, rows: dense.outputSize, width: dense.inputSize,
                                            precision: precision, name: "lm_head.weight").headLinear
        }
        return model
    }

    /// Bytes of all weights as held in memory (the embedding counted once when the head shares it).
    public var weightBytes: Int {
        let blocks = layers.reduce(0) { sum, b in
            sum + LlamaLinear.allCases.reduce(0) { $0 + b[$1].weightBytes }
                + 4 * (b.inputNorm.count + b.postAttentionNorm.count
                       + (b.qBias?.count ?? 0) + (b.kBias?.count ?? 0) + (b.vBias?.count ?? 0))
        }
        let headBytes = headSharesEmbedding ? 0 : head.weightBytes
        return blocks + embeddingTable.weightBytes + 4 * finalNorm.count + headBytes
    }

    /// Multiply-adds per token in the linear layers of the blocks and in the head, ×2 = FLOPs
    /// (attention scores excluded: they depend on the position).
    public var linearFLOPsPerToken: Int {
        let blocks = layers.reduce(0) { sum, b in
            sum + LlamaLinear.allCases.reduce(0) { $0 + b[$1].inputSize * b[$1].outputSize }
        }
        return 2 * (blocks + head.inputSize * head.outputSize)
    }
}
