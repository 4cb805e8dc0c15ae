import Foundation
import Checkpoint
import Kernels
import Quantizer

/// The packed AQLM checkpoint: a Hugging Face model directory in the layout of the AQLM
/// reference and its `transformers` integration, so the ecosystem can read it:
///
/// - `config.json` with `quantization_config` {quant_method "aqlm", nbits_per_codebook,
///   num_codebooks, in_group_size, out_group_size 1, linear_weights_not_to_quantize};
/// - `model.safetensors` with, for each quantized linear `<name>`:
///   `<name>.codes` [d_out, d_in/g, M] as int8 (B ≤ 8) or int16 (B ≤ 16): the code's low bits
///   reinterpreted as signed, exactly the reference's `pack_int_data` (c ≥ 2^(B-1) stored as
///   c − 2^B); readers take them modulo 2^B;
///   `<name>.codebooks` [M, 2^B, 1, g] fp16; `<name>.scales` [d_out, 1, 1, 1] fp16;
///   other tensors (embeddings, norms, head) as fp16 (norms fp32);
/// - `tokenizer.json` / `tokenizer_config.json`.
public enum PackedCheckpoint {
    public static func isPacked(directory: String) -> Bool {
        let path = (directory as NSString).appendingPathComponent(HuggingFaceConfig.fileName)
        guard let json = try? readJSONFile(path) else { return false }
        return json["quantization_config"]?["quant_method"]?.string == "aqlm"
    }

    /// Writes `model` into `directory`, which must not exist: everything goes into a sibling
    /// temporary directory first and is renamed into place only when complete, so a crash
    /// never leaves a half-written checkpoint under the final name. `extraFiles` (e.g.
    /// report.json) are written into the same directory before the rename.
    public static func write(_ model: PackedModel, to directory: String, extraFiles: [String: JSONValue] = [:]) throws {
        try write(model, to: directory) { _ in extraFiles }
    }

    /// As above, with the extra files made once the checkpoint's own files are written:
    /// `makeExtraFiles` receives their total size in bytes (a report can then state it).
    public static func write(_ model: PackedModel, to directory: String,
                             makeExtraFiles: (_ checkpointBytes: Int) throws -> [String: JSONValue]) throws {
        try write(model, deferredLinears: [:], to: directory, makeExtraFiles: makeExtraFiles)
    }

    /// As above, with more quantized linears (besides `model.linears`) read only while the file
    /// is written, one tensor at a time: a model whose codes do not all fit in memory is written
    /// from where they were saved. The file is the same as with those codes in `model.linears`.
    public static func write(_ model: PackedModel, deferredLinears: [String: DeferredLinear], to directory: String,
                             makeExtraFiles: (_ checkpointBytes: Int) throws -> [String: JSONValue]) throws {
        let fm = FileManager.default
        guard !fm.fileExists(atPath: directory) else {
            throw PackedFormatError("output \(directory) already exists; choose another path or remove it")
        }
        let temporary = directory + ".partial-\(ProcessInfo.processInfo.processIdentifier)"
        try? fm.removeItem(atPath: temporary)
        do {
            try fm.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        } catch {
            throw PackedFormatError("cannot create \(temporary): \(error.localizedDescription)")
        }
        do {
            try writeContents(model, deferredLinears: deferredLinears, into: temporary)
            for (name, json) in try makeExtraFiles(directoryBytes(temporary)) {
                try writeJSONFile(json, to: (temporary as NSString).appendingPathComponent(name))
            }
            try fm.moveItem(atPath: temporary, toPath: directory)
        } catch {
            try? fm.removeItem(atPath: temporary)
            throw error
        }
    }

