import Foundation
import Finetune
import XCTest

/// Calibration activations in memory or in an unlinked file: the same values either way, copies
/// that do not see each other's changes, nothing left in the directory, and a directory that
/// cannot hold the file named.
final class SequenceActivationsTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "activations-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func sequence(_ s: Int, width: Int) -> [Float] { (0..<width).map { Float(s * 1000 + $0) * 0.25 - 3 } }

    func testFileAndMemoryHoldTheSameSequencesAndCopiesStayApart() throws {
        let count = 5, width = 4099
        for place in [nil, directory] {
            var a = try SequenceActivations(count: count, width: width, directory: place)
            XCTAssertEqual(a.isInFile, place != nil)
            XCTAssertEqual(a.count, count)
            XCTAssertEqual(a[3], [Float](repeating: 0, count: width))
            for s in 0..<count { a[s] = sequence(s, width: width) }
            var b = a
            b[2] = [Float](repeating: 7, count: width)
            a[4][10] = -1
            XCTAssertEqual(a[2], sequence(2, width: width))
            XCTAssertEqual(b[2], [Float](repeating: 7, count: width))
            XCTAssertEqual(b[4], sequence(4, width: width))
            XCTAssertEqual(a[4][10], -1)
            XCTAssertEqual(Array(a.indices), Array(0..<count))
            try a.check()
            try b.check()
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), [], "the files are unlinked at once")
    }

    func testADirectoryThatCannotHoldTheFileIsNamed() {
        let missing = directory + "/no/such/dir"
        XCTAssertThrowsError(try SequenceActivations(count: 2, width: 8, directory: missing)) {
            XCTAssertTrue("\($0)".contains(missing), "\($0)")
        }
    }
}
