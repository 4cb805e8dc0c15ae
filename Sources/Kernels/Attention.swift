import CBLAS

/// What a key/value cache stores per value: Float32, or fp16 bit patterns (half the bytes a
/// decode step's attention reads; llama.cpp's default cache type), widened as they are read.
public protocol CachedValue {
    /// 16 values from `p` as Float32.
    static func load16(_ p: UnsafePointer<Self>) -> SIMD16<Float>
    static func float(_ v: Self) -> Float
}

extension Float: CachedValue {
    @inline(__always) public static func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> { loadVector(p) }
    @inline(__always) public static func float(_ v: Float) -> Float { v }
}

extension UInt16: CachedValue {
    @inline(__always) public static func load16(_ p: UnsafePointer<UInt16>) -> SIMD16<Float> { widenHalves16(p) }
    @inline(__always) public static func float(_ v: UInt16) -> Float { Float(Float16(bitPattern: v)) }
}

/// Causal grouped-query attention (Vaswani et al. 2017; GQA: Ainslie et al. 2023) for a batch
/// of query rows against a key/value cache:
///   out[t, h] = Σ_{j ≤ p_t} softmax_j(q[t, h]·k[j, g(h)] / √d) · v[j, g(h)]
/// with p_t = startPosition + t the row's position and g(h) = h / (heads / kvHeads) the
/// key/value head that query head h shares with its group.
///
/// Layouts (row-major): queries and out [tokens × heads·headDim]; keys and values
/// [positions × kvHeads·headDim] from position 0, holding at least startPosition + tokens rows.
/// Work is split over (row, head) pairs, longest rows first so the dynamic schedule balances.
///
/// Specialized for both cache types here: callers in other modules otherwise ran the generic
/// body, one protocol-witness call per 16 cached values (`load16` alone was 6 % of a SmolLM2 2x8
/// decode step, attention 8 % more; perf, one thread, 256 steps).
@_specialize(exported: true, where Cached == Float)
@_specialize(exported: true, where Cached == UInt16)
public func causalAttention<Cached: CachedValue>(queries: UnsafePointer<Float>, keys: UnsafePointer<Cached>, values: UnsafePointer<Cached>,
                            into out: UnsafeMutablePointer<Float>, tokens: Int, startPosition: Int,
                            heads: Int, kvHeads: Int, headDim: Int) {
    precondition(heads % kvHeads == 0, "query heads must be a multiple of key/value heads")
    let groupSize = heads / kvHeads
    let qStride = heads * headDim, kvStride = kvHeads * headDim
    func attend(_ item: Int) {
        let t = tokens - 1 - item / heads, h = item % heads
        let kvOffset = (h / groupSize) * headDim
        attendOneQuery(queries + t * qStride + h * headDim,
                       keys: keys + kvOffset, values: values + kvOffset, kvStride: kvStride,
                       positions: startPosition + t + 1, headDim: headDim,
                       into: out + t * qStride + h * headDim)
    }
    // Decoding a short sequence is a few microseconds of work: not worth waking workers.
    if tokens * heads * (startPosition + tokens) * headDim < 1 << 16 {
        for item in 0..<(tokens * heads) { attend(item) }
    } else {
        parallelFor(tokens * heads, attend)
    }
}

/// One query vector against `positions` cached keys/values (stride `kvStride` values apart).
/// Decoding spends most of its attention time here, so the two passes keep their sums in
/// registers: each score is one vector of partial products folded once (not a `dot` call with
/// its own tail and reduction), and the output is summed over all positions in 64-float
/// slices of four accumulators, stored once, instead of read and written back per position
/// (`addScaled`), which chained every position's update through a store-to-load forward.
@inline(__always)
func attendOneQuery<Cached: CachedValue>(_ q: UnsafePointer<Float>, keys: UnsafePointer<Cached>, values: UnsafePointer<Cached>, kvStride: Int,
                    positions n: Int, headDim d: Int, into out: UnsafeMutablePointer<Float>) {
    let scoreScale = 1 / Float(d).squareRoot()
    withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { buffer in
        let scores = buffer.baseAddress!
        for j in 0..<n {
            scores[j] = queryKeyDot(q, keys + j * kvStride, count: d) * scoreScale
        }
        softmax(scores, count: n)
        weightedValueSum(scores, values: values, kvStride: kvStride, positions: n, headDim: d, into: out)
    }
}

