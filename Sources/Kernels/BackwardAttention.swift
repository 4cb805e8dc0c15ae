import CBLAS

/// Backward of `causalAttention` for one sequence at positions 0..<tokens (queries, keys and
/// values all of this sequence, RoPE already applied). Per query head h with key/value head
/// g = g(h) and s = 1/√d, the probabilities are recomputed (they are not kept by the forward):
///   S = s·Q_h K_gᵀ, P = softmax over j ≤ t of row t (0 above the diagonal)
///   dP = dO_h V_gᵀ,  dS = P ⊙ (dP − rowsum(P ⊙ dP))
///   dQ_h = s·dS K_g,  dK_g += s·dSᵀ Q_h,  dV_g += Pᵀ dO_h
/// Each product is one sgemm over the full square (half of it masked), which on this size
/// (512 tokens, head 64) is still several times faster than row-by-row dot products. The row
/// passes between the products stay on the calling thread: they take ~0.2 ms per head, and a
/// second Dispatch worker would compete with OpenBLAS's threads, which keep spinning on the
/// other core for a while after each call (measured: occasional 4-10x slowdowns under load).
///
/// Layouts as in `causalAttention`: queries, gradOutput, gradQueries [tokens × heads·headDim];
/// keys, values, gradKeys, gradValues [tokens × kvHeads·headDim]. All three gradients are
/// written (not accumulated). `scratch` holds 2·tokens² floats.
public func causalAttentionBackward(queries: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                    gradOutput: UnsafePointer<Float>, gradQueries: UnsafeMutablePointer<Float>,
                                    gradKeys: UnsafeMutablePointer<Float>, gradValues: UnsafeMutablePointer<Float>,
                                    tokens t: Int, heads: Int, kvHeads: Int, headDim d: Int,
                                    scratch: UnsafeMutablePointer<Float>) {
    precondition(heads % kvHeads == 0, "query heads must be a multiple of key/value heads")
    let groupSize = heads / kvHeads
    let qStride = Int32(heads * d), kvStride = Int32(kvHeads * d)
    let n = Int32(t), hd = Int32(d)
    let scoreScale = 1 / Float(d).squareRoot()
    let probabilities = scratch, gradScores = scratch + t * t
    for h in 0..<heads {
        let g = h / groupSize
        let q = queries + h * d, k = keys + g * d, v = values + g * d
        let dO = gradOutput + h * d
        let firstInGroup = h % groupSize == 0
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, scoreScale, q, qStride, k, kvStride,
                    0, probabilities, n)
        causalSoftmaxRows(probabilities, tokens: t)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, 1, dO, qStride, v, kvStride, 0, gradScores, n)
        softmaxBackwardRows(probabilities: probabilities, gradients: gradScores, tokens: t)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, n, scoreScale, gradScores, n, k, kvStride,
                    0, gradQueries + h * d, qStride)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, scoreScale, gradScores, n, q, qStride,
                    firstInGroup ? 0 : 1, gradKeys + g * d, kvStride)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, 1, probabilities, n, dO, qStride,
                    firstInGroup ? 0 : 1, gradValues + g * d, kvStride)
    }
}

/// Row t of the [tokens × tokens] scores: softmax over columns 0...t, zero beyond.
func causalSoftmaxRows(_ scores: UnsafeMutablePointer<Float>, tokens t: Int) {
    for row in 0..<t {
        let r = scores + row * t
        softmax(r, count: row + 1)
        (r + row + 1).update(repeating: 0, count: t - row - 1)
    }
}

/// In place on `gradients` (dP): dS[t, j] = P[t, j]·(dP[t, j] − Σ_i P[t, i]·dP[t, i]) for
/// j ≤ t, zero beyond (so the masked half adds nothing to the following products).
func softmaxBackwardRows(probabilities p: UnsafePointer<Float>, gradients dp: UnsafeMutablePointer<Float>, tokens t: Int) {
    for row in 0..<t {
        let pr = p + row * t, dr = dp + row * t, n = row + 1
        let mean = dot(pr, dr, count: n)
        subtractThenMultiply(dr, shift: mean, by: pr, count: n)
        (dr + n).update(repeating: 0, count: t - n)
    }
}

/// x_i = (x_i − shift)·m_i.
@inline(__always)
func subtractThenMultiply(_ x: UnsafeMutablePointer<Float>, shift: Float, by m: UnsafePointer<Float>, count n: Int) {
    let s = SIMD16<Float>(repeating: shift)
    var i = 0
    while i + 16 <= n {
        storeVector((loadVector(x + i) - s) * loadVector(m + i), x + i)
        i += 16
    }
    while i < n {
        x[i] = (x[i] - shift) * m[i]
        i += 1
    }
}
