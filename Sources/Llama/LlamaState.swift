import Checkpoint
import Kernels

/// Everything a forward pass writes, allocated once per run: the key/value cache for up to
/// `maxPositions` positions, activation buffers for up to `maxBatch` tokens per step, the
/// RoPE table, and room for `maxLogitRows` rows of logits. Not thread-safe: one state per
/// sequence being decoded.
public final class LlamaState {
    public let config: LlamaConfig
    public let maxPositions: Int
    public let maxBatch: Int
    public let maxLogitRows: Int
    /// Positions 0..<length of the cache hold keys/values of the tokens run so far.
    public internal(set) var length = 0

    let rope: RotaryEmbedding
    /// Per layer, [maxPositions × numKVHeads·headDim] (RoPE already applied to keys).
    let keys: [UnsafeMutablePointer<Float>]
    let values: [UnsafeMutablePointer<Float>]
    /// Activations for one step, [maxBatch × width].
    let hidden: UnsafeMutablePointer<Float>      // residual stream, hiddenSize
    let normed: UnsafeMutablePointer<Float>      // RMSNorm output, hiddenSize
    let query: UnsafeMutablePointer<Float>       // numHeads·headDim
    let attention: UnsafeMutablePointer<Float>   // attention output, numHeads·headDim
    let projected: UnsafeMutablePointer<Float>   // o_proj / down_proj output, hiddenSize
    let gate: UnsafeMutablePointer<Float>        // intermediateSize
    let up: UnsafeMutablePointer<Float>          // intermediateSize
    let mlpHidden: UnsafeMutablePointer<Float>   // silu(gate)·up, intermediateSize
    /// Attention scores of one head and row block, [min(maxBatch, attentionRowBlock) × maxPositions].
    let scores: UnsafeMutablePointer<Float>
    /// [maxLogitRows × vocabSize]
    let logitBuffer: UnsafeMutablePointer<Float>
    private var allocations: [UnsafeMutablePointer<Float>] = []

    /// - Parameters:
    ///   - maxPositions: cache length (prompt plus generated tokens, or the perplexity context).
    ///   - maxBatch: tokens per internal step; longer inputs are run in pieces of this size.
    ///   - maxLogitRows: how many logit rows one `forward` call may return.
    public init(config: LlamaConfig, maxPositions: Int, maxBatch: Int? = nil, maxLogitRows: Int? = nil) {
        precondition(maxPositions > 0, "a state needs room for at least one position")
        self.config = config
        self.maxPositions = maxPositions
        self.maxBatch = max(1, min(maxBatch ?? maxPositions, maxPositions))
        self.maxLogitRows = max(1, maxLogitRows ?? self.maxBatch)
        rope = RotaryEmbedding(headDim: config.headDim, base: config.ropeTheta, maxPositions: maxPositions)

        var allocations: [UnsafeMutablePointer<Float>] = []
        func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            p.initialize(repeating: 0, count: max(count, 1))
            allocations.append(p)
            return p
        }
        let kvDim = config.numKVHeads * config.headDim, qDim = config.numHeads * config.headDim
        keys = (0..<config.numLayers).map { _ in allocate(maxPositions * kvDim) }
        values = (0..<config.numLayers).map { _ in allocate(maxPositions * kvDim) }
        let b = self.maxBatch
        hidden = allocate(b * config.hiddenSize)
        normed = allocate(b * config.hiddenSize)
        query = allocate(b * qDim)
        attention = allocate(b * qDim)
        projected = allocate(b * config.hiddenSize)
        gate = allocate(b * config.intermediateSize)
        up = allocate(b * config.intermediateSize)
        mlpHidden = allocate(b * config.intermediateSize)
        scores = allocate(min(b, attentionRowBlock) * maxPositions)
        logitBuffer = allocate(self.maxLogitRows * config.vocabSize)
        self.allocations = allocations
    }

    deinit {
        for p in allocations { p.deallocate() }
    }

    /// Forgets the cached sequence (the buffers are kept).
    public func reset() { length = 0 }

    /// Row `row` of the logits written by the last `forward` call (row 0 is the first token
    /// of the range it returned). Valid until the next call.
    public func logits(row: Int) -> UnsafeBufferPointer<Float> {
        precondition(row >= 0 && row < maxLogitRows, "logit row \(row) out of range")
        return UnsafeBufferPointer(start: logitBuffer + row * config.vocabSize, count: config.vocabSize)
    }

    /// Bytes held by the cache and buffers.
    public var allocatedBytes: Int {
        let kvDim = config.numKVHeads * config.headDim, qDim = config.numHeads * config.headDim
        let cache = 2 * config.numLayers * maxPositions * kvDim
        let activations = maxBatch * (3 * config.hiddenSize + 2 * qDim + 3 * config.intermediateSize)
        let scores = min(maxBatch, attentionRowBlock) * maxPositions
        return 4 * (cache + activations + scores + maxLogitRows * config.vocabSize)
    }
}

extension LlamaModel {
    /// A state for this model; see `LlamaState.init`.
    public func makeState(maxPositions: Int, maxBatch: Int? = nil, maxLogitRows: Int? = nil) -> LlamaState {
        LlamaState(config: config, maxPositions: maxPositions, maxBatch: maxBatch, maxLogitRows: maxLogitRows)
    }
}
