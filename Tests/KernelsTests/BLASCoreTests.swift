import Foundation
import Kernels
import XCTest

/// OpenBLAS 0.3.21 falls back to its generic SSE3 kernels (Prescott) on CPUs it does not know;
/// on a CPU with AVX2 and FMA we must not run them (2.35x slower sgemm).
final class BLASCoreTests: XCTestCase {
    func testGenericFallbackIsReplacedOnAnAVX2Machine() throws {
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("flags") }.map { Set($0.split(separator: " ").map(String.init)) } ?? []
        try XCTSkipUnless(flags.contains("avx2") && flags.contains("fma"), "this CPU has no AVX2/FMA")
        try XCTSkipIf(ProcessInfo.processInfo.environment["AQLM_BLAS_CORE"] != nil, "AQLM_BLAS_CORE chooses the kernels")
        let core = BLASCore.applyRequestedCore()
        XCTAssertNotEqual(core.lowercased(), "prescott")
        XCTAssertEqual(core, BLASCore.name)
    }
}
