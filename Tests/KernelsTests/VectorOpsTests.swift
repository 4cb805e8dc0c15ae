import Foundation
import Kernels
import XCTest

final class VectorOpsTests: XCTestCase {
    /// Deterministic test vectors with awkward lengths (SIMD body + tail).
    func vector(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var random = SeededRandom(seed: seed)
        return (0..<n).map { _ in scale * random.nextGaussian() }
    }

    func testExpMatchesFoundationAcrossTheFloatRange() {
        var worst: Float = 0
        var x: Float = -87
        while x <= 88 {
            let lanes = SIMD16<Float>((0..<16).map { x + Float($0) * 0.0037 })
            let got = Kernels.exp(lanes)
            for i in 0..<16 {
                let expected = Foundation.exp(Double(lanes[i]))
                worst = max(worst, Float(abs(Double(got[i]) - expected) / expected))
            }
            x += 0.0591
        }
        XCTAssertLessThan(worst, 4e-7, "worst relative error of the vector exp")
        let edges = Kernels.exp(SIMD16<Float>(repeating: -.infinity))
        XCTAssertEqual(edges, SIMD16(repeating: 0))
        XCTAssertEqual(Kernels.exp(SIMD16<Float>(repeating: 0)), SIMD16(repeating: 1))
        XCTAssertEqual(Kernels.exp(SIMD16<Float>(repeating: -100)), SIMD16(repeating: 0))
    }

    func testDotAddAndScaleAgainstDoubleLoops() {
        for n in [1, 15, 16, 17, 64, 100, 1000] {
            let a = vector(n, seed: 1), b = vector(n, seed: 2)
            let expected = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            XCTAssertEqual(Double(dot(a, b, count: n)), expected, accuracy: 1e-5 * Double(n).squareRoot())

            var y = b
            y.withUnsafeMutableBufferPointer { addScaled(a, 0.5, into: $0.baseAddress!, count: n) }
            for i in 0..<n { XCTAssertEqual(y[i], b[i] + 0.5 * a[i], accuracy: 1e-6) }
            y.withUnsafeMutableBufferPointer { add(a, into: $0.baseAddress!, count: n) }
            for i in 0..<n { XCTAssertEqual(y[i], b[i] + 1.5 * a[i], accuracy: 1e-5) }
            y.withUnsafeMutableBufferPointer { scale($0.baseAddress!, by: -2, count: n) }
            for i in 0..<n { XCTAssertEqual(y[i], -2 * (b[i] + 1.5 * a[i]), accuracy: 1e-5) }
        }
    }

    /// The dense decode matvec against Double row sums, over shapes with row tails (not a
    /// multiple of 4 or of the 64-row items) and column tails (not a multiple of 16 or 32), and
    /// bit-identical at 1, 2 and 3 workers and at any item size (items start at multiples of 4 rows).
    func testDenseMatvecMatchesDoubleAndIsBitIdenticalAtOneTwoThreeWorkers() {
        let saved = Threads.count
        defer { Threads.set(saved) }
        for (rows, columns) in [(5, 37), (3, 8), (130, 896), (333, 200), (67, 1000)] {
            let w = vector(rows * columns, seed: UInt64(rows), scale: 0.1), x = vector(columns, seed: UInt64(columns))
            var outputs: [[Float]] = []
            // Three worker counts at the default item size, then two more item sizes at two workers.
            let savedRows = DenseMatvec.rowsPerItem
            defer { DenseMatvec.rowsPerItem = savedRows }
            for (workers, itemRows) in [(1, savedRows), (2, savedRows), (3, savedRows), (2, 8), (2, 1000)] {
                Threads.set(workers)
                DenseMatvec.rowsPerItem = itemRows
                var y = [Float](repeating: .nan, count: rows)
                y.withUnsafeMutableBufferPointer { denseMatvec(w, rows: rows, columns: columns, x, $0.baseAddress!) }
                outputs.append(y)
            }
            for r in 0..<rows {
                let (expected, magnitude) = referenceDot(w, row: r, width: columns, x)
                XCTAssertEqual(Double(outputs[0][r]), expected, accuracy: 1e-6 * magnitude, "[\(rows),\(columns)] row \(r)")
            }
            XCTAssertEqual(outputs[0].map(\.bitPattern), outputs[1].map(\.bitPattern), "[\(rows),\(columns)] 1 vs 2 workers")
            XCTAssertEqual(outputs[0].map(\.bitPattern), outputs[2].map(\.bitPattern), "[\(rows),\(columns)] 1 vs 3 workers")
            XCTAssertEqual(outputs[0].map(\.bitPattern), outputs[3].map(\.bitPattern), "[\(rows),\(columns)] items of 8 rows")
            XCTAssertEqual(outputs[0].map(\.bitPattern), outputs[4].map(\.bitPattern), "[\(rows),\(columns)] items of 1000 rows")
        }
    }

    func testMaximumAndArgmax() {
        for n in [1, 7, 33, 1000] {
            var x = vector(n, seed: 3)
            let at = n * 2 / 3
            x[at] = 50
            XCTAssertEqual(maximum(x, count: n), 50)
            XCTAssertEqual(argmax(x, count: n), at)
        }
        XCTAssertEqual(argmax([1, 3, 3, 2], count: 4), 1, "ties go to the first index")
        // Ties across and within 16-value blocks, and in the tail past the last whole block.
        var y = vector(100, seed: 4)
        y[70] = 50; y[39] = 50; y[37] = 50
        XCTAssertEqual(argmax(y, count: 100), 37)
        y[37] = 0; y[39] = 0
        XCTAssertEqual(argmax(y, count: 100), 70)
        y[70] = 0; y[98] = 50
        XCTAssertEqual(argmax(y, count: 100), 98)
    }

    func testSoftmaxAndLogSumExpAgainstDouble() {
        for n in [1, 5, 16, 49, 3000] {
            let x = vector(n, seed: 4, scale: 8)
            let m = Double(x.max()!)
            let total = x.reduce(0.0) { $0 + Foundation.exp(Double($1) - m) }
            XCTAssertEqual(Double(logSumExp(x, count: n)), m + Foundation.log(total), accuracy: 1e-5 * max(1, abs(m)))
            var p = x
            p.withUnsafeMutableBufferPointer { softmax($0.baseAddress!, count: n) }
            for i in 0..<n { XCTAssertEqual(Double(p[i]), Foundation.exp(Double(x[i]) - m) / total, accuracy: 1e-6) }
        }
        // Large logits must not overflow: the maximum is subtracted first.
        XCTAssertEqual(logSumExp([1000, 1000], count: 2), 1000 + Float(Foundation.log(2.0)), accuracy: 1e-3)
        XCTAssertEqual(logSumExp([-Float.infinity, 0], count: 2), 0)
    }

    func testSwiGLU() {
        for n in [3, 16, 1537] {
            let gate = vector(n, seed: 5, scale: 4), up = vector(n, seed: 6)
            var out = [Float](repeating: .nan, count: n)
            out.withUnsafeMutableBufferPointer { swiGLU(gate: gate, up: up, into: $0.baseAddress!, count: n) }
            for i in 0..<n {
                let g = Double(gate[i])
                XCTAssertEqual(Double(out[i]), g / (1 + Foundation.exp(-g)) * Double(up[i]), accuracy: 1e-5)
            }
        }
    }
}
