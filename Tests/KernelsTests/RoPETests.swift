import Foundation
import Kernels
import XCTest

final class RoPETests: XCTestCase {
    /// Rotate-half pairs (i, i + d/2) rotated by p·base^(-2i/d), for several heads and rows.
    func testMatchesRotateHalfFormula() {
        for headDim in [8, 10, 64] {
            let heads = 3, tokens = 5, start = 11, base: Float = 10000
            let rope = RotaryEmbedding(headDim: headDim, base: base, maxPositions: start + tokens)
            var random = SeededRandom(seed: UInt64(headDim))
            let x = (0..<(tokens * heads * headDim)).map { _ in random.nextGaussian() }
            var y = x
            y.withUnsafeMutableBufferPointer {
                rope.apply($0.baseAddress!, rowStride: heads * headDim, heads: heads, tokens: tokens, startPosition: start)
            }
            let half = headDim / 2
            for t in 0..<tokens {
                for h in 0..<heads {
                    let o = t * heads * headDim + h * headDim
                    for i in 0..<half {
                        let angle = Double(start + t) * pow(Double(base), -2 * Double(i) / Double(headDim))
                        let a = Double(x[o + i]), b = Double(x[o + i + half])
                        XCTAssertEqual(Double(y[o + i]), a * cos(angle) - b * sin(angle), accuracy: 1e-5)
                        XCTAssertEqual(Double(y[o + i + half]), b * cos(angle) + a * sin(angle), accuracy: 1e-5)
                    }
                }
            }
        }
    }

    func testPositionZeroIsIdentity() {
        let rope = RotaryEmbedding(headDim: 16, base: 100_000, maxPositions: 1)
        let x = (0..<16).map { Float($0) - 7.5 }
        var y = x
        y.withUnsafeMutableBufferPointer { rope.apply($0.baseAddress!, rowStride: 16, heads: 1, tokens: 1, startPosition: 0) }
        XCTAssertEqual(x, y)
    }
}
