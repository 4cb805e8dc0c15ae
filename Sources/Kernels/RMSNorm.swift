/// RMSNorm (Zhang & Sennrich 2019), as in Llama: out = x / sqrt(mean(x²) + ε) ⊙ weight.
/// No mean subtraction and no bias, unlike LayerNorm.
@inline(__always)
public func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>,
                    count n: Int, epsilon: Float) {
    let meanSquare = dot(x, x, count: n) / Float(n)
    let inverseRMS = SIMD16<Float>(repeating: 1 / (meanSquare + epsilon).squareRoot())
    var i = 0
    while i + 16 <= n {
        storeVector(loadVector(x + i) * inverseRMS * loadVector(weight + i), out + i)
        i += 16
    }
    while i < n {
        out[i] = x[i] * inverseRMS[0] * weight[i]
        i += 1
    }
}

/// RMSNorm of each of `rows` rows of width `count` (row-major, x and out may be the same
/// buffer); rows are split across workers once there are enough to pay for the dispatch.
public func rmsNormRows(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>,
                        rows: Int, count n: Int, epsilon: Float) {
    parallelChunks(rows, minChunk: 32) { lo, hi in
        for r in lo..<hi {
            rmsNorm(x + r * n, weight: weight, into: out + r * n, count: n, epsilon: epsilon)
        }
    }
}
