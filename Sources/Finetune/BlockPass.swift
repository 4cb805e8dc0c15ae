import CBLAS
import Checkpoint
import Kernels
import Llama

/// One block's forward intermediates for one sequence (positions 0..<tokens): what its
/// backward pass reads. Allocated once for up to `capacity` tokens and reused.
public final class BlockActivations {
    public let config: LlamaConfig
    public let capacity: Int
    public internal(set) var tokens = 0
    let rope: RotaryEmbedding
    /// [tokens × width] each, named after what they hold.
    let input, normedInput, query, keys, values, attention, residual, normedResidual, gate, up, mlpHidden, projected:
        UnsafeMutablePointer<Float>
    /// Scratch of `causalAttentionGEMM`, [min(capacity, attentionRowBlock) × capacity].
    let scores: UnsafeMutablePointer<Float>
    private let buffers: [UnsafeMutablePointer<Float>]

    public init(config: LlamaConfig, capacity: Int, rope: RotaryEmbedding? = nil) {
        precondition(capacity > 0, "activations need room for at least one token")
        self.config = config
        self.capacity = capacity
        self.rope = rope ?? RotaryEmbedding(headDim: config.headDim, base: config.ropeTheta, maxPositions: capacity)
        precondition(self.rope.maxPositions >= capacity, "RoPE table shorter than the sequence")
        let d = config.hiddenSize, q = config.numHeads * config.headDim, kv = config.numKVHeads * config.headDim
        let m = config.intermediateSize
        let widths = [d, d, q, kv, kv, q, d, d, m, m, m, d, min(capacity, attentionRowBlock)]
        let buffers = widths.map { width -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: capacity * width)
            p.initialize(repeating: 0, count: capacity * width)
            return p
        }
        scores = buffers[12]
        (input, normedInput, query, keys, values, attention) = (buffers[0], buffers[1], buffers[2], buffers[3], buffers[4], buffers[5])
        (residual, normedResidual, gate, up, mlpHidden, projected) = (buffers[6], buffers[7], buffers[8], buffers[9], buffers[10], buffers[11])
        self.buffers = buffers
    }

    deinit { for b in buffers { b.deallocate() } }
}

/// Scratch of the backward pass, shared by every block of a model.
public final class BackwardWorkspace {
    public let capacity: Int
    let gradNormed, gradAttention, gradQuery, gradKeys, gradValues, gradHidden, gradGate, gradUp: UnsafeMutablePointer<Float>
    /// ∂L/∂Ŵ of the largest linear, then routed to its codebooks and scales.
    let weightGrad: UnsafeMutablePointer<Float>
    /// 2·tokens² for the attention probabilities and their gradients.
    let attentionScratch: UnsafeMutablePointer<Float>
    let inverseRMS: UnsafeMutablePointer<Float>
    private let buffers: [UnsafeMutablePointer<Float>]

    public init(config c: LlamaConfig, capacity: Int) {
        self.capacity = capacity
        let d = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim, m = c.intermediateSize
        let largestWeight = max(q * d, kv * d, d * m)
        let sizes = [capacity * d, capacity * q, capacity * q, capacity * kv, capacity * kv, capacity * m, capacity * m,
                     capacity * m, largestWeight, 2 * capacity * capacity, capacity]
        let buffers = sizes.map { n -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
            p.initialize(repeating: 0, count: n)
            return p
        }
        (gradNormed, gradAttention, gradQuery, gradKeys, gradValues) = (buffers[0], buffers[1], buffers[2], buffers[3], buffers[4])
        (gradHidden, gradGate, gradUp) = (buffers[5], buffers[6], buffers[7])
        (weightGrad, attentionScratch, inverseRMS) = (buffers[8], buffers[9], buffers[10])
        self.buffers = buffers
    }

    deinit { for b in buffers { b.deallocate() } }
}

/// A trainable block made ready for one optimizer step: quantized linears materialised as
/// dense Ŵ for the forward and for ∂L/∂X, and their effective codewords for routing ∂L/∂Ŵ.
public struct PreparedBlock {
    public let trainable: TrainableBlock
    public let dense: LlamaBlock
    let codewords: [LlamaLinear: [Float]]

    public init(_ trainable: TrainableBlock) {
        self.trainable = trainable
        dense = trainable.llamaBlock()
        codewords = trainable.quantized.mapValues(\.effectiveCodebooks)
    }
}

/// A model's blocks ready to run: all prepared at once (every block's dequantized Float32
/// linears resident) when they fit, else each prepared again whenever it is used, so memory holds
/// one block's Float32 linears (an 8B model's ~30 GB does not fit) at the cost of one more
/// conversion per block per forward and per backward. Same results either way.
public struct PreparedBlocks {
    let blocks: [TrainableBlock]
    let all: [PreparedBlock]?

