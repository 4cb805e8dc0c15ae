import Foundation

/// Rotary position embedding (Su et al. 2021) in Hugging Face's rotate-half layout: within a
/// head of dimension d, element i pairs with element i + d/2 and the pair is rotated by the
/// angle p·θ_i, θ_i = base^(-2i/d), p the token's position:
///   x'[i]       = x[i]·cos(pθ_i) - x[i+d/2]·sin(pθ_i)
///   x'[i + d/2] = x[i+d/2]·cos(pθ_i) + x[i]·sin(pθ_i)
/// The cos/sin table is computed once in Double for every position up to `maxPositions`.
public struct RotaryEmbedding: Sendable {
    public let headDim: Int
    public let maxPositions: Int
    /// [maxPositions × headDim/2] each.
    let cosines: [Float]
    let sines: [Float]

    public init(headDim: Int, base: Float, maxPositions: Int) {
        precondition(headDim % 2 == 0, "RoPE needs an even head dimension")
        self.headDim = headDim
        self.maxPositions = maxPositions
        let half = headDim / 2
        var cosines = [Float](repeating: 0, count: maxPositions * half)
        var sines = cosines
        for i in 0..<half {
            let theta = Foundation.pow(Double(base), -2 * Double(i) / Double(headDim))
            for p in 0..<maxPositions {
                let angle = Double(p) * theta
                cosines[p * half + i] = Float(Foundation.cos(angle))
                sines[p * half + i] = Float(Foundation.sin(angle))
            }
        }
        self.cosines = cosines
        self.sines = sines
    }

    /// Rotates `heads` consecutive heads of each of `tokens` rows in place; row t (stride
    /// `rowStride` floats) is at position `startPosition + t`.
    public func apply(_ rows: UnsafeMutablePointer<Float>, rowStride: Int, heads: Int, tokens: Int, startPosition: Int) {
        precondition(startPosition + tokens <= maxPositions, "position beyond the RoPE table")
        let half = headDim / 2
        cosines.withUnsafeBufferPointer { cosTable in
            sines.withUnsafeBufferPointer { sinTable in
                parallelChunks(tokens, minChunk: 32) { lo, hi in
                    for t in lo..<hi {
                        let p = startPosition + t
                        let c = cosTable.baseAddress! + p * half, s = sinTable.baseAddress! + p * half
                        for h in 0..<heads {
                            rotateHalf(rows + t * rowStride + h * headDim, cos: c, sin: s, half: half)
                        }
                    }
                }
            }
        }
    }
}

/// One head: (x1, x2) -> (x1·cos - x2·sin, x2·cos + x1·sin) with x1 = x[0..<half], x2 = x[half..<2·half].
@inline(__always)
func rotateHalf(_ x: UnsafeMutablePointer<Float>, cos c: UnsafePointer<Float>, sin s: UnsafePointer<Float>, half: Int) {
    let x2 = x + half
    var i = 0
    while i + 16 <= half {
        let a = loadVector(x + i), b = loadVector(x2 + i), cv = loadVector(c + i), sv = loadVector(s + i)
        storeVector(a * cv - b * sv, x + i)
        storeVector(b * cv + a * sv, x2 + i)
        i += 16
    }
    while i < half {
        let a = x[i], b = x2[i]
        x[i] = a * c[i] - b * s[i]
        x2[i] = b * c[i] + a * s[i]
        i += 1
    }
}
