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

    /// Dense Float32 model over a checkpoint's tensors (the arrays are shared, not copied). A
    /// tied head is a `DenseLinear` over the embedding's own array.
    public init(weights: ModelWeights) throws {
        try weights.validate()
        let c = weights.config
        func dense(_ name: String) -> DenseLinear {
            let t = weights[name]
            return DenseLinear(weights: t.values, outputSize: t.shape[0], inputSize: t.shape[1])
        }
        let layers = (0..<c.numLayers).map { l -> LlamaBlock in
            let p = "model.layers.\(l)."
            return LlamaBlock(
                inputNorm: weights[p + "input_layernorm.weight"].values,
                postAttentionNorm: weights[p + "post_attention_layernorm.weight"].values,
                q: dense(LlamaLinear.q.weightName(layer: l)), k: dense(LlamaLinear.k.weightName(layer: l)),
                v: dense(LlamaLinear.v.weightName(layer: l)), o: dense(LlamaLinear.o.weightName(layer: l)),
                gate: dense(LlamaLinear.gate.weightName(layer: l)), up: dense(LlamaLinear.up.weightName(layer: l)),
                down: dense(LlamaLinear.down.weightName(layer: l)),
                qBias: c.attentionBias ? weights[p + "self_attn.q_proj.bias"].values : nil,
                kBias: c.attentionBias ? weights[p + "self_attn.k_proj.bias"].values : nil,
                vBias: c.attentionBias ? weights[p + "self_attn.v_proj.bias"].values : nil)
        }
        let table = EmbeddingTable(float32: weights["model.embed_tokens.weight"].values, rows: c.vocabSize, width: c.hiddenSize)
        let head: any LinearOperator
        if let untied = weights.tensors["lm_head.weight"] {
            head = DenseLinear(weights: untied.values, outputSize: untied.shape[0], inputSize: untied.shape[1])
        } else {
            head = table.headLinear
        }
        self.init(config: c, embeddingTable: table, finalNorm: weights["model.norm.weight"].values, layers: layers, head: head)
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
