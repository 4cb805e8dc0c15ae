import Foundation
import Checkpoint

/// The sweep's output directory:
///
///     sweep.json                 settings the cached figures depend on (checked on resume)
///     models/<scheme>/           each quantized model (the pipeline's own resumable output)
///     results/<scheme>.json      one finished row per scheme; results/original.json
///     cache/eval.ids             the evaluation text's token ids
///     cache/calibration.ids      the calibration text's token ids
///     cache/original.topk        the original model's top-k log-probs (the KLD reference)
///     results.csv, results.json, results.md, tradeoff.svg
///
/// Every file is written through a temporary sibling and a rename, so a sweep killed at any
/// instant leaves each file whole or absent, and a rerun continues from what is whole.
struct SweepDirectory {
    let root: String

    func path(_ components: String...) -> String {
        components.reduce(root) { ($0 as NSString).appendingPathComponent($1) }
    }

    func model(_ scheme: String) -> String { path("models", scheme) }
    func result(_ scheme: String) -> String { path("results", scheme + ".json") }
    var evalTokens: String { path("cache", "eval.ids") }
    var calibrationTokens: String { path("cache", "calibration.ids") }
    var referenceLogProbs: String { path("cache", "original.topk") }

    /// Creates the layout and records `settings`, or checks them against an earlier run's.
    func prepare(settings: JSONValue) throws {
        for sub in ["models", "results", "cache"] {
            do {
                try FileManager.default.createDirectory(atPath: path(sub), withIntermediateDirectories: true)
            } catch {
                throw SweepError("--out \(root): cannot create \(sub)/: \(error.localizedDescription)")
            }
        }
        let file = path("sweep.json")
        if FileManager.default.fileExists(atPath: file) {
            let saved = try readJSONFile(file)
            if let difference = firstDifference(saved, settings) {
                throw SweepError("--out \(root) holds a sweep made with other settings (\(difference)); use another --out or remove it")
            }
        } else {
            try writeJSONFile(settings, to: file)
        }
    }

    func firstDifference(_ saved: JSONValue, _ now: JSONValue) -> String? {
        for (key, value) in now.members ?? [] where saved[key] != value {
            let before = saved[key]?.serialized(indent: nil) ?? "absent"
            return "\(key) was \(before), now \(value.serialized(indent: nil))"
        }
        return nil
    }

    func readRow(_ scheme: String) throws -> SweepRow? {
        let file = result(scheme)
        guard FileManager.default.fileExists(atPath: file) else { return nil }
        return try SweepRow(json: try readJSONFile(file), source: file)
    }

    func writeRow(_ row: SweepRow, as scheme: String) throws {
        try writeJSONFile(row.json, to: result(scheme))
    }

    func writeText(_ text: String, to name: String) throws {
        try writeFileAtomically(path(name)) { try $0.write(Array(text.utf8)) }
    }
}

/// Token ids cached on disk: "AQLMIDS1", UInt64 byte count of the text they came from, then
/// Int32 ids, little-endian. A cache whose recorded byte count differs from the text's
/// current size is stale and ignored.
enum TokenCache {
    static let magic = Array("AQLMIDS1".utf8)

    static func load(_ path: String, sourceBytes: Int) -> [Int]? {
        guard let data = FileManager.default.contents(atPath: path), data.count >= 16, (data.count - 16) % 4 == 0 else {
            return nil
        }
        let bytes = [UInt8](data)
        guard Array(bytes[0..<8]) == magic, readUInt64(bytes, at: 8) == UInt64(sourceBytes) else { return nil }
        return stride(from: 16, to: bytes.count, by: 4).map { Int(Int32(bitPattern: UInt32(truncatingIfNeeded: readUInt64(bytes, at: $0, width: 4)))) }
    }

    static func save(_ ids: [Int], to path: String, sourceBytes: Int) throws {
        var bytes = magic
        bytes.reserveCapacity(16 + 4 * ids.count)
        appendLittleEndian(UInt64(sourceBytes), width: 8, to: &bytes)
        for id in ids { appendLittleEndian(UInt64(UInt32(truncatingIfNeeded: id)), width: 4, to: &bytes) }
        try writeFileAtomically(path) { try $0.write(bytes) }
    }

    static func readUInt64(_ bytes: [UInt8], at offset: Int, width: Int = 8) -> UInt64 {
        (0..<width).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    static func appendLittleEndian(_ value: UInt64, width: Int, to bytes: inout [UInt8]) {
        for i in 0..<width { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))) }
    }
}

/// Bytes of a file, or of all regular files directly in a directory.
func storedBytes(_ path: String) -> Int {
    let fm = FileManager.default
    var isDirectory: ObjCBool = false
    guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else { return 0 }
    func size(_ p: String) -> Int { ((try? fm.attributesOfItem(atPath: p))?[.size] as? NSNumber)?.intValue ?? 0 }
    guard isDirectory.boolValue else { return size(path) }
    let names = (try? fm.contentsOfDirectory(atPath: path)) ?? []
    return names.reduce(0) { $0 + size((path as NSString).appendingPathComponent($1)) }
}
