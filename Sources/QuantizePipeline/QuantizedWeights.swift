import Checkpoint
import Kernels
import PackedFormat
import Quantizer

/// A block linear as the pipeline keeps it: AQLM-family codes (stored packed) or, for the
/// scalar baseline, its dequantized weight (stored dense).
public enum StoredLinear: Sendable {
    case additive(AdditiveCode)
    case dense(WeightTensor)

    public func dequantized() -> [Float] {
        switch self {
        case .additive(let code): return code.dequantized()
        case .dense(let t): return t.values
        }
    }
}

/// Per-block results saved in the work directory, so an interrupted run resumes after its last
/// finished block. Codes are stored as I32 and floats as F32: exact, whatever the scheme.
enum BlockCheckpoint {
    static func write(_ linears: [String: StoredLinear], to path: String) throws {
        var writer = SafeTensorsWriter(metadata: ["format": "aqlm-work"])
        for (name, linear) in linears.sorted(by: { $0.key < $1.key }) {
            switch linear {
            case .additive(let c):
                let s = c.scheme
                try writer.add(name + ".codes", shape: [c.dOut, c.groupsPerRow, s.codebookCount], integers: c.codes.map { Int32($0) })
                try writer.add(name + ".codebooks", shape: [s.codebookCount, s.codebookSize, s.groupSize], floats: c.codebooks)
                try writer.add(name + ".scales", shape: [c.dOut], floats: c.scales)
                try writer.add(name + ".scheme", shape: [3], integers: [Int32(s.codebookCount), Int32(s.codeBits), Int32(s.groupSize)])
            case .dense(let t):
                try writer.add(name + ".weight", shape: t.shape, floats: t.values)
            }
        }
        try writer.write(to: path)
    }

    static func read(_ names: [String], from path: String) throws -> [String: StoredLinear] {
        let file = try SafeTensorsFile(path: path)
        var out: [String: StoredLinear] = [:]
        for name in names {
            if let info = file.tensor(name + ".weight") {
                out[name] = .dense(WeightTensor(shape: info.shape, values: try file.floats(info)))
                continue
            }
            let s = try file.integers(name + ".scheme", as: Int32.self)
            guard s.count == 3 else { throw PackedFormatError("\(path): '\(name).scheme' is malformed") }
            let scheme = AQLMScheme(codebookCount: Int(s[0]), codeBits: Int(s[1]), groupSize: Int(s[2]))
            guard let codeInfo = file.tensor(name + ".codes"), codeInfo.shape.count == 3 else {
                throw CheckpointError.missingTensor(path, tensor: name + ".codes")
            }
            let codes = try Self.codes(name, in: file)
            let dOut = codeInfo.shape[0], dIn = codeInfo.shape[1] * scheme.groupSize
            out[name] = .additive(AdditiveCode(scheme: scheme, dOut: dOut, dIn: dIn, codes: codes,
                                               codebooks: try file.floats(name + ".codebooks"),
                                               scales: try file.floats(name + ".scales")))
        }
        return out
    }

    /// The codes of linear `name` (stored as I32 so that any code width round-trips).
    static func codes(_ name: String, in file: SafeTensorsFile) throws -> [UInt16] {
        try file.integers(name + ".codes", as: Int32.self).map { UInt16(truncatingIfNeeded: $0) }
    }
}

/// A finished AQLM-family linear as a run keeps it until the packed file is written: its shape
/// and storage size, and where its block file holds the rest. Nothing of its codes stays in
/// memory (~0.1 GB per block at Llama-3-8B's shapes).
struct SavedLinear {
    let linear: DeferredLinear
    let storageBits: Double

    /// `code` as saved under `name` in the block file `file` (BlockCheckpoint's layout).
    init(code: AdditiveCode, name: String, file: String) {
        storageBits = code.storageBits
        // Each array is read when the writer reaches it, from a map opened for that read only,
        // so a written block's pages do not stay resident either.
        linear = DeferredLinear(
            dOut: code.dOut, dIn: code.dIn,
            codes: { try BlockCheckpoint.codes(name, in: SafeTensorsFile(path: file)) },
            codebooks: { try SafeTensorsFile(path: file).floats(name + ".codebooks") },
            scales: { try SafeTensorsFile(path: file).floats(name + ".scales") })
    }
}
