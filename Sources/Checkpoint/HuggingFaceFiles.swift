#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif
import Foundation

/// File plumbing shared by the Hugging Face readers and writers: JSON files named in errors,
/// and writes that never leave a half-written file behind (temp file in the same directory,
/// fsync, then rename over the destination).

/// Parses the JSON file at `path`; a missing file or bad JSON is a `CheckpointError` naming it.
public func readJSONFile(_ path: String) throws -> JSONValue {
    let file = try MappedFile(path: path)
    do {
        return try JSONValue(parsing: file.bytes)
    } catch let e as JSONParseError {
        throw CheckpointError.invalid(path, detail: e.description)
    }
}

/// The text file at `path`; a missing file or invalid UTF-8 is a `CheckpointError` naming it.
public func readUTF8File(_ path: String) throws -> String {
    let file = try MappedFile(path: path)
    guard let text = String(validating: file.bytes, as: UTF8.self) else {
        throw CheckpointError.invalid(path, detail: "is not valid UTF-8 text")
    }
    return text
}

/// Writes `value` as indented JSON, atomically.
public func writeJSONFile(_ value: JSONValue, to path: String) throws {
    try writeFileAtomically(path) { out in try out.write(Array(value.serialized(indent: 2).utf8)) }
}

/// A file open for sequential writing; errors name the final destination.
public final class OutputFile {
    let fd: Int32
    let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = systemWrite(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw CheckpointError.unreadable(path, reason: "write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }
}

/// Creates `path` through a temporary sibling that is renamed over it only once `body` has
/// written everything and the data is on disk, so readers see the old file or the new one.
public func writeFileAtomically(_ path: String, _ body: (OutputFile) throws -> Void) throws {
    let dir = (path as NSString).deletingLastPathComponent
    let name = (path as NSString).lastPathComponent
    let tmp = ((dir.isEmpty ? "." : dir) as NSString).appendingPathComponent(".\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
        throw CheckpointError.unreadable(path, reason: "cannot create: \(String(cString: strerror(errno)))")
    }
    var renamed = false
    defer {
        if !renamed { unlink(tmp) }
    }
    do {
        try body(OutputFile(fd: fd, path: path))
        guard fsync(fd) == 0 else {
            throw CheckpointError.unreadable(path, reason: "fsync failed: \(String(cString: strerror(errno)))")
        }
    } catch {
        close(fd)
        throw error
    }
    guard close(fd) == 0 else {
        throw CheckpointError.unreadable(path, reason: "close failed: \(String(cString: strerror(errno)))")
    }
    guard rename(tmp, path) == 0 else {
        throw CheckpointError.unreadable(path, reason: "rename failed: \(String(cString: strerror(errno)))")
    }
    renamed = true
}

func joinPath(_ directory: String, _ name: String) -> String {
    (directory as NSString).appendingPathComponent(name)
}

func fileExists(_ path: String) -> Bool {
    var isDir: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && !isDir.boolValue
}

func directoryExists(_ path: String) -> Bool {
    var isDir: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
}
