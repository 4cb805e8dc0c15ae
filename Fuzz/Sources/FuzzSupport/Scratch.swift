#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The bytes libFuzzer hands a harness (a null pointer when the input is empty).
public func fuzzInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: data, count: size)
}

/// Files a harness writes its input into: the parsers under test read paths, not memory.
/// tools/fuzz.sh points `AQLM_FUZZ_SCRATCH` at a fresh directory on tmpfs and removes it
/// afterwards; without it, a directory of this process under the system's temporary directory.
public enum Scratch {
    public static let directory: String = {
        let dir: String
        if let given = ProcessInfo.processInfo.environment["AQLM_FUZZ_SCRATCH"], !given.isEmpty {
            dir = (given as NSString).appendingPathComponent("\(getpid())")
        } else {
            dir = NSTemporaryDirectory() + "aqlm-fuzz-\(getpid())"
        }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            harnessFailure("cannot create scratch directory \(dir): \(error)")
        }
        return dir
    }()

    public static func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }

    /// Replaces the file at `path` with `bytes` (not atomically: nothing reads it concurrently).
    public static func write(_ bytes: UnsafeRawBufferPointer, to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { harnessFailure("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { harnessFailure("cannot write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    public static func write(_ bytes: [UInt8], to path: String) {
        bytes.withUnsafeBytes { write($0, to: path) }
    }

    /// A fresh directory under the scratch directory (removed first if it exists).
    public static func freshDirectory(_ name: String) -> String {
        let dir = path(name)
        try? FileManager.default.removeItem(atPath: dir)
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            harnessFailure("cannot create \(dir): \(error)")
        }
        return dir
    }
}

/// A fault of the harness itself (not a finding in the code under test): one line and exit 2.
public func harnessFailure(_ message: String) -> Never {
    FileHandle.standardError.write(Data("fuzz harness: \(message)\n".utf8))
    exit(2)
}

/// A property of the code under test that must hold for every input: a violation is a finding,
/// reported like a crash (libFuzzer saves the input).
public func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() {
        FileHandle.standardError.write(Data("fuzz property violated: \(message())\n".utf8))
        abort()
    }
}

/// Seed corpora are made by the harnesses themselves from small real files the project writes
/// (TinyModel's GGUF, Hugging Face directory and packed checkpoint): when `AQLM_FUZZ_WRITE_SEEDS`
/// names a directory, the harness writes `make()`'s inputs there, one file each, and exits.
public func writeSeedsIfAsked(_ make: () throws -> [(name: String, bytes: [UInt8])]) {
    guard let dir = ProcessInfo.processInfo.environment["AQLM_FUZZ_WRITE_SEEDS"], !dir.isEmpty else { return }
    do {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let seeds = try make()
        for seed in seeds {
            Scratch.write(seed.bytes, to: (dir as NSString).appendingPathComponent(seed.name))
        }
        print("wrote \(seeds.count) seeds to \(dir)")
    } catch {
        harnessFailure("cannot make seeds: \(error)")
    }
    try? FileManager.default.removeItem(atPath: Scratch.directory)
    exit(0)
}

/// The contents of a file, or a harness failure.
public func fileBytes(_ path: String) -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else { harnessFailure("cannot read \(path)") }
    return [UInt8](data)
}
