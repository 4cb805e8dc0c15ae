import CBLAS
import Checkpoint
import Kernels
import Llama
import PackedFormat
import Quantizer

/// A packed AQLM model under end-to-end fine-tuning: every block's codebooks, scales and norm
/// gains, and the final norm's gain, are trainable; codes are frozen, and so are the embedding
/// table and head unless `trainsEmbeddings`.
public struct TrainableModel: Sendable {
    public let config: LlamaConfig
    public var blocks: [TrainableBlock]
    public var finalNorm: [Float]
    /// [vocab × hidden] embedding table: Float32 when trained, otherwise frozen in the
    /// checkpoint's fp16 (0.27 GB instead of 0.54 GB on Qwen2.5-Coder-0.5B, 1.05 GB instead of
    /// 2.1 GB at Llama-3-8B's shapes), never widened as a whole.
    public private(set) var embedding: EmbeddingTable
    /// hidden -> vocabulary, [vocab × hidden] as the embedding (the same table when tied).
    private(set) var head: EmbeddingTable
    /// Whether the embedding table and head are parameters (and in `parameters`).
    public let trainsEmbeddings: Bool
    /// Tokenizer, scheme and the dense tensors the output is written with.
    let packed: PackedModel

    static let embeddingName = "model.embed_tokens"
    static let headName = "lm_head"

    public init(packed: PackedModel, transform: CodebookTransform = .none, trainsEmbeddings: Bool = false) throws {
        let model = try packed.llamaModel(embedding: trainsEmbeddings ? .f32 : .f16)
        config = packed.config
        blocks = (0..<config.numLayers).map { l in
            var codes: [LlamaLinear: AdditiveCode] = [:]
            for linear in LlamaLinear.allCases { codes[linear] = packed.linears["model.layers.\(l).\(linear.rawValue)"] }
            return TrainableBlock(block: model.layers[l], codes: codes, transform: transform)
        }
        finalNorm = model.finalNorm
        embedding = model.embeddingTable
        switch model.head {
        case let table as EmbeddingTable: head = table
        case let dense as DenseLinear: head = EmbeddingTable(float32: dense.weights, rows: dense.outputSize, width: dense.inputSize)
        default: throw FinetuneError("the packed model's head is neither a table nor dense")
        }
        self.packed = packed
        self.trainsEmbeddings = trainsEmbeddings
    }

    /// The model as a packed checkpoint: codewords and scales rounded to fp16 (transforms
    /// folded in), norm gains replaced by the trained ones.
    public func packedModel() -> PackedModel {
        var out = packed
        for (l, block) in blocks.enumerated() {
            for (linear, layer) in block.roundedToFloat16().quantized {
                out.linears["model.layers.\(l).\(linear.rawValue)"] = layer.additiveCode
            }
            out.dense["model.layers.\(l).input_layernorm.weight"] = WeightTensor(shape: [config.hiddenSize], values: block.inputNorm)
            out.dense["model.layers.\(l).post_attention_layernorm.weight"] = WeightTensor(shape: [config.hiddenSize],
                                                                                          values: block.postAttentionNorm)
        }
        out.dense["model.norm.weight"] = WeightTensor(shape: [config.hiddenSize], values: finalNorm)
        if trainsEmbeddings {
            let shape = [config.vocabSize, config.hiddenSize]
            out.dense[Self.embeddingName + ".weight"] = WeightTensor(shape: shape, values: embedding.dequantized()).roundedForPacking()
            if !config.tiedEmbeddings {
                out.dense[Self.headName + ".weight"] = WeightTensor(shape: shape, values: head.dequantized()).roundedForPacking()
            }
        }
        return out
    }

    static func blockPrefix(_ l: Int) -> String { "model.layers.\(l)." }
    static let finalNormName = "model.norm"

