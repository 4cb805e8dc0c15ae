import Kernels
import XCTest

final class QuantizerKernelsTests: XCTestCase {
    func gaussian(_ n: Int, seed: UInt64) -> [Float] {
        var random = SeededRandom(seed: seed)
        return (0..<n).map { _ in random.nextGaussian() }
    }

    /// Scores and 16-chunk minima against a scalar reference, for candidate counts with and
    /// without the 64-wide body, a 16-wide rest and a scalar tail.
    func testScoresAndChunkMinimaMatchAScalarReference() {
        for (count, dims) in [(256, 8), (64, 8), (80, 4), (200, 8), (7, 3)] {
            let query = gaussian(dims, seed: 1), table = gaussian(dims * count, seed: 2), bias = gaussian(count, seed: 3)
            var scores = [Float](repeating: .nan, count: count)
            var minima = [Float](repeating: .nan, count: (count + 15) / 16)
            scoreCandidates(query: query, dims: dims, table: table, count: count, bias: bias, biasScale: 0.5, offset: 2,
                            into: &scores, chunkMinima: &minima)
            for c in 0..<count {
                var expected: Float = 2 + 0.5 * bias[c]
                for a in 0..<dims { expected += query[a] * table[a * count + c] }
                XCTAssertEqual(scores[c], expected, accuracy: 1e-4, "count \(count), candidate \(c)")
            }
            for k in 0..<minima.count {
                XCTAssertEqual(minima[k], scores[(16 * k)..<min(16 * k + 16, count)].min()!, "count \(count), chunk \(k)")
            }
        }
    }

    /// The beam's top-k equals a full sort by (score, index), ties included.
    func testSelectKeepsTheSmallestScoresWithLowerIndicesFirstOnTies() {
        let count = 8 * 256
        var scores = gaussian(count, seed: 4).map { ($0 * 8).rounded() }   // many exact ties
        scores[100] = -50; scores[1900] = -50
        var minima = [Float](repeating: 0, count: count / 16)
        for k in minima.indices { minima[k] = scores[(16 * k)..<(16 * k + 16)].min()! }
        for capacity in [1, 8, 33] {
            var selector = SmallestValues(capacity: capacity)
            defer { selector.deallocate() }
            selector.select(scores, chunkMinima: minima, count: count)
            let expected = scores.indices.sorted { (scores[$0], $0) < (scores[$1], $1) }.prefix(capacity)
            XCTAssertEqual((0..<selector.count).map { selector.index($0) }, Array(expected), "capacity \(capacity)")
            XCTAssertEqual((0..<selector.count).map { selector.value($0) }, expected.map { scores[$0] })
        }
    }

    /// The beam search updates only the columns it has not visited yet; each element must come
    /// out exactly as in an update over the whole row, whichever path (32-wide, 16-wide, scalar
    /// tail) it falls in either way.
    func testUpdateOverASuffixEqualsTheWholeUpdateOnThoseElements() {
        let count = 77, rowCount = 8
        let source = gaussian(count, seed: 4), rows = gaussian(rowCount * count, seed: 5)
        let coefficients = gaussian(rowCount, seed: 6)
        var whole = [Float](repeating: 0, count: count)
        subtractRowCombination(source: source, destination: &whole, count: count, rows: rows, rowStride: count,
                               coefficients: coefficients, rowCount: rowCount)
        for start in [1, 8, 13, 16, 45, 61, 76] {
            var suffix = [Float](repeating: .nan, count: count - start)
            source.withUnsafeBufferPointer { source in
                rows.withUnsafeBufferPointer { rows in
                    subtractRowCombination(source: source.baseAddress! + start, destination: &suffix, count: count - start,
                                           rows: rows.baseAddress! + start, rowStride: count,
                                           coefficients: coefficients, rowCount: rowCount)
                }
            }
            XCTAssertEqual(suffix.map(\.bitPattern), whole[start...].map(\.bitPattern), "suffix from \(start)")
        }
        var reference = source
        for i in 0..<count {
            for a in 0..<rowCount { reference[i] -= coefficients[a] * rows[a * count + i] }
        }
        for i in 0..<count { XCTAssertEqual(whole[i], reference[i], accuracy: 1e-5 * (1 + abs(reference[i]))) }
    }
}
