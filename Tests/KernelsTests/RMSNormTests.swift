import Foundation
import Kernels
import XCTest

final class RMSNormTests: XCTestCase {
    func testRowsMatchTheDefinition() {
        let rows = 70, n = 37, eps: Float = 1e-5
        var random = SeededRandom(seed: 11)
        let x = (0..<(rows * n)).map { _ in 3 * random.nextGaussian() }
        let weight = (0..<n).map { _ in 1 + 0.1 * random.nextGaussian() }
        var out = [Float](repeating: 0, count: rows * n)
        out.withUnsafeMutableBufferPointer {
            rmsNormRows(x, weight: weight, into: $0.baseAddress!, rows: rows, count: n, epsilon: eps)
        }
        for r in 0..<rows {
            let row = x[(r * n)..<((r + 1) * n)].map(Double.init)
            let rms = (row.reduce(0) { $0 + $1 * $1 } / Double(n) + Double(eps)).squareRoot()
            for i in 0..<n {
                XCTAssertEqual(Double(out[r * n + i]), row[i] / rms * Double(weight[i]), accuracy: 1e-5)
            }
        }
    }

    func testInPlace() {
        var x: [Float] = [3, 4]
        x.withUnsafeMutableBufferPointer {
            rmsNormRows($0.baseAddress!, weight: [1, 2], into: $0.baseAddress!, rows: 1, count: 2, epsilon: 0)
        }
        // rms = sqrt((9 + 16) / 2) = 3.5355...
        XCTAssertEqual(x[0], 3 / Float(12.5).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(x[1], 8 / Float(12.5).squareRoot(), accuracy: 1e-6)
    }
}
