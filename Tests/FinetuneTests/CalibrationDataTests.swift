import Calibration
import Checkpoint
import Finetune
import Foundation
import Kernels
import XCTest

final class CalibrationDataTests: XCTestCase {
    /// Token i is i, so a window's first token is its start offset.
    let tokens = Array(0..<20_000)

    func testHeldOutWindowsShareNoTokenWithTheTakenOnesNorWithEachOther() throws {
        var rng = SeededRandom(seed: 3)
        let taken = try sampleCalibrationStarts(tokens: tokens, samples: 60, length: 128, source: "t", using: &rng)
        let held = try sampleDisjointWindows(tokens: tokens, count: 8, length: 128, avoiding: taken, source: "t", using: &rng)
        XCTAssertEqual(held.count, 8)
        let starts = held.map { $0[0] }
        for (i, window) in held.enumerated() {
            XCTAssertEqual(window, Array(starts[i]..<(starts[i] + 128)))
            for t in taken { XCTAssertGreaterThanOrEqual(abs(t - starts[i]), 128, "held-out window \(i) overlaps a taken one") }
            for j in 0..<i { XCTAssertGreaterThanOrEqual(abs(starts[j] - starts[i]), 128, "held-out windows \(j) and \(i) overlap") }
        }
        // The same seed gives the same windows.
        var again = SeededRandom(seed: 3)
        let takenAgain = try sampleCalibrationStarts(tokens: tokens, samples: 60, length: 128, source: "t", using: &again)
        XCTAssertEqual(takenAgain, taken)
        XCTAssertEqual(try sampleDisjointWindows(tokens: tokens, count: 8, length: 128, avoiding: taken, source: "t", using: &again), held)
    }

    func testATextWithoutRoomForHeldOutWindowsIsAnErrorNotAHang() throws {
        var rng = SeededRandom(seed: 0)
        let short = Array(tokens.prefix(600))
        // Windows of 256 starting at 0, 200 and 340 leave no start in 0..<344 that is 256 from all.
        XCTAssertThrowsError(try sampleDisjointWindows(tokens: short, count: 1, length: 256, avoiding: [0, 200, 340],
                                                       source: "short.txt", using: &rng)) { error in
            XCTAssertTrue("\(error)".contains("short.txt"), "\(error)")
            XCTAssertTrue("\(error)".contains("held-out"), "\(error)")
        }
    }

    func testFineTuningTrainsOnTheQuantizersWindowsAndHoldsOutOthers() throws {
        let path = NSTemporaryDirectory() + "calibration-data-\(UUID().uuidString).txt"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let text = (0..<400).map { "Sentence \($0) says that the number \($0 * 7 % 13) is not \($0 % 5). " }.joined()
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let sequences = try loadCalibrationSequences(path, tokenizer: TinyModel.tokenizer, samples: 12, length: 24, heldOut: 3, seed: 5)
        let quantizer = try loadCalibrationSequences(path, tokenizer: TinyModel.tokenizer, samples: 12, length: 24, seed: 5)
        XCTAssertEqual(sequences.count, 12)
        XCTAssertEqual(Array(sequences.prefix(9)), Array(quantizer.prefix(9)))
        // No held-out window is any of the quantizer's 12 (their tokens overlap none of them; equal
        // windows would be the plainest overlap).
        for held in sequences.suffix(3) { XCTAssertFalse(quantizer.contains(held)) }
    }
}