    /// - Parameter budgetBytes: how much the Float32 linears of all blocks may take to be kept.
    public init(_ blocks: [TrainableBlock], config: LlamaConfig, budgetBytes: Int = .max) {
        self.blocks = blocks
        all = DenseLinearStorage.choose(for: config, budgetBytes: budgetBytes) == .float32 ? blocks.map(PreparedBlock.init) : nil
    }

    public var storage: DenseLinearStorage { all == nil ? .streamed : .float32 }
    public var indices: Range<Int> { blocks.indices }
    public subscript(_ l: Int) -> PreparedBlock { all?[l] ?? PreparedBlock(blocks[l]) }
}

extension PreparedBlock {
    /// From this many rows on, `LlamaModel.runBlock` computes attention with sgemm
    /// (`causalAttentionGEMM`); mirrored here so both passes give identical outputs (tested on
    /// both sides of it).
    static let gemmAttentionRows = 16

    /// The block on one sequence, in place on `hidden` [tokens × hiddenSize] at positions
    /// 0..<tokens, keeping the intermediates in `a`. The same kernels in the same order as
    /// `LlamaModel.forwardBlock`, so the output is identical to it.
    public func forward(_ hidden: UnsafeMutablePointer<Float>, tokens t: Int, saving a: BlockActivations) {
        precondition(t > 0 && t <= a.capacity, "\(t) tokens exceed the activations' \(a.capacity)")
        let block = dense, c = a.config
        let d = c.hiddenSize, qDim = c.numHeads * c.headDim, kvDim = c.numKVHeads * c.headDim, m = c.intermediateSize
        a.tokens = t
        a.input.update(from: hidden, count: t * d)

        block.inputNorm.withUnsafeBufferPointer {
            rmsNormRows(hidden, weight: $0.baseAddress!, into: a.normedInput, rows: t, count: d, epsilon: c.rmsNormEps)
        }
        block.q.apply(a.normedInput, a.query, tokens: t)
        block.k.apply(a.normedInput, a.keys, tokens: t)
        block.v.apply(a.normedInput, a.values, tokens: t)
        addBias(block.qBias, to: a.query, tokens: t)
        addBias(block.kBias, to: a.keys, tokens: t)
        addBias(block.vBias, to: a.values, tokens: t)
        a.rope.apply(a.query, rowStride: qDim, heads: c.numHeads, tokens: t, startPosition: 0)
        a.rope.apply(a.keys, rowStride: kvDim, heads: c.numKVHeads, tokens: t, startPosition: 0)
        if t >= Self.gemmAttentionRows {
            causalAttentionGEMM(queries: a.query, keys: a.keys, values: a.values, into: a.attention, tokens: t, startPosition: 0,
                                heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim, scores: a.scores)
        } else {
            causalAttention(queries: a.query, keys: a.keys, values: a.values, into: a.attention, tokens: t, startPosition: 0,
                            heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim)
        }
        block.o.apply(a.attention, a.projected, tokens: t)
        addResidual(a.projected, into: hidden, count: t * d)
        a.residual.update(from: hidden, count: t * d)

        block.postAttentionNorm.withUnsafeBufferPointer {
            rmsNormRows(hidden, weight: $0.baseAddress!, into: a.normedResidual, rows: t, count: d, epsilon: c.rmsNormEps)
        }
        block.gate.apply(a.normedResidual, a.gate, tokens: t)
        block.up.apply(a.normedResidual, a.up, tokens: t)
        parallelChunks(t * m, minChunk: 16_384) { lo, hi in
            swiGLU(gate: a.gate + lo, up: a.up + lo, into: a.mlpHidden + lo, count: hi - lo)
        }
        block.down.apply(a.mlpHidden, a.projected, tokens: t)
        addResidual(a.projected, into: hidden, count: t * d)
    }

