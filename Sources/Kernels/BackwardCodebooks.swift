/// Routes the gradient of a dense weight Ŵ to the continuous parameters of its additive code,
/// Ŵ[r, group j] = s_r·Σ_m C_m[b_{r,j,m}] (codes b frozen):
///   ∂L/∂C_m[c] += Σ_{(r, j): b_{r,j,m} = c} s_r·∂L/∂Ŵ[r, group j]
///   ∂L/∂s_r    += Σ_j ∂L/∂Ŵ[r, group j] · Σ_m C_m[b_{r,j,m}]
///
/// Layouts (row-major, the Hugging Face AQLM layout): `weightGrad` [rows × groups·g], `codes`
/// [rows, groups, M], `codebooks` and `codebookGrad` [M, K, g], `scales` and `scaleGrad` [rows].
/// Both gradients are accumulated (+=). On the calling thread: ~1 ms for a 1536×576 layer,
/// next to ~20 ms for the sgemm that produced ∂L/∂Ŵ.
public func accumulateAdditiveCodeGradient(weightGrad: UnsafePointer<Float>, codes: UnsafePointer<UInt16>,
                                           codebooks: UnsafePointer<Float>, scales: UnsafePointer<Float>,
                                           rows: Int, groups: Int, codebookCount m: Int, codebookSize k: Int, groupSize g: Int,
                                           codebookGrad: UnsafeMutablePointer<Float>, scaleGrad: UnsafeMutablePointer<Float>) {
    routeRows(0..<rows, weightGrad: weightGrad, codes: codes, codebooks: codebooks, scales: scales, groups: groups,
              codebookCount: m, codebookSize: k, groupSize: g, codebookGrad: codebookGrad, scaleGrad: scaleGrad)
}

@inline(__always)
func routeRows(_ range: Range<Int>, weightGrad: UnsafePointer<Float>, codes: UnsafePointer<UInt16>,
               codebooks: UnsafePointer<Float>, scales: UnsafePointer<Float>, groups: Int,
               codebookCount m: Int, codebookSize k: Int, groupSize g: Int,
               codebookGrad: UnsafeMutablePointer<Float>, scaleGrad: UnsafeMutablePointer<Float>) {
    let rowWidth = groups * g
    for r in range {
        let s = scales[r]
        var scaleSum: Float = 0
        for j in 0..<groups {
            let dw = weightGrad + r * rowWidth + j * g
            let rowCodes = codes + (r * groups + j) * m
            for book in 0..<m {
                let offset = (book * k + Int(rowCodes[book])) * g
                scaleSum += shortDot(dw, codebooks + offset, count: g)
                shortAddScaled(dw, s, into: codebookGrad + offset, count: g)
            }
        }
        scaleGrad[r] += scaleSum
    }
}

/// Σ a_i·b_i for codeword-length vectors (8 or 16 floats): SIMD8 steps, no 64-wide unrolling.
@inline(__always)
func shortDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count n: Int) -> Float {
    var acc = SIMD8<Float>()
    var i = 0
    while i + 8 <= n {
        acc = acc.addingProduct(UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self),
                                UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self))
        i += 8
    }
    var sum = acc.sum()
    while i < n {
        sum += a[i] * b[i]
        i += 1
    }
    return sum
}

/// y_i += a·x_i for codeword-length vectors.
@inline(__always)
func shortAddScaled(_ x: UnsafePointer<Float>, _ a: Float, into y: UnsafeMutablePointer<Float>, count n: Int) {
    var i = 0
    while i + 8 <= n {
        let v = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
            .addingProduct(SIMD8(repeating: a), UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
        UnsafeMutableRawPointer(y + i).storeBytes(of: v, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n {
        y[i] += a * x[i]
        i += 1
    }
}
