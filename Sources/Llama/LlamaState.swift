import Checkpoint
import Kernels

/// How the key/value cache stores its values.
public enum KVCachePrecision: String, Sendable, CaseIterable {
    /// Float32: exact.
    case f32
    /// fp16 (llama.cpp's default cache type): half the bytes that decode attention reads per
    /// step (its traffic grows with the position); keys and values rounded to fp16 when stored.
    case f16
}

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
    public let kvCache: KVCachePrecision
    /// Per layer, [maxPositions × numKVHeads·headDim] (RoPE already applied to keys). With an
    /// fp16 cache, every layer's entry is the same Float32 staging buffer: the linears write the
    /// step's keys/values there, they are rounded into `halfKeys`/`halfValues`, and a batched
    /// (sgemm) attention reads the layer's whole cache widened back into it.
    let keys: [UnsafeMutablePointer<Float>]
    let values: [UnsafeMutablePointer<Float>]
    /// Per layer, [maxPositions × numKVHeads·headDim] fp16 bit patterns (`kvCache == .f16` only).
    let halfKeys: [UnsafeMutablePointer<UInt16>]
    let halfValues: [UnsafeMutablePointer<UInt16>]
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
    private var halfAllocations: [UnsafeMutablePointer<UInt16>] = []

    /// - Parameters:
    ///   - maxPositions: cache length (prompt plus generated tokens, or the perplexity context).
    ///   - maxBatch: tokens per internal step; longer inputs are run in pieces of this size.
    ///   - maxLogitRows: how many logit rows one `forward` call may return.
    ///   - kvCache: how the key/value cache stores its values.
    public init(config: LlamaConfig, maxPositions: Int, maxBatch: Int? = nil, maxLogitRows: Int? = nil,
                kvCache: KVCachePrecision = .f32) {
        precondition(maxPositions > 0, "a state needs room for at least one position")
        self.config = config
        self.maxPositions = maxPositions
        self.maxBatch = max(1, min(maxBatch ?? maxPositions, maxPositions))
        self.maxLogitRows = max(1, maxLogitRows ?? self.maxBatch)
        rope = RotaryEmbedding(headDim: config.headDim, base: config.ropeTheta, maxPositions: maxPositions)

        var allocations: [UnsafeMutablePointer<Float>] = []
        var halfAllocations: [UnsafeMutablePointer<UInt16>] = []
        func zeroed<T: Numeric>(_ count: Int, _ list: inout [UnsafeMutablePointer<T>]) -> UnsafeMutablePointer<T> {
            let p = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
            p.initialize(repeating: 0, count: max(count, 1))
            list.append(p)
            return p
        }
        func allocate(_ count: Int) -> UnsafeMutablePointer<Float> { zeroed(count, &allocations) }
        let kvDim = config.numKVHeads * config.headDim, qDim = config.numHeads * config.headDim
        self.kvCache = kvCache
        func allocateHalves(_ count: Int) -> UnsafeMutablePointer<UInt16> { zeroed(count, &halfAllocations) }
        switch kvCache {
        case .f32:
            keys = (0..<config.numLayers).map { _ in allocate(maxPositions * kvDim) }
            values = (0..<config.numLayers).map { _ in allocate(maxPositions * kvDim) }
            halfKeys = []
            halfValues = []
        case .f16:
            let stagingKeys = allocate(maxPositions * kvDim), stagingValues = allocate(maxPositions * kvDim)
            keys = Array(repeating: stagingKeys, count: config.numLayers)
            values = Array(repeating: stagingValues, count: config.numLayers)
            halfKeys = (0..<config.numLayers).map { _ in allocateHalves(maxPositions * kvDim) }
            halfValues = (0..<config.numLayers).map { _ in allocateHalves(maxPositions * kvDim) }
        }
        self.halfAllocations = halfAllocations
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
        for p in halfAllocations { p.deallocate() }
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
        let buffers = 4 * (activations + scores + maxLogitRows * config.vocabSize)
        switch kvCache {
        case .f32: return buffers + 4 * cache
        case .f16: return buffers + 2 * cache + 4 * 2 * maxPositions * kvDim
        }
    }
}

extension LlamaModel {
    /// A state for this model, its cache stored at the model's `kvCache`; see `LlamaState.init`.
    public func makeState(maxPositions: Int, maxBatch: Int? = nil, maxLogitRows: Int? = nil) -> LlamaState {
        LlamaState(config: config, maxPositions: maxPositions, maxBatch: maxBatch, maxLogitRows: maxLogitRows, kvCache: kvCache)
    }
}
