import Foundation
import XCTest
import Checkpoint

/// Little-endian byte assembly for blocks and hand-made GGUF files.
struct Bytes {
    var data: [UInt8] = []

    mutating func u8(_ v: UInt8) { data.append(v) }
    mutating func u16(_ v: UInt16) { int(v) }
    mutating func u32(_ v: UInt32) { int(v) }
    mutating func u64(_ v: UInt64) { int(v) }
    mutating func i32(_ v: Int32) { int(v) }
    mutating func f32(_ v: Float) { int(v.bitPattern) }
    /// IEEE half via Swift's own Float16, independent of the code under test.
    mutating func half(_ v: Float) { int(Float16(v).bitPattern) }
    mutating func string(_ s: String) { u64(UInt64(s.utf8.count)); data += Array(s.utf8) }
    mutating func zeros(_ n: Int) { data += [UInt8](repeating: 0, count: n) }
    mutating func pad(to alignment: Int) { zeros((alignment - data.count % alignment) % alignment) }

    private mutating func int<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { data += $0 }
    }
}

/// Deterministic test values (64-bit LCG, Knuth's constants): tests need variety, not quality.
struct TestLCG {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return state >> 33
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// A fresh directory per test case, removed afterwards.
class TemporaryDirectoryTestCase: XCTestCase {
    private(set) var directory = ""

    override func setUpWithError() throws {
        // tmpfs when there is one: rewriting a file on this machine's ext4 costs ~5 ms, and the
        // corruption tests write thousands of small files.
        let base = FileManager.default.isWritableFile(atPath: "/dev/shm") ? "/dev/shm/" : NSTemporaryDirectory()
        directory = base + "aqlm-checkpoint-tests-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func path(_ name: String) -> String { directory + "/" + name }

    @discardableResult
    func write(_ bytes: [UInt8], _ name: String) throws -> String {
        let p = path(name)
        try writeFile(bytes, p)
        return p
    }
}

/// Dequantizes `count` elements of `raw` through the public entry point.
func dequantized(_ type: GGMLType, _ raw: [UInt8], count: Int) -> [Float] {
    precondition(type.byteCount(elements: count) == raw.count, "test block has the wrong size")
    var out = [Float](repeating: .nan, count: count)
    raw.withUnsafeBytes { r in out.withUnsafeMutableBufferPointer { dequantize(type, r, into: $0) } }
    return out
}

/// Element-wise equality, reporting the number of differing elements and the first one.
func assertSameValues(_ got: [Float], _ expected: [Float], _ what: String,
                      file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.count, expected.count, "\(what): element count", file: file, line: line)
    let wrong = zip(got, expected).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
    guard let first = wrong.first else { return }
    XCTFail("\(what): \(wrong.count) elements differ, first at \(first): \(got[first]) vs expected \(expected[first])",
            file: file, line: line)
}

/// Plain POSIX write (Foundation's Data.write syncs to disk, ~10 ms a file: too slow for loops).
func writeFile(_ bytes: [UInt8], _ path: String) throws {
    guard let f = fopen(path, "wb") else { throw CocoaError(.fileWriteUnknown) }
    defer { fclose(f) }
    guard bytes.withUnsafeBytes({ fwrite($0.baseAddress, 1, $0.count, f) }) == bytes.count else {
        throw CocoaError(.fileWriteUnknown)
    }
}
