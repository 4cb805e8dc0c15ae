import Foundation
import Checkpoint
import Finetune
import PackedFormat

/// `<output>.work/`: what a quantization run has finished so far. After each block it holds
/// that block's linears (`block-N.safetensors`), its report (`block-N.json`), and the
/// calibration hidden states entering the next block (`hidden.f32`); `progress.json` names the
/// settings fingerprint and the number of finished blocks and is written last, by rename, so
/// a run killed at any instant resumes from a consistent state.
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

    /// - Parameter fullPrecisionHidden: the full-precision model's hidden states after the
    ///   block, kept when fine-tuning targets them (`hidden-fp.f32`).
    func saveBlock(_ index: Int, linears: [String: StoredLinear], report: BlockReport, hidden: SequenceActivations,
                   fullPrecisionHidden: SequenceActivations? = nil) throws {
        try BlockCheckpoint.write(linears, to: blockFile(index))
        try writeJSONFile(report.json, to: file("block-\(index).json"))
        try saveActivations(hidden, name: "hidden.f32")
        if let fullPrecisionHidden { try saveActivations(fullPrecisionHidden, name: "hidden-fp.f32") }
        try writeJSONFile(.object([("fingerprint", .string(fingerprint)), ("finished_blocks", .int(index + 1))]),
                          to: file("progress.json"))
    }

    func loadBlock(_ index: Int, names: [String]) throws -> ([String: StoredLinear], BlockReport) {
        let linears = try BlockCheckpoint.read(names, from: blockFile(index))
        let report = BlockReport(json: try readJSONFile(file("block-\(index).json")))
        return (linears, report)
    }

    private func saveActivations(_ sequences: SequenceActivations, name: String) throws {
        try writeFileAtomically(file(name)) { out in
            for h in sequences { try h.withUnsafeBytes { try out.write($0) } }
        }
    }

    /// The saved hidden states, in files of `spill` when given (see `SequenceActivations`).
    func loadHidden(sequences: Int, width: Int, spill: String?, name: String = "hidden.f32") throws -> SequenceActivations {
        let mapped = try MappedFile(path: file(name))
        guard mapped.bytes.count == sequences * width * 4 else {
            throw PackedFormatError("\(file(name)) has \(mapped.bytes.count) bytes, expected \(sequences * width * 4)")
        }
        let floats = mapped.bytes.bindMemory(to: Float.self)
        var hidden = try SequenceActivations(count: sequences, width: width, directory: spill)
        for s in 0..<sequences { hidden[s] = Array(floats[(s * width)..<((s + 1) * width)]) }
        return hidden
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
