import CBLAS

/// Backward of `causalAttention` for one sequence at positions 0..<tokens (queries, keys and
/// values all of this sequence, RoPE already applied). Per query head h with key/value head
/// g = g(h) and s = 1/√d, the probabilities are recomputed (they are not kept by the forward):
///   S = s·Q_h K_gᵀ, P = softmax over j ≤ t of row t (0 above the diagonal)
///   dP = dO_h V_gᵀ,  dS = P ⊙ (dP − rowsum(P ⊙ dP))
///   dQ_h = s·dS K_g,  dK_g += s·dSᵀ Q_h,  dV_g += Pᵀ dO_h
/// Query rows go in tiles of `queryTile`: a tile ending at row r only meets keys 0..<r, so
/// the masked triangle is mostly skipped (62% of the full square at 512 tokens and tiles of
/// 128). Each product is one sgemm, which at these sizes (head 64) is several times faster
/// than row-by-row dot products. The row passes between the products stay on the calling
/// thread: they take ~0.2 ms per head (a second Dispatch worker competed with OpenBLAS's
/// threads when products still used them: occasional 4-10x slowdowns under load).
///
/// Layouts as in `causalAttention`: queries, gradOutput, gradQueries [tokens × heads·headDim];
/// keys, values, gradKeys, gradValues [tokens × kvHeads·headDim]. All three gradients are
/// written (not accumulated). `scratch` holds 2·min(queryTile, tokens)·tokens floats.
public func causalAttentionBackward(queries: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                    gradOutput: UnsafePointer<Float>, gradQueries: UnsafeMutablePointer<Float>,
                                    gradKeys: UnsafeMutablePointer<Float>, gradValues: UnsafeMutablePointer<Float>,
                                    tokens t: Int, heads: Int, kvHeads: Int, headDim d: Int,
                                    scratch: UnsafeMutablePointer<Float>, queryTile: Int = 128) {
    precondition(heads % kvHeads == 0, "query heads must be a multiple of key/value heads")
    precondition(queryTile > 0, "query tiles need at least one row")
    let groupSize = heads / kvHeads
    let qStride = heads * d, kvStride = kvHeads * d
    let scoreScale = 1 / Float(d).squareRoot()
    let tile = min(queryTile, t)
    let probabilities = scratch, gradScores = scratch + tile * t
    gradKeys.update(repeating: 0, count: t * kvStride)
    gradValues.update(repeating: 0, count: t * kvStride)
    for h in 0..<heads {
        let g = h / groupSize
        let k = keys + g * d, v = values + g * d, dK = gradKeys + g * d, dV = gradValues + g * d
        var first = 0
        while first < t {
            let rows = min(tile, t - first), n = first + rows
            let q = queries + first * qStride + h * d, dO = gradOutput + first * qStride + h * d
            sgemm(.noTrans, .trans, rows, n, d, scoreScale, q, qStride, k, kvStride, 0, probabilities, n)
            causalSoftmaxRows(probabilities, rows: rows, width: n, firstRow: first)
            sgemm(.noTrans, .trans, rows, n, d, 1, dO, qStride, v, kvStride, 0, gradScores, n)
            softmaxBackwardRows(probabilities: probabilities, gradients: gradScores, rows: rows, width: n, firstRow: first)
            sgemm(.noTrans, .noTrans, rows, d, n, scoreScale, gradScores, n, k, kvStride, 0,
                  gradQueries + first * qStride + h * d, qStride)
            sgemm(.trans, .noTrans, n, d, rows, scoreScale, gradScores, n, q, qStride, 1, dK, kvStride)
            sgemm(.trans, .noTrans, n, d, rows, 1, probabilities, n, dO, qStride, 1, dV, kvStride)
            first += rows
        }
    }
}

/// Row i of the [rows × width] scores is query row firstRow + i: softmax over columns
/// 0...firstRow + i, zero beyond.
func causalSoftmaxRows(_ scores: UnsafeMutablePointer<Float>, rows: Int, width: Int, firstRow: Int) {
    for i in 0..<rows {
        let r = scores + i * width, n = firstRow + i + 1
        softmax(r, count: n)
        (r + n).update(repeating: 0, count: width - n)
    }
}

/// In place on `gradients` (dP): dS[i, j] = P[i, j]·(dP[i, j] − Σ_l P[i, l]·dP[i, l]) for
/// j ≤ firstRow + i, zero beyond (so the masked part adds nothing to the following products).
func softmaxBackwardRows(probabilities p: UnsafePointer<Float>, gradients dp: UnsafeMutablePointer<Float>,
                         rows: Int, width: Int, firstRow: Int) {
    for i in 0..<rows {
        let pr = p + i * width, dr = dp + i * width, n = firstRow + i + 1
        let mean = dot(pr, dr, count: n)
        subtractThenMultiply(dr, shift: mean, by: pr, count: n)
        (dr + n).update(repeating: 0, count: width - n)
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