    /// Backward of `forward` for the sequence held in `a`: on entry `gradient` [tokens ×
    /// hiddenSize] is ∂L/∂(block output), on exit ∂L/∂(block input). Parameter gradients are
    /// added to `gradients` (norm gains, and the codewords and scales of the quantized linears).
    public func backward(_ gradient: UnsafeMutablePointer<Float>, activations a: BlockActivations,
                         gradients: inout BlockGradients, workspace w: BackwardWorkspace) {
        let t = a.tokens, c = a.config
        precondition(t <= w.capacity, "\(t) tokens exceed the workspace's \(w.capacity)")
        let d = c.hiddenSize, qDim = c.numHeads * c.headDim, kvDim = c.numKVHeads * c.headDim, m = c.intermediateSize

        // MLP: x₂ = x₁ + down(silu(gate(n₂))·up(n₂)), n₂ = RMSNorm(x₁).
        linearBackward(.down, gradOutput: gradient, input: a.mlpHidden, tokens: t, gradInput: w.gradHidden,
                       accumulate: false, gradients: &gradients, workspace: w)
        swiGLUBackward(gate: a.gate, up: a.up, gradOutput: w.gradHidden, gradGate: w.gradGate, gradUp: w.gradUp, count: t * m)
        linearBackward(.gate, gradOutput: w.gradGate, input: a.normedResidual, tokens: t, gradInput: w.gradNormed,
                       accumulate: false, gradients: &gradients, workspace: w)
        linearBackward(.up, gradOutput: w.gradUp, input: a.normedResidual, tokens: t, gradInput: w.gradNormed,
                       accumulate: true, gradients: &gradients, workspace: w)
        dense.postAttentionNorm.withUnsafeBufferPointer { weight in
            gradients.postAttentionNorm.withUnsafeMutableBufferPointer { dw in
                rmsNormBackwardRows(a.residual, weight: weight.baseAddress!, gradOutput: w.gradNormed, gradInput: gradient,
                                    weightGrad: dw.baseAddress!, inverseRMS: w.inverseRMS, rows: t, count: d,
                                    epsilon: c.rmsNormEps)
            }
        }

        // Attention: x₁ = x₀ + o(attention(rope(q(n₁)), rope(k(n₁)), v(n₁))), n₁ = RMSNorm(x₀).
        linearBackward(.o, gradOutput: gradient, input: a.attention, tokens: t, gradInput: w.gradAttention,
                       accumulate: false, gradients: &gradients, workspace: w)
        causalAttentionBackward(queries: a.query, keys: a.keys, values: a.values, gradOutput: w.gradAttention,
                                gradQueries: w.gradQuery, gradKeys: w.gradKeys, gradValues: w.gradValues,
                                tokens: t, heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim,
                                scratch: w.attentionScratch)
        a.rope.applyInverse(w.gradQuery, rowStride: qDim, heads: c.numHeads, tokens: t, startPosition: 0)
        a.rope.applyInverse(w.gradKeys, rowStride: kvDim, heads: c.numKVHeads, tokens: t, startPosition: 0)
        linearBackward(.q, gradOutput: w.gradQuery, input: a.normedInput, tokens: t, gradInput: w.gradNormed,
                       accumulate: false, gradients: &gradients, workspace: w)
        linearBackward(.k, gradOutput: w.gradKeys, input: a.normedInput, tokens: t, gradInput: w.gradNormed,
                       accumulate: true, gradients: &gradients, workspace: w)
        linearBackward(.v, gradOutput: w.gradValues, input: a.normedInput, tokens: t, gradInput: w.gradNormed,
                       accumulate: true, gradients: &gradients, workspace: w)
        dense.inputNorm.withUnsafeBufferPointer { weight in
            gradients.inputNorm.withUnsafeMutableBufferPointer { dw in
                rmsNormBackwardRows(a.input, weight: weight.baseAddress!, gradOutput: w.gradNormed, gradInput: gradient,
                                    weightGrad: dw.baseAddress!, inverseRMS: w.inverseRMS, rows: t, count: d,
                                    epsilon: c.rmsNormEps)
            }
        }
    }

    /// Y = X Ŵᵀ: ∂L/∂X = ∂L/∂Y·Ŵ (written, or added when `accumulate`), and for a quantized
    /// linear ∂L/∂Ŵ = ∂L/∂Yᵀ·X routed to its codewords and scales.
    func linearBackward(_ linear: LlamaLinear, gradOutput dy: UnsafePointer<Float>, input x: UnsafePointer<Float>, tokens t: Int,
                        gradInput dx: UnsafeMutablePointer<Float>, accumulate: Bool,
                        gradients: inout BlockGradients, workspace w: BackwardWorkspace) {
        guard let layer = dense[linear] as? DenseLinear else {
            preconditionFailure("\(linear.rawValue): the training pass needs dense weights")
        }
        let dIn = layer.inputSize, dOut = layer.outputSize
        layer.weights.withUnsafeBufferPointer { weights in
            sgemm(.noTrans, .noTrans, t, dIn, dOut, 1, dy, dOut, weights.baseAddress!, dIn, accumulate ? 1 : 0, dx, dIn)
        }
        guard let trainable = trainable.quantized[linear], let codewords = codewords[linear] else { return }
        sgemm(.trans, .noTrans, dOut, dIn, t, 1, dy, dOut, x, dIn, 0, w.weightGrad, dIn)
        trainable.accumulateGradient(weightGrad: w.weightGrad, codewords: codewords, into: &gradients.linears[linear]!)
        gradients.linears[linear]!.addWeightGradient(w.weightGrad)
    }
}