    /// Every trainable tensor by name (see `TrainableBlock.parameters(prefix:)`).
    public var parameters: [String: [Float]] {
        var out = [Self.finalNormName: finalNorm]
        for (l, block) in blocks.enumerated() { out.merge(block.parameters(prefix: Self.blockPrefix(l))) { $1 } }
        if trainsEmbeddings {
            out[Self.embeddingName] = embedding.dequantized()
            if !config.tiedEmbeddings { out[Self.headName] = head.dequantized() }
        }
        return out
    }

    public mutating func setParameters(_ values: [String: [Float]]) throws {
        guard let norm = values[Self.finalNormName], norm.count == finalNorm.count else {
            throw FinetuneError("checkpoint lacks '\(Self.finalNormName)'")
        }
        finalNorm = norm
        for l in blocks.indices { try blocks[l].setParameters(values, prefix: Self.blockPrefix(l)) }
        if trainsEmbeddings {
            let (rows, width) = (config.vocabSize, config.hiddenSize)
            guard let table = values[Self.embeddingName], table.count == rows * width else {
                throw FinetuneError("checkpoint lacks '\(Self.embeddingName)'")
            }
            embedding = EmbeddingTable(float32: table, rows: rows, width: width)
            if config.tiedEmbeddings {
                head = embedding
            } else {
                guard let weights = values[Self.headName], weights.count == rows * width else {
                    throw FinetuneError("checkpoint lacks '\(Self.headName)'")
                }
                head = EmbeddingTable(float32: weights, rows: rows, width: width)
            }
        }
    }

    mutating func update(with gradients: ModelGradients, trained: TrainedParameters, optimizer: inout Adam) {
        if trained.contains(.norms) {
            optimizer.update(&finalNorm, gradient: gradients.finalNorm, name: Self.finalNormName)
        }
        for l in blocks.indices {
            blocks[l].update(with: gradients.blocks[l], trained: trained, prefix: Self.blockPrefix(l), optimizer: &optimizer)
        }
        if let tableGradient = gradients.embedding {
            let (rows, width) = (config.vocabSize, config.hiddenSize)
            // Take the arrays out of the tables first so they are updated in place, not copied.
            var table = embedding.dequantized(), weights = config.tiedEmbeddings ? [] : head.dequantized()
            let placeholder = EmbeddingTable(float32: [0], rows: 1, width: 1)
            (embedding, head) = (placeholder, placeholder)
            optimizer.update(&table, gradient: tableGradient, name: Self.embeddingName)
            if let headGradient = gradients.head { optimizer.update(&weights, gradient: headGradient, name: Self.headName) }
            embedding = EmbeddingTable(float32: table, rows: rows, width: width)
            head = config.tiedEmbeddings ? embedding : EmbeddingTable(float32: weights, rows: rows, width: width)
        }
    }
}

/// ∂L/∂(every trainable tensor) of a model.
public struct ModelGradients: Sendable {
    public var blocks: [BlockGradients]
    public var finalNorm: [Float]
    /// The embedding table's (with a tied head, the head's too), when it is trained.
    public var embedding: [Float]?
    /// An untied head's, when the embeddings are trained.
    public var head: [Float]?

    /// `weightSums`: the per-sequence sums of ∂L/∂Ŵ that V steps need (see `LinearGradient`).
    public init(_ model: TrainableModel, weightSums: WeightGradientSums = .none) {
        blocks = model.blocks.map { BlockGradients($0, weightSums: weightSums) }
        finalNorm = [Float](repeating: 0, count: model.finalNorm.count)
        if model.trainsEmbeddings {
            let count = model.config.vocabSize * model.config.hiddenSize
            embedding = [Float](repeating: 0, count: count)
            if !model.config.tiedEmbeddings { head = [Float](repeating: 0, count: count) }
        }
    }

    mutating func zero() {
        for l in blocks.indices { blocks[l].zero() }
        finalNorm.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        embedding?.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        head?.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }

