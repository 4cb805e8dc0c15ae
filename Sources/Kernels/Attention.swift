/// Causal grouped-query attention (Vaswani et al. 2017; GQA: Ainslie et al. 2023) for a batch
/// of query rows against a key/value cache:
///   out[t, h] = Σ_{j ≤ p_t} softmax_j(q[t, h]·k[j, g(h)] / √d) · v[j, g(h)]
/// with p_t = startPosition + t the row's position and g(h) = h / (heads / kvHeads) the
/// key/value head that query head h shares with its group.
///
/// Layouts (row-major): queries and out [tokens × heads·headDim]; keys and values
/// [positions × kvHeads·headDim] from position 0, holding at least startPosition + tokens rows.
/// Work is split over (row, head) pairs, longest rows first so the dynamic schedule balances.
public func causalAttention(queries: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                            into out: UnsafeMutablePointer<Float>, tokens: Int, startPosition: Int,
                            heads: Int, kvHeads: Int, headDim: Int) {
    precondition(heads % kvHeads == 0, "query heads must be a multiple of key/value heads")
    let groupSize = heads / kvHeads
    let qStride = heads * headDim, kvStride = kvHeads * headDim
    parallelFor(tokens * heads) { item in
        let t = tokens - 1 - item / heads, h = item % heads
        let kvOffset = (h / groupSize) * headDim
        attendOneQuery(queries + t * qStride + h * headDim,
                       keys: keys + kvOffset, values: values + kvOffset, kvStride: kvStride,
                       positions: startPosition + t + 1, headDim: headDim,
                       into: out + t * qStride + h * headDim)
    }
}

/// One query vector against `positions` cached keys/values (stride `kvStride` floats apart).
@inline(__always)
func attendOneQuery(_ q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, kvStride: Int,
                    positions n: Int, headDim d: Int, into out: UnsafeMutablePointer<Float>) {
    let scoreScale = 1 / Float(d).squareRoot()
    withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { buffer in
        let scores = buffer.baseAddress!
        for j in 0..<n {
            scores[j] = dot(q, keys + j * kvStride, count: d) * scoreScale
        }
        softmax(scores, count: n)
        out.update(repeating: 0, count: d)
        for j in 0..<n {
            addScaled(values + j * kvStride, scores[j], into: out, count: d)
        }
    }
}
