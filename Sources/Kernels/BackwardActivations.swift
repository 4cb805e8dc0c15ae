/// Backward of `swiGLU`: h = silu(g)·u with silu(g) = g·σ(g), so
///   ∂L/∂u = dh·g·σ(g)
///   ∂L/∂g = dh·u·σ(g)·(1 + g·(1 − σ(g)))
/// Both gradients are written (not accumulated).
@inline(__always)
public func swiGLUBackward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, gradOutput dh: UnsafePointer<Float>,
                           gradGate: UnsafeMutablePointer<Float>, gradUp: UnsafeMutablePointer<Float>, count n: Int) {
    @inline(__always)
    func step(_ g: SIMD16<Float>, _ u: SIMD16<Float>, _ d: SIMD16<Float>) -> (SIMD16<Float>, SIMD16<Float>) {
        let sigma = 1 / (exp(-g) + 1)
        let dGate = d * u * sigma * (1 + g * (1 - sigma))
        return (dGate, d * g * sigma)
    }
    var i = 0
    while i + 16 <= n {
        let (dg, du) = step(loadVector(gate + i), loadVector(up + i), loadVector(dh + i))
        storeVector(dg, gradGate + i)
        storeVector(du, gradUp + i)
        i += 16
    }
    if i < n {
        let rest = n - i
        let (dg, du) = step(loadPartial(gate + i, count: rest, padding: 0), loadPartial(up + i, count: rest, padding: 0),
                            loadPartial(dh + i, count: rest, padding: 0))
        storePartial(dg, gradGate + i, count: rest)
        storePartial(du, gradUp + i, count: rest)
    }
}

extension RotaryEmbedding {
    /// The transpose (= inverse, the rotation being orthogonal) of `apply`: rotates each pair by
    /// −p·θ_i. This maps the gradient with respect to rotated rows to the gradient with respect
    /// to the rows before rotation. On the calling thread (a few µs per row; see
    /// `causalAttentionBackward` on mixing Dispatch workers with OpenBLAS).
    public func applyInverse(_ rows: UnsafeMutablePointer<Float>, rowStride: Int, heads: Int, tokens: Int, startPosition: Int) {
        precondition(startPosition + tokens <= maxPositions, "position beyond the RoPE table")
        let half = headDim / 2
        cosines.withUnsafeBufferPointer { cosTable in
            sines.withUnsafeBufferPointer { sinTable in
                for t in 0..<tokens {
                    let p = startPosition + t
                    let c = cosTable.baseAddress! + p * half, s = sinTable.baseAddress! + p * half
                    for h in 0..<heads {
                        rotateHalfInverse(rows + t * rowStride + h * headDim, cos: c, sin: s, half: half)
                    }
                }
            }
        }
    }
}

/// One head: (x1, x2) -> (x1·cos + x2·sin, x2·cos − x1·sin), the inverse of `rotateHalf`.
@inline(__always)
func rotateHalfInverse(_ x: UnsafeMutablePointer<Float>, cos c: UnsafePointer<Float>, sin s: UnsafePointer<Float>, half: Int) {
    let x2 = x + half
    var i = 0
    while i + 16 <= half {
        let a = loadVector(x + i), b = loadVector(x2 + i), cv = loadVector(c + i), sv = loadVector(s + i)
        storeVector(a * cv + b * sv, x + i)
        storeVector(b * cv - a * sv, x2 + i)
        i += 16
    }
    while i < half {
        let a = x[i], b = x2[i]
        x[i] = a * c[i] + b * s[i]
        x2[i] = b * c[i] - a * s[i]
        i += 1
    }
}