    /// The largest |∂L/∂θ| over the norms, codewords and scales (∞ if any is not finite): a
    /// step above `skipGradientAbove` is skipped before it can freeze Adam's second moments (g²
    /// above Float32's range makes v = ∞, and every later step of that parameter ≈ 0).
    var largestMagnitude: Float {
        var largest: Float = 0
        func scan(_ v: [Float]) {
            for g in v {
                guard g.isFinite else { largest = .infinity; return }
                largest = max(largest, abs(g))
            }
        }
        scan(finalNorm)
        for block in blocks {
            scan(block.inputNorm)
            scan(block.postAttentionNorm)
            for gradient in block.linears.values {
                scan(gradient.codewords)
                scan(gradient.scales)
            }
        }
        return largest
    }

    /// Where the head's gradient accumulates (the embedding table's when tied; nil when the
    /// head is not trained).
    mutating func withHeadGradient<R>(_ body: (UnsafeMutablePointer<Float>?) -> R) -> R {
        if head != nil { return head!.withUnsafeMutableBufferPointer { body($0.baseAddress) } }
        if embedding != nil { return embedding!.withUnsafeMutableBufferPointer { body($0.baseAddress) } }
        return body(nil)
    }
}

/// Buffers for one sequence through the whole model: every block's activations (kept for the
/// backward pass instead of recomputing the forward), the residual stream, the final norm's
/// input and output, their gradients, and a chunk of logit rows.
final class ModelWorkspace {
    let config: LlamaConfig
    let tokens: Int
    let activations: [BlockActivations]
    let backward: BackwardWorkspace
    /// Logit rows computed at a time (bounds the [rows × vocab] buffer).
    let logitRows: Int
    /// [tokens × hidden] each, and [logitRows × vocab] logits.
    let hidden, normed, gradient, gradNormed, logits: UnsafeMutablePointer<Float>
    private let buffers: [UnsafeMutablePointer<Float>]

    init(config: LlamaConfig, tokens: Int, logitRows: Int = 128) {
        self.config = config
        self.tokens = tokens
        let rope = RotaryEmbedding(headDim: config.headDim, base: config.ropeTheta, maxPositions: tokens)
        activations = (0..<config.numLayers).map { _ in BlockActivations(config: config, capacity: tokens, rope: rope) }
        backward = BackwardWorkspace(config: config, capacity: tokens)
        self.logitRows = min(logitRows, tokens)
        let width = tokens * config.hiddenSize
        let buffers = [width, width, width, width, self.logitRows * config.vocabSize].map { n -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
            p.initialize(repeating: 0, count: n)
            return p
        }
        (hidden, normed, gradient, gradNormed, logits) = (buffers[0], buffers[1], buffers[2], buffers[3], buffers[4])
        self.buffers = buffers
    }

    deinit { for b in buffers { b.deallocate() } }
}

extension TrainableModel {
    /// The distillation loss of one sequence at positions 0..<tokens.count, summed over its
    /// positions, and its gradient with respect to every trainable tensor. `teacher` holds
    /// the targets of exactly these positions.
    public func distillationGradients(tokens: [Int], teacher: TeacherTargets) -> (loss: Double, gradients: ModelGradients) {
        let prepared = PreparedBlocks(blocks, config: config)
        let workspace = ModelWorkspace(config: config, tokens: tokens.count)
        var gradients = ModelGradients(self)
        let loss = gradients.withHeadGradient {
            sequenceLoss(tokens, teacher: teacher, prepared: prepared, workspace: workspace, gradientScale: 1, headGradient: $0)
        }
        backward(tokens, prepared: prepared, workspace: workspace, gradients: &gradients)
        return (loss, gradients)
    }

