import Foundation

/// Resident-memory probes (Linux /proc; nil or false elsewhere). `aqlm bench` separates what
/// loading a model costs from what running it holds: reset the peak after loading, run, read the
/// peak again; a sweep resets it before each quantization so its report holds that stage's peak.

/// The process's peak resident set size in bytes (VmHWM), since it started or the last
/// `resetPeakResidentBytes()`.
public func peakResidentBytes() -> Int? {
    statusKilobytes("VmHWM:").map { $0 * 1024 }
}

/// The process's current resident set size in bytes (VmRSS).
public func currentResidentBytes() -> Int? {
    statusKilobytes("VmRSS:").map { $0 * 1024 }
}

/// Resets the peak resident set size (VmHWM) to the current one (Linux ≥ 4.0: "5" written to
/// /proc/self/clear_refs). Returns false where that is not possible.
@discardableResult
public func resetPeakResidentBytes() -> Bool {
    guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
    defer { try? handle.close() }
    do {
        try handle.write(contentsOf: Data("5".utf8))
        return true
    } catch {
        return false
    }
}

/// The kB figure of one /proc/self/status line ("VmRSS:    123456 kB").
private func statusKilobytes(_ key: String) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix(key) {
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        return fields.count >= 2 ? Int(fields[1]) : nil
    }
    return nil
}
