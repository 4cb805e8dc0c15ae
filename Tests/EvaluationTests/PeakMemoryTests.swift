import Evaluation
import Foundation
import XCTest

/// The peak resident size a stage reports: VmHWM, and its reset between stages of one process.
final class PeakMemoryTests: XCTestCase {
    func testResetStartsANewPeakBelowAnEarlierStagesPeak() throws {
        let bytes = 256 << 20
        do {
            // Touched pages count; a block this large is its own mapping, returned when freed.
            let block = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 4096)
            defer { block.deallocate() }
            for offset in stride(from: 0, to: bytes, by: 4096) { block.storeBytes(of: 1, toByteOffset: offset, as: UInt8.self) }
        }
        let before = try XCTUnwrap(peakResidentBytes())
        resetPeakResidentBytes()
        let after = try XCTUnwrap(peakResidentBytes())
        XCTAssertLessThanOrEqual(after + bytes / 2, before, "the 256 MB stage's peak is forgotten (\(before) -> \(after))")
        XCTAssertGreaterThan(after, 0)
    }
}