    /// Total size of the regular files directly inside `path`.
    public static func directoryBytes(_ path: String) -> Int {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: path) else { return 0 }
        return names.reduce(0) { sum, n in
            let attrs = try? fm.attributesOfItem(atPath: (path as NSString).appendingPathComponent(n))
            return sum + ((attrs?[.size] as? NSNumber)?.intValue ?? 0)
        }
    }

    static func writeContents(_ model: PackedModel, deferredLinears: [String: DeferredLinear] = [:],
                              into directory: String) throws {
        let s = model.scheme
        var writer = SafeTensorsWriter(metadata: ["format": "pt", "quantization": "aqlm \(s)"])
        // The writer orders tensors by dtype and name whatever the order they are added in.
        var linears = deferredLinears
        for (name, code) in model.linears {
            linears[name] = DeferredLinear(dOut: code.dOut, dIn: code.dIn, codes: { code.codes },
                                           codebooks: { code.codebooks }, scales: { code.scales })
        }
        for (name, linear) in linears {
            let codeType: SafeTensorsDType = s.codeBits <= 8 ? .i8 : .i16
            try writer.add(name + ".codes", dtype: codeType, shape: [linear.dOut, linear.dIn / s.groupSize, s.codebookCount]) {
                // The reference's pack_int_data: the code's low bits reinterpreted as signed.
                let codes = try linear.codes()
                return codeType == .i8 ? SafeTensorsWriter.bytes(integers: codes.map { Int8(truncatingIfNeeded: $0) })
                                       : SafeTensorsWriter.bytes(integers: codes.map { Int16(bitPattern: $0) })
            }
            try writer.add(name + ".codebooks", dtype: .f16, shape: [s.codebookCount, s.codebookSize, 1, s.groupSize]) {
                SafeTensorsWriter.bytes(floats: try linear.codebooks(), as: .f16)!
            }
            try writer.add(name + ".scales", dtype: .f16, shape: [linear.dOut, 1, 1, 1]) {
                SafeTensorsWriter.bytes(floats: try linear.scales(), as: .f16)!
            }
        }
        for name in model.dense.keys.sorted() {
            let t = model.dense[name]!
            let dtype: SafeTensorsDType = t.shape.count == 1 ? .f32 : .f16
            try writer.add(name, tensor: t, as: dtype)
        }
        try writer.write(to: (directory as NSString).appendingPathComponent(SafeTensorsCheckpoint.singleFileName))

        let notQuantized = notQuantizedNames(model).map(JSONValue.string)
        let quantization: JSONValue = .object([
            ("quant_method", .string("aqlm")),
            ("nbits_per_codebook", .int(s.codeBits)),
            ("num_codebooks", .int(s.codebookCount)),
            ("in_group_size", .int(s.groupSize)),
            ("out_group_size", .int(1)),
            ("linear_weights_not_to_quantize", .array(notQuantized)),
        ])
        // 4.x reads `torch_dtype`, 5.x `dtype`: the dtype `dtype="auto"` loads the model in.
        try HuggingFaceConfig.write(model.config, bosTokenId: model.tokenizer.bosId, eosTokenId: model.tokenizer.eosId,
                                    extra: [("torch_dtype", .string("float16")), ("dtype", .string("float16")),
                                            ("quantization_config", quantization)],
                                    to: (directory as NSString).appendingPathComponent(HuggingFaceConfig.fileName))
        try HuggingFaceTokenizer.write(model.tokenizer, toDirectory: directory)
    }

    /// `quantization_config.linear_weights_not_to_quantize`: every tensor kept dense, and every
    /// linear module that stays unquantized in both spellings transformers has used, since an
    /// unlisted `nn.Linear` is replaced by an AQLM `QuantizedLinear` before the weights load:
    /// 4.x compares parameter names ("lm_head.weight"), 5.x module names ("lm_head"). The head
    /// is listed even when tied (no tensor of its own): otherwise 4.x silently runs a randomly
    /// initialised quantized head and 5.x fails on its missing `weight`.
    static func notQuantizedNames(_ model: PackedModel) -> [String] {
        let embedding = "model.embed_tokens.weight"
        var names = Set(model.dense.keys)
        let denseLinears = model.dense.filter { $0.key != embedding && $0.key.hasSuffix(".weight") && $0.value.shape.count == 2 }
        for name in denseLinears.keys { names.insert(String(name.dropLast(".weight".count))) }
        names.formUnion(["lm_head.weight", "lm_head"])
        return names.sorted()
    }

    /// Reads a packed checkpoint directory back into memory (codes, fp16 codebooks and scales
    /// widened to Float32, vectors to Float32; matrices stay memory-mapped, see below).
    public static func read(directory: String) throws -> PackedModel {
        let scheme = try codingScheme(directory: directory)
        let config = try HuggingFaceConfig(path: (directory as NSString).appendingPathComponent(HuggingFaceConfig.fileName)).llama
        let st = try SafeTensorsCheckpoint(directory: directory)
        let tokenizer = try HuggingFaceCheckpoint.tokenizer(directory: directory, config: config, checkpoint: st)

        var linears: [String: AdditiveCode] = [:]
        var dense: [String: WeightTensor] = [:]
        for (name, shape) in config.expectedShapes {
            if name.hasSuffix(".weight"), st.info(name) == nil, shape.count == 2 {
                let base = String(name.dropLast(".weight".count))
                linears[base] = try readLinear(base, dOut: shape[0], dIn: shape[1], scheme: scheme, from: st)
                continue
            }
            guard let info = st.info(name), let file = st.file(for: name) else {
                throw PackedFormatError("\(st.path): missing tensor '\(name)' (neither dense nor as AQLM codes)")
            }
            guard info.shape == shape else {
                throw CheckpointError.shapeMismatch(file.path, tensor: name, expected: shape, found: info.shape)
            }
            // Matrices (the embedding table, an untied head, any linear left dense) stay in the
            // map in their stored fp16 and are converted where they are used: a reader that keeps
            // them in a stored type (fine-tuning's frozen embedding and head) never holds Float32.
            dense[name] = try file.weightTensor(info)
        }
        return PackedModel(config: config, tokenizer: tokenizer, scheme: scheme, linears: linears, dense: dense)
    }

    static func readLinear(_ base: String, dOut: Int, dIn: Int, scheme s: AQLMScheme,
                           from st: SafeTensorsCheckpoint) throws -> AdditiveCode {
        func tensor(_ suffix: String, shape: [Int]) throws -> (SafeTensorInfo, SafeTensorsFile) {
            let name = base + suffix
            guard let info = st.info(name), let file = st.file(for: name) else {
                throw PackedFormatError("\(st.path): missing tensor '\(name)'")
            }
            guard info.shape == shape else {
                throw CheckpointError.shapeMismatch(file.path, tensor: name, expected: shape, found: info.shape)
            }
            return (info, file)
        }
        guard dIn % s.groupSize == 0 else {
            throw PackedFormatError("\(st.path): '\(base)' has d_in \(dIn), not a multiple of in_group_size \(s.groupSize)")
        }
        let (codeInfo, codeFile) = try tensor(".codes", shape: [dOut, dIn / s.groupSize, s.codebookCount])
        let mask = UInt16((1 << s.codeBits) - 1)
        let codes: [UInt16]
        switch codeInfo.dtype {
        case .i8: codes = try codeFile.integers(codeInfo.name, as: Int8.self).map { UInt16(UInt8(bitPattern: $0)) & mask }
        case .i16: codes = try codeFile.integers(codeInfo.name, as: Int16.self).map { UInt16(bitPattern: $0) & mask }
        default: throw PackedFormatError("\(codeFile.path): '\(codeInfo.name)' has dtype \(codeInfo.dtype.rawValue), expected I8 or I16")
        }
        let (cbInfo, cbFile) = try tensor(".codebooks", shape: [s.codebookCount, s.codebookSize, 1, s.groupSize])
        let (scInfo, scFile) = try tensor(".scales", shape: [dOut, 1, 1, 1])
        return AdditiveCode(scheme: s, dOut: dOut, dIn: dIn, codes: codes,
                            codebooks: try cbFile.floats(cbInfo), scales: try scFile.floats(scInfo))
    }
}

public struct PackedFormatError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A quantized linear of a packed checkpoint being written whose arrays are read only when the
/// file needs them (each once): e.g. from the block files a quantization run saved.
public struct DeferredLinear {
    public let dOut: Int
    public let dIn: Int
    public let codes: () throws -> [UInt16]
    public let codebooks: () throws -> [Float]
    public let scales: () throws -> [Float]

    public init(dOut: Int, dIn: Int, codes: @escaping () throws -> [UInt16], codebooks: @escaping () throws -> [Float],
                scales: @escaping () throws -> [Float]) {
        self.dOut = dOut
        self.dIn = dIn
        self.codes = codes
        self.codebooks = codebooks
        self.scales = scales
    }
}
