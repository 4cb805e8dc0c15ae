import Foundation
import Kernels
import XCTest

final class AttentionTests: XCTestCase {
    /// Causal GQA against a direct double loop, for rows after a cached prefix.
    func testMatchesDirectComputation() {
        checkAgainstDirectComputation(heads: 6, kvHeads: 2, d: 12, start: 9, tokens: 7)
    }

    /// One decoded row (the decode path) with a head size that takes the kernel's 64-float
    /// slices, a 16-float slice and a scalar tail (64 + 16 + 3).
    func testDecodeRowMatchesDirectComputationForEverySliceWidth() {
        checkAgainstDirectComputation(heads: 6, kvHeads: 2, d: 83, start: 40, tokens: 1)
    }

    private func checkAgainstDirectComputation(heads: Int, kvHeads: Int, d: Int, start: Int, tokens: Int) {
        let positions = start + tokens
        var random = SeededRandom(seed: 21)
        let q = (0..<(tokens * heads * d)).map { _ in random.nextGaussian() }
        let k = (0..<(positions * kvHeads * d)).map { _ in random.nextGaussian() }
        let v = (0..<(positions * kvHeads * d)).map { _ in random.nextGaussian() }
        var out = [Float](repeating: .nan, count: tokens * heads * d)
        out.withUnsafeMutableBufferPointer {
            causalAttention(queries: q, keys: k, values: v, into: $0.baseAddress!, tokens: tokens,
                            startPosition: start, heads: heads, kvHeads: kvHeads, headDim: d)
        }
        for t in 0..<tokens {
            for h in 0..<heads {
                let g = h / (heads / kvHeads)
                let visible = 0...(start + t)
                let scores = visible.map { j in
                    (0..<d).reduce(0.0) { $0 + Double(q[t * heads * d + h * d + $1]) * Double(k[j * kvHeads * d + g * d + $1]) }
                        / Double(d).squareRoot()
                }
                let m = scores.max()!
                let weights = scores.map { Foundation.exp($0 - m) }
                let total = weights.reduce(0, +)
                for i in 0..<d {
                    let expected = visible.reduce(0.0) { $0 + weights[$1] / total * Double(v[$1 * kvHeads * d + g * d + i]) }
                    XCTAssertEqual(Double(out[t * heads * d + h * d + i]), expected, accuracy: 1e-5)
                }
            }
        }
    }

    /// The first position sees only itself: its output is its own value vector.
    func testFirstPositionReturnsItsValue() {
        let v: [Float] = [1, 2, 3, 4]
        var out = [Float](repeating: 0, count: 4)
        out.withUnsafeMutableBufferPointer {
            causalAttention(queries: [9, 9, 9, 9], keys: [1, 1, 1, 1], values: v, into: $0.baseAddress!, tokens: 1,
                            startPosition: 0, heads: 1, kvHeads: 1, headDim: 4)
        }
        XCTAssertEqual(out, v)
    }
}

final class AttentionGEMMTests: XCTestCase {
    /// The sgemm formulation equals the row-at-a-time kernel, across several row blocks and
    /// after a cached prefix.
    func testMatchesRowKernel() {
        let heads = 4, kvHeads = 2, d = 16, start = 5, tokens = attentionRowBlock + 37, positions = start + tokens
        var random = SeededRandom(seed: 22)
        let q = (0..<(tokens * heads * d)).map { _ in random.nextGaussian() }
        let k = (0..<(positions * kvHeads * d)).map { _ in random.nextGaussian() }
        let v = (0..<(positions * kvHeads * d)).map { _ in random.nextGaussian() }
        var rowwise = [Float](repeating: .nan, count: tokens * heads * d)
        var blocked = rowwise
        var scores = [Float](repeating: .nan, count: attentionRowBlock * positions)
        rowwise.withUnsafeMutableBufferPointer {
            causalAttention(queries: q, keys: k, values: v, into: $0.baseAddress!, tokens: tokens,
                            startPosition: start, heads: heads, kvHeads: kvHeads, headDim: d)
        }
        blocked.withUnsafeMutableBufferPointer { out in
            scores.withUnsafeMutableBufferPointer {
                causalAttentionGEMM(queries: q, keys: k, values: v, into: out.baseAddress!, tokens: tokens,
                                    startPosition: start, heads: heads, kvHeads: kvHeads, headDim: d,
                                    scores: $0.baseAddress!)
            }
        }
        for (a, b) in zip(rowwise, blocked) { XCTAssertEqual(a, b, accuracy: 1e-5) }
    }
}