/// Σ q[i]·k[i] for one short head vector: one vector accumulator, folded in halves.
@inline(__always)
private func queryKeyDot<Cached: CachedValue>(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Cached>, count d: Int) -> Float {
    var acc = SIMD16<Float>()
    var i = 0
    while i + 16 <= d {
        acc.addProduct(loadVector(q + i), Cached.load16(k + i))
        i += 16
    }
    let quarter = acc.lowHalf + acc.highHalf
    let eighth = quarter.lowHalf + quarter.highHalf
    let pair = eighth.lowHalf + eighth.highHalf
    var sum = pair[0] + pair[1]
    while i < d {
        sum += q[i] * Cached.float(k[i])
        i += 1
    }
    return sum
}

/// out[0..<d] = Σ_j weights[j] · values[j·kvStride ..< j·kvStride + d].
@inline(__always)
private func weightedValueSum<Cached: CachedValue>(_ weights: UnsafePointer<Float>, values: UnsafePointer<Cached>, kvStride: Int, positions n: Int,
                              headDim d: Int, into out: UnsafeMutablePointer<Float>) {
    var start = 0
    while start + 64 <= d {
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
        var v = values + start
        for j in 0..<n {
            let w = SIMD16<Float>(repeating: weights[j])
            a0.addProduct(w, Cached.load16(v)); a1.addProduct(w, Cached.load16(v + 16))
            a2.addProduct(w, Cached.load16(v + 32)); a3.addProduct(w, Cached.load16(v + 48))
            v += kvStride
        }
        storeVector(a0, out + start); storeVector(a1, out + start + 16)
        storeVector(a2, out + start + 32); storeVector(a3, out + start + 48)
        start += 64
    }
    while start + 16 <= d {
        var a = SIMD16<Float>()
        for j in 0..<n { a.addProduct(SIMD16(repeating: weights[j]), Cached.load16(values + j * kvStride + start)) }
        storeVector(a, out + start)
        start += 16
    }
    for i in start..<d {
        var a: Float = 0
        for j in 0..<n { a += weights[j] * Cached.float(values[j * kvStride + i]) }
        out[i] = a
    }
}

/// Query rows per block of `causalAttentionGEMM`.
public let attentionRowBlock = 128

/// The same causal GQA attention for a batch of rows (prefill), as two sgemm calls per head
/// and block of `attentionRowBlock` query rows, the way llama.cpp's graph does it:
///   S = Q_h · K_gᵀ / √d over the positions the block's last row sees, softmax of each row
///   over its own visible prefix (the rest set to 0), then O_h = S · V_g.
/// Blocking keeps the wasted (masked) part of S to the blocks' diagonal squares: 62 % of the
/// full square's work at 512 rows instead of 100 %. `scores` needs
/// min(tokens, attentionRowBlock) · (startPosition + tokens) floats. Layouts as in
/// `causalAttention`. Calls BLAS, so do not call it from inside a parallel loop.
public func causalAttentionGEMM(queries: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                into out: UnsafeMutablePointer<Float>, tokens: Int, startPosition: Int,
                                heads: Int, kvHeads: Int, headDim d: Int, scores: UnsafeMutablePointer<Float>) {
    precondition(heads % kvHeads == 0, "query heads must be a multiple of key/value heads")
    let groupSize = heads / kvHeads
    let qStride = heads * d, kvStride = kvHeads * d
    let scale = 1 / Float(d).squareRoot()
    var blockStart = 0
    while blockStart < tokens {
        let rows = min(attentionRowBlock, tokens - blockStart)
        let visible = startPosition + blockStart + rows
        for h in 0..<heads {
            let g = h / groupSize
            sgemm(.noTrans, .trans, rows, visible, d, scale, queries + blockStart * qStride + h * d, qStride,
                  keys + g * d, kvStride, 0, scores, visible)
            parallelChunks(rows, minChunk: 32) { lo, hi in
                for r in lo..<hi {
                    let row = scores + r * visible
                    let seen = startPosition + blockStart + r + 1
                    softmax(row, count: seen)
                    (row + seen).update(repeating: 0, count: visible - seen)
                }
            }
            sgemm(.noTrans, .noTrans, rows, d, visible, 1, scores, visible, values + g * d, kvStride,
                  0, out + blockStart * qStride + h * d, qStride)
        }
        blockStart += rows
    }
}
