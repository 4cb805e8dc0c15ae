import Foundation
import XCTest
import Checkpoint

/// Runs the built `aqlm` binary as users do: a subprocess with arguments, stdout and stderr
/// captured to files (no pipe can fill up and stall it), and a deadline after which it is
/// killed and the test fails instead of hanging.

/// The `aqlm` executable built beside this test bundle (SwiftPM puts products and the
/// `.xctest` in the same directory, whatever the scratch path or configuration).
func aqlmExecutable() throws -> String {
    var candidates: [URL] = []
    if let executable = Bundle.main.executableURL { candidates.append(executable.deletingLastPathComponent()) }
    candidates.append(Bundle.main.bundleURL)
    candidates.append(Bundle.main.bundleURL.deletingLastPathComponent())
    candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
    for directory in candidates {
        let path = directory.appendingPathComponent("aqlm").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    throw CLITestError("no aqlm executable beside the test bundle (looked in \(candidates.map(\.path))); "
        + "build it with `swift build -c release --build-tests`")
}

struct CLITestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

struct CLIResult {
    var arguments: [String]
    var status: Int32
    /// False when the process died from a signal (a crash, or our timeout kill).
    var exited: Bool
    var stdout: String
    var stderr: String
    var seconds: Double

    var stderrLines: [String] { stderr.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
    var command: String { "aqlm " + arguments.joined(separator: " ") }
}

/// A started `aqlm` process; `wait` enforces the deadline.
final class CLIProcess {
    let process = Process()
    let arguments: [String]
    private let stdoutPath: String
    private let stderrPath: String
    private let started = Date()

    /// `environment`: variables set on top of the test's own (e.g. XDG_CACHE_HOME).
    init(_ arguments: [String], scratch: String, environment: [String: String] = [:]) throws {
        self.arguments = arguments
        let id = UUID().uuidString
        stdoutPath = scratch + "/stdout-\(id)"
        stderrPath = scratch + "/stderr-\(id)"
        FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: try aqlmExecutable())
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// Waits for the exit; past `timeout` seconds the process is killed and the result says so.
    func wait(timeout: Double) -> (CLIResult, timedOut: Bool) {
        let deadline = started.addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(2_000) }
        let timedOut = process.isRunning
        if timedOut { kill(pid, SIGKILL) }
        process.waitUntilExit()
        let result = CLIResult(
            arguments: arguments, status: process.terminationStatus, exited: process.terminationReason == .exit,
            stdout: (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "",
            seconds: Date().timeIntervalSince(started))
        try? FileManager.default.removeItem(atPath: stdoutPath)
        try? FileManager.default.removeItem(atPath: stderrPath)
        return (result, timedOut)
    }
}

class CLITestCase: XCTestCase {
    private(set) var directory = ""

    override func setUpWithError() throws {
        let base = FileManager.default.isWritableFile(atPath: "/dev/shm") ? "/dev/shm/" : NSTemporaryDirectory()
        directory = base + "aqlm-cli-tests-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func path(_ name: String) -> String { directory + "/" + name }

    /// Runs `aqlm arguments`; a timeout or a death by signal fails the test.
    @discardableResult
    func run(_ arguments: [String], timeout: Double = 30, environment: [String: String] = [:],
             file: StaticString = #filePath, line: UInt = #line) throws -> CLIResult {
        let (result, timedOut) = try CLIProcess(arguments, scratch: directory, environment: environment).wait(timeout: timeout)
        XCTAssertFalse(timedOut, "\(result.command) still running after \(timeout) s; killed", file: file, line: line)
        XCTAssertTrue(result.exited || timedOut, "\(result.command) died from signal \(result.status)\nstderr: \(result.stderr)",
                      file: file, line: line)
        return result
    }

    /// Runs `aqlm arguments` and requires success; returns stdout.
    @discardableResult
    func succeed(_ arguments: [String], timeout: Double = 30, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try run(arguments, timeout: timeout, file: file, line: line)
        XCTAssertEqual(r.status, 0, "\(r.command) failed:\n\(r.stderr)", file: file, line: line)
        return r.stdout
    }

    /// The bad-input contract: a normal non-zero exit, nothing on stdout, and exactly one line
    /// on stderr, `Error: ...`, that contains each of `mentions` (the file, tensor or argument).
    func assertOneLineError(_ arguments: [String], mentions: [String], environment: [String: String] = [:],
                            file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try run(arguments, environment: environment, file: file, line: line)
        XCTAssertNotEqual(r.status, 0, "\(r.command) should fail", file: file, line: line)
        XCTAssertEqual(r.stdout, "", "\(r.command): nothing on stdout", file: file, line: line)
        XCTAssertEqual(r.stderrLines.count, 1, "\(r.command): one line on stderr, got:\n\(r.stderr)", file: file, line: line)
        let message = r.stderrLines.first ?? ""
        XCTAssertTrue(message.hasPrefix("Error: "), "\(r.command): \(message)", file: file, line: line)
        for m in mentions {
            XCTAssertTrue(message.contains(m), "\(r.command): '\(message)' does not mention '\(m)'", file: file, line: line)
        }
    }

    /// Parses stdout as exactly one JSON object on one line.
    func jsonObject(_ stdout: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let trimmed = stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertFalse(trimmed.contains("\n"), "one line of JSON, got:\n\(stdout.prefix(500))", file: file, line: line)
        let value = try JSONSerialization.jsonObject(with: Data(trimmed.utf8), options: [.fragmentsAllowed])
        return try XCTUnwrap(value as? [String: Any], "not a JSON object: \(trimmed.prefix(200))", file: file, line: line)
    }

    // MARK: - Fixtures

    /// The tiny random model as an F32 GGUF; `edit` may change the weights before writing.
    @discardableResult
    func tinyGGUF(_ name: String = "tiny.gguf", seed: UInt64 = 1, config: LlamaConfig = TinyModel.config,
                  edit: (inout ModelWeights) -> Void = { _ in }) throws -> String {
        var weights = TinyModel.weights(config: config, seed: seed)
        edit(&weights)
        let p = path(name)
        try weights.writeGGUF(to: p, name: "tiny-\(seed)")
        return p
    }

    /// English-like text from a fixed word list and a fixed LCG: the same bytes on every run.
    @discardableResult
    func writeText(_ name: String, words: Int, seed: UInt64 = 12345) throws -> String {
        let vocabulary = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "into", "garden", "where", "there",
                          "were", "green", "trees", "in", "morning", "light", "an", "old", "man", "reading", "his", "paper"]
        var state = seed
        var out: [String] = []
        for i in 0..<words {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            out.append(vocabulary[Int((state >> 33) % UInt64(vocabulary.count))])
            if i % 12 == 11 { out[out.count - 1] += ".\n" }
        }
        let p = path(name)
        try Data(out.joined(separator: " ").utf8).write(to: URL(fileURLWithPath: p))
        return p
    }
}
