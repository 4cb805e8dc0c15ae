import Foundation
import Checkpoint
import Finetune
import PackedFormat

/// `<output>.work/`: what a quantization run has finished so far. After each block it holds
/// that block's linears (`block-N.safetensors`), its report (`block-N.json`), and the
/// calibration hidden states entering the next block (`hidden-after-N.f32`, and
/// `hidden-fp-after-N.f32` for the full-precision chain); `progress.json` names the settings
/// fingerprint and the number of finished blocks and is written last, by rename, so a run killed
/// at any instant resumes from a consistent state. The hidden states carry the block count in
/// their names because they are rewritten after every block: under one name, a run killed
/// between writing them and progress.json resumed with states one block ahead of its count.
struct WorkDirectory {
    let path: String
    let fingerprint: String

    init(output: String, fingerprint: String) {
        path = output + ".work"
        self.fingerprint = fingerprint
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Block `index`'s linears.
    func blockFile(_ index: Int) -> String { file("block-\(index).safetensors") }

    /// Blocks already finished by an earlier run with the same settings (0 for a fresh start).
    func finishedBlocks() throws -> Int {
        let progress = file("progress.json")
        guard FileManager.default.fileExists(atPath: progress) else {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            return 0
        }
        let json = try readJSONFile(progress)
        guard json["fingerprint"]?.string == fingerprint else {
            throw PackedFormatError("\(path) holds an unfinished run with different settings; rerun with the same options to resume it, or remove it")
        }
        return json["finished_blocks"]?.int ?? 0
    }

    /// The hidden states entering block `finished` (after `finished` blocks), of the quantized
    /// chain or of the full-precision one.
    func hiddenFile(after finished: Int, fullPrecision: Bool = false) -> String {
        file(fullPrecision ? "hidden-fp-after-\(finished).f32" : "hidden-after-\(finished).f32")
    }

    /// - Parameter fullPrecisionHidden: the full-precision model's hidden states after the
    ///   block, kept when fine-tuning targets them.
    func saveBlock(_ index: Int, linears: [String: StoredLinear], report: BlockReport, hidden: SequenceActivations,
                   fullPrecisionHidden: SequenceActivations? = nil) throws {
        try BlockCheckpoint.write(linears, to: blockFile(index))
        try writeJSONFile(report.json, to: file("block-\(index).json"))
        try saveActivations(hidden, to: hiddenFile(after: index + 1))
        if let fullPrecisionHidden { try saveActivations(fullPrecisionHidden, to: hiddenFile(after: index + 1, fullPrecision: true)) }
        try writeJSONFile(.object([("fingerprint", .string(fingerprint)), ("finished_blocks", .int(index + 1))]),
                          to: file("progress.json"))
        // Only now are the previous block's states no longer the resume point.
        for fullPrecision in [false, true] { try? FileManager.default.removeItem(atPath: hiddenFile(after: index, fullPrecision: fullPrecision)) }
    }

    /// Removes what a killed run left half-written (`writeFileAtomically`'s temporary files) and
    /// hidden states of block counts other than `finished` (from the single-name layout, or a
    /// run killed after progress.json moved on); returns the bytes freed.
    @discardableResult
    func removeStaleFiles(finished: Int) -> Int {
        let keep = Set([hiddenFile(after: finished), hiddenFile(after: finished, fullPrecision: true)].map { ($0 as NSString).lastPathComponent })
        var freed = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
            let stale = name.contains(".tmp-") || (name.hasPrefix("hidden") && name.hasSuffix(".f32") && !keep.contains(name))
            guard stale else { continue }
            freed += ((try? FileManager.default.attributesOfItem(atPath: file(name)))?[.size] as? Int) ?? 0
            try? FileManager.default.removeItem(atPath: file(name))
        }
        return freed
    }

    func loadBlock(_ index: Int, names: [String]) throws -> ([String: StoredLinear], BlockReport) {
        let linears = try BlockCheckpoint.read(names, from: blockFile(index))
        let report = BlockReport(json: try readJSONFile(file("block-\(index).json")))
        return (linears, report)
    }

    private func saveActivations(_ sequences: SequenceActivations, to path: String) throws {
        try writeFileAtomically(path) { out in
            for h in sequences { try h.withUnsafeBytes { try out.write($0) } }
        }
    }

    /// The hidden states saved at `path` (see `hiddenFile`), in files of `spill` when given (see
    /// `SequenceActivations`), or nil when there is no such file.
    func loadHidden(_ path: String, sequences: Int, width: Int, spill: String?) throws -> SequenceActivations? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let mapped = try MappedFile(path: path)
        guard mapped.bytes.count == sequences * width * 4 else {
            throw PackedFormatError("\(path) has \(mapped.bytes.count) bytes, expected \(sequences * width * 4)")
        }
        let floats = mapped.bytes.bindMemory(to: Float.self)
        var hidden = try SequenceActivations(count: sequences, width: width, directory: spill)
        for s in 0..<sequences { hidden[s] = Array(floats[(s * width)..<((s + 1) * width)]) }
        return hidden
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