    /// Distillation loss of one sequence, summed over its positions (see `distillationStep`).
    /// With a `gradientScale`, leaves `gradientScale`·∂L/∂(final norm output) in
    /// `w.gradNormed` for `backward`, and adds `gradientScale`·∂L/∂W_head to `headGradient`
    /// when given ([vocab × hidden]). A `hardLabelWeight` α mixes in the cross-entropy of each
    /// position's own next token in `tokens` (all positions but the last; see `distillationStep`).
    func sequenceLoss(_ tokens: [Int], teacher: TeacherTargets, prepared: PreparedBlocks, workspace w: ModelWorkspace,
                      gradientScale: Float?, headGradient: UnsafeMutablePointer<Float>? = nil, hardLabelWeight: Float = 0) -> Double {
        let c = config, d = c.hiddenSize, v = c.vocabSize, t = tokens.count
        precondition(t == w.tokens && teacher.positions == t, "sequence, workspace and teacher rows disagree")
        for (row, token) in tokens.enumerated() { embedding.row(token, into: w.hidden + row * d) }
        for l in prepared.indices { prepared[l].forward(w.hidden, tokens: t, saving: w.activations[l]) }
        finalNorm.withUnsafeBufferPointer { weight in
            rmsNormRows(w.hidden, weight: weight.baseAddress!, into: w.normed, rows: t, count: d, epsilon: c.rmsNormEps)
        }
        var loss = 0.0
        var first = 0
        while first < t {
            let rows = min(w.logitRows, t - first)
            head.apply(w.normed + first * d, w.logits, tokens: rows)
            teacher.ids.withUnsafeBufferPointer { ids in
                teacher.logProbs.withUnsafeBufferPointer { lps in
                    for r in 0..<rows {
                        let p = first + r
                        loss += distillationStep(w.logits + r * v, count: v, ids: ids.baseAddress! + p * teacher.k,
                                                 logProbs: lps.baseAddress! + p * teacher.k, k: teacher.k,
                                                 tailLogMass: teacher.tailLogMass[p], gradientScale: gradientScale ?? 0,
                                                 nextToken: p + 1 < t ? tokens[p + 1] : nil, hardLabelWeight: hardLabelWeight)
                    }
                }
            }
            if gradientScale != nil {
                // ∂L/∂(normed rows) = ∂L/∂logits · W_head.
                head.applyTransposed(w.logits, w.gradNormed + first * d, tokens: rows)
                // ∂L/∂W_head += (∂L/∂logits)ᵀ · normed rows.
                if let headGradient {
                    sgemm(.trans, .noTrans, v, d, rows, 1, w.logits, v, w.normed + first * d, d, 1, headGradient, d)
                }
            }
            first += rows
        }
        return loss
    }

    /// Backward from `w.gradNormed` (left by `sequenceLoss` on `tokens`) through the final norm
    /// and every block, adding the parameter gradients to `gradients`.
    func backward(_ tokens: [Int], prepared: PreparedBlocks, workspace w: ModelWorkspace, gradients: inout ModelGradients) {
        let c = config, d = c.hiddenSize, t = w.tokens
        w.gradient.update(repeating: 0, count: t * d)
        finalNorm.withUnsafeBufferPointer { weight in
            gradients.finalNorm.withUnsafeMutableBufferPointer { dw in
                rmsNormBackwardRows(w.hidden, weight: weight.baseAddress!, gradOutput: w.gradNormed, gradInput: w.gradient,
                                    weightGrad: dw.baseAddress!, inverseRMS: w.backward.inverseRMS, rows: t, count: d,
                                    epsilon: c.rmsNormEps)
            }
        }
        for l in prepared.indices.reversed() {
            prepared[l].backward(w.gradient, activations: w.activations[l], gradients: &gradients.blocks[l], workspace: w.backward)
        }
        // The embedding lookup routes each position's input gradient to its token's row.
        gradients.embedding?.withUnsafeMutableBufferPointer { table in
            for (row, token) in tokens.enumerated() {
                add(w.gradient + row * d, into: table.baseAddress! + token * d, count: d)
            }
        }
    }
}
