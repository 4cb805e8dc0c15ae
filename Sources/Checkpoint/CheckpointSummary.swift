import Foundation

/// What `aqlm inspect` reports about a checkpoint, in a form every format can produce (GGUF
/// here; safetensors and packed AQLM directories build the same value): hyper-parameters,
/// metadata, one row per stored tensor, parameter counts by role, and bits per weight.

/// What a tensor is for, decided from its Hugging Face name.
public enum TensorRole: String, Codable, Sendable {
    case embedding, outputHead = "output_head", norm, blockLinear = "block_linear", bias, other

    /// Everything under one of a block's seven linear layers (`model.layers.N.self_attn.q_proj.*`,
    /// ...) except biases counts as that linear, so a packed format's codes, codebooks and scales
    /// all land in `blockLinear`.
    public init(huggingFaceName name: String) {
        if name.hasSuffix(".bias") {
            self = .bias
        } else if name.hasPrefix("model.embed_tokens.") {
            self = .embedding
        } else if name.hasPrefix("lm_head.") {
            self = .outputHead
        } else if name.hasSuffix("norm.weight") {
            self = .norm
        } else if Self.isBlockLinear(name) {
            self = .blockLinear
        } else {
            self = .other
        }
    }

    private static func isBlockLinear(_ name: String) -> Bool {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", Int(parts[2]) != nil else { return false }
        let linear = "\(parts[3]).\(parts[4])"
        return LlamaConfig.linearNames(layer: 0).contains("model.layers.0.\(linear)")
    }
}

public struct TensorSummary: Sendable, Equatable, Codable {
    /// The name as stored in the file.
    public var name: String
    /// Row-major, outermost first.
    public var shape: [Int]
    /// Storage type as the format names it ("Q4_1", "F32", "int16", ...).
    public var type: String
    public var bytes: Int
    /// Model weights this tensor stands for: its element count for a plain tensor; a packed
    /// format counts the weights a code tensor encodes and 0 for codebooks and scales.
    public var parameters: Int
    public var role: TensorRole
    /// Information the tensor holds, in bits: 8 · bytes, except where a format stores narrower
    /// values in wider cells (B-bit AQLM codes in int8/int16 count B bits each), so bits per
    /// weight measure the scheme rather than its container.
    public var bits: Int

    public init(name: String, shape: [Int], type: String, bytes: Int, parameters: Int, role: TensorRole, bits: Int? = nil) {
        self.name = name
        self.shape = shape
        self.type = type
        self.bytes = bytes
        self.parameters = parameters
        self.role = role
        self.bits = bits ?? 8 * bytes
    }
}

public struct MetadataSummary: Sendable, Equatable, Codable {
    public var key: String
    public var type: String
    /// Short rendering: strings cut at 80 characters, arrays as "[N items]".
    public var value: String

    public init(key: String, type: String, value: String) {
        self.key = key
        self.type = type
        self.value = value
    }
}

public struct ParameterCounts: Sendable, Equatable, Codable {
    public var total = 0
    public var embeddings = 0
    public var outputHead = 0
    public var blockLinears = 0
    public var norms = 0
    public var biases = 0
    public var other = 0

    public init(_ tensors: [TensorSummary]) {
        for t in tensors {
            total += t.parameters
            switch t.role {
            case .embedding: embeddings += t.parameters
            case .outputHead: outputHead += t.parameters
            case .blockLinear: blockLinears += t.parameters
            case .norm: norms += t.parameters
            case .bias: biases += t.parameters
            case .other: other += t.parameters
            }
        }
    }
}

/// How a quantized checkpoint's linears are coded (Hugging Face `quantization_config`).
public struct QuantizationSummary: Sendable, Equatable, Codable {
    /// `quant_method` ("aqlm").
    public var method: String
    /// "MxB", with "gG" appended when the in-group size G is not 8 (as `aqlm quantize --scheme`).
    public var scheme: String
    public var numCodebooks: Int
    public var nbitsPerCodebook: Int
    public var inGroupSize: Int
    public var outGroupSize: Int

    public init(method: String, numCodebooks: Int, nbitsPerCodebook: Int, inGroupSize: Int, outGroupSize: Int) {
        self.method = method
        self.numCodebooks = numCodebooks
        self.nbitsPerCodebook = nbitsPerCodebook
        self.inGroupSize = inGroupSize
        self.outGroupSize = outGroupSize
        scheme = "\(numCodebooks)x\(nbitsPerCodebook)" + (inGroupSize == 8 ? "" : "g\(inGroupSize)")
    }
}

public struct CheckpointSummary: Sendable, Codable {
    public var path: String
    /// "GGUF v3", "safetensors", "AQLM packed", ...
    public var format: String
    public var architecture: String?
    /// Nil when the file's hyper-parameters could not be read as a supported Llama-family model.
    public var config: LlamaConfig?
    public var metadata: [MetadataSummary]
    public var tensors: [TensorSummary]
    public var parameters: ParameterCounts
    /// Bytes of tensor data as stored.
    public var totalBytes: Int
    /// Σ bits / parameters over all tensors (`TensorSummary.bits`: 8 · bytes unless a format
    /// packs narrower values).
    public var bitsPerWeight: Double
    /// The same over the block linears only (the tensors a weight quantizer compresses).
    public var blockLinearBitsPerWeight: Double
    /// The coding of a quantized checkpoint; nil for plain weights.
    public var quantization: QuantizationSummary?
    /// Totals of the quantization run that wrote the checkpoint (its `report.json`), if present.
    public var report: JSONValue?

    public init(path: String, format: String, architecture: String?, config: LlamaConfig?,
                metadata: [MetadataSummary], tensors: [TensorSummary],
                quantization: QuantizationSummary? = nil, report: JSONValue? = nil) {
        self.path = path
        self.format = format
        self.architecture = architecture
        self.config = config
        self.metadata = metadata
        self.tensors = tensors
        self.quantization = quantization
        self.report = report
        parameters = ParameterCounts(tensors)
        totalBytes = tensors.reduce(0) { $0 + $1.bytes }
        bitsPerWeight = Self.bitsPerWeight(tensors)
        blockLinearBitsPerWeight = Self.bitsPerWeight(tensors.filter { $0.role == .blockLinear })
    }

    private static func bitsPerWeight(_ tensors: [TensorSummary]) -> Double {
        let bits = tensors.reduce(0) { $0 + $1.bits }, parameters = tensors.reduce(0) { $0 + $1.parameters }
        return parameters > 0 ? Double(bits) / Double(parameters) : 0
    }

    /// Every key is written, absent values as null, so all formats give the same JSON shape.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(path, forKey: .path)
        try c.encode(format, forKey: .format)
        try c.encode(architecture, forKey: .architecture)
        try c.encode(config, forKey: .config)
        try c.encode(metadata, forKey: .metadata)
        try c.encode(tensors, forKey: .tensors)
        try c.encode(parameters, forKey: .parameters)
        try c.encode(totalBytes, forKey: .totalBytes)
        try c.encode(bitsPerWeight, forKey: .bitsPerWeight)
        try c.encode(blockLinearBitsPerWeight, forKey: .blockLinearBitsPerWeight)
        try c.encode(quantization, forKey: .quantization)
        try c.encode(report, forKey: .report)
    }

    /// One JSON object with snake_case keys, keys sorted (stable across runs).
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// The human-readable report: header, hyper-parameters, metadata, the tensor table, totals.
    public func text() -> String {
        var lines = ["\(path): \(format), \(tensors.count) tensors, \(metadata.count) metadata keys"]
        lines.append("architecture: \(architecture ?? "?")")
        if let c = config {
            lines.append("  layers \(c.numLayers), hidden \(c.hiddenSize), feed-forward \(c.intermediateSize), "
                + "heads \(c.numHeads) (kv \(c.numKVHeads), head dim \(c.headDim)), vocab \(c.vocabSize)")
            lines.append("  context \(c.contextLength), rope theta \(c.ropeTheta), rms eps \(c.rmsNormEps), "
                + (c.tiedEmbeddings ? "tied embeddings" : "separate output head")
                + (c.attentionBias ? ", q/k/v biases" : ""))
        }
        lines.append("metadata:")
        let keyWidth = metadata.map(\.key.count).max() ?? 0
        for m in metadata {
            let value = m.type == "string" ? "\"\(m.value)\"" : m.value
            lines.append("  \(pad(m.key, keyWidth))  \(pad(m.type, 13))  \(value)")
        }
        lines.append("tensors:")
        let rows = tensors.map { [printable($0.name), "\($0.shape)", $0.type, "\($0.bytes)"] }
        lines += table(header: ["name", "shape", "type", "bytes"], rows: rows, rightAligned: [3])
        let p = parameters
        lines.append("parameters: \(p.total) total: embeddings \(p.embeddings), output head \(p.outputHead), "
            + "block linears \(p.blockLinears), norms \(p.norms), biases \(p.biases), other \(p.other)")
        lines.append(String(format: "bits per weight: %.4f overall (%d bytes), %.4f over block linears",
                            bitsPerWeight, totalBytes, blockLinearBitsPerWeight))
        if let q = quantization {
            lines.append("quantization: \(q.method) \(q.scheme): \(q.numCodebooks) codebook(s) of 2^\(q.nbitsPerCodebook) "
                + "codewords over groups of \(q.inGroupSize) input weights, one fp16 scale per output row")
        }
        if let members = report?.members {
            lines.append("report.json:")
            let keyWidth = members.map(\.0.count).max() ?? 0
            for (key, value) in members { lines.append("  \(pad(key, keyWidth))  \(value.serialized(indent: nil))") }
        }
        return lines.joined(separator: "\n")
    }

    private func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
    }

    private func table(header: [String], rows: [[String]], rightAligned: Set<Int>) -> [String] {
        let all = [header] + rows
        let widths = header.indices.map { c in all.map { $0[c].count }.max() ?? 0 }
        return all.map { row in
            "  " + row.indices.map { c in
                let gap = String(repeating: " ", count: widths[c] - row[c].count)
                return rightAligned.contains(c) ? gap + row[c] : row[c] + gap
            }.joined(separator: "  ")
        }
    }
}

extension GGUFValue {
    /// GGUF's name for the value type ("u32", "string", "array[string]", ...).
    public var typeName: String {
        switch self {
        case .uint8: return "u8"
        case .int8: return "i8"
        case .uint16: return "u16"
        case .int16: return "i16"
        case .uint32: return "u32"
        case .int32: return "i32"
        case .float32: return "f32"
        case .bool: return "bool"
        case .string: return "string"
        case .uint64: return "u64"
        case .int64: return "i64"
        case .float64: return "f64"
        case .array(let items): return "array[\(items.first?.typeName ?? "")]"
        }
    }
}

extension GGUFFile {
    /// The inspect summary of this file. Tensors keep their GGUF names; roles come from the
    /// Hugging Face names they map to. A file whose architecture this project cannot run still
    /// gets a summary, with `config` nil.
    public func summary() -> CheckpointSummary {
        let rows = tensors.map { t in
            TensorSummary(name: t.name, shape: t.shape, type: t.type.name, bytes: t.byteCount,
                          parameters: t.elementCount,
                          role: Self.huggingFaceName(t.name).map(TensorRole.init(huggingFaceName:)) ?? .other)
        }
        let meta = metadataKeys.compactMap { key in
            metadata[key].map { v in
                let value = v.string.map { $0.count > 80 ? $0.prefix(77) + "..." : $0 } ?? v.summary
                return MetadataSummary(key: printable(key), type: v.typeName, value: printable(value))
            }
        }
        return CheckpointSummary(path: path, format: "GGUF v\(version)", architecture: metadata["general.architecture"]?.string,
                                 config: try? llamaConfig(), metadata: meta, tensors: rows)
    }
}

extension HuggingFaceCheckpoint {
    /// The inspect summary of a model directory from config.json and the safetensors headers
    /// alone (no tensor data is read): tensors as stored, config.json's top-level keys and each
    /// shard's `__metadata__` as metadata. A config this project cannot run still gets a
    /// summary, with `config` nil.
    public static func summary(directory: String) throws -> CheckpointSummary {
        let configPath = joinPath(directory, HuggingFaceConfig.fileName)
        guard fileExists(configPath) else { throw CheckpointError.missingFile(configPath) }
        let json = try readJSONFile(configPath)
        let checkpoint = try SafeTensorsCheckpoint(directory: directory)
        var rows: [TensorSummary] = []
        for name in checkpoint.tensorNames {
            guard let info = checkpoint.info(name) else { continue }
            rows.append(TensorSummary(name: printable(name), shape: info.shape, type: info.dtype.rawValue,
                                      bytes: info.dataOffsets.count, parameters: info.elementCount,
                                      role: TensorRole(huggingFaceName: name)))
        }
        var metadata = (json.members ?? []).map { key, value in
            MetadataSummary(key: printable(key), type: value.kindName, value: printable(value.shortRendering))
        }
        for shard in checkpoint.shards {
            for key in shard.metadata.keys.sorted() {
                metadata.append(MetadataSummary(key: "safetensors.\(printable(key))", type: "string",
                                                value: printable(String(shard.metadata[key]!.prefix(80)))))
            }
        }
        let shards = checkpoint.shards.count
        let architecture = json["model_type"]?.string
            ?? json["architectures"]?.array?.first?.string.flatMap { HuggingFaceConfig.architectureClasses[$0] ?? $0 }
        return CheckpointSummary(path: directory, format: shards == 1 ? "safetensors" : "safetensors (\(shards) shards)",
                                 architecture: architecture.map(printable),
                                 config: (try? HuggingFaceConfig(json: json, path: configPath))?.llama,
                                 metadata: metadata, tensors: rows)
    }
}

extension JSONValue {
    /// The JSON kind ("string", "number", "bool", "null", "array", "object").
    var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "bool"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    /// Short rendering for `inspect`: strings cut at 80 characters, containers by size.
    var shortRendering: String {
        switch self {
        case .string(let s): return s.count > 80 ? s.prefix(77) + "..." : s
        case .array(let items): return "[\(items.count) items]"
        case .object(let members): return "{\(members.count) keys}"
        default: return serialized(indent: nil)
        }
    }
}

/// JSONValue through Codable (for summaries that embed a JSON document): numbers are written
/// as integers when they are integral, else as Double.
extension JSONValue: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            let object = try decoder.container(keyedBy: AnyKey.self)
            self = .object(try object.allKeys.map { ($0.stringValue, try object.decode(JSONValue.self, forKey: $0)) })
        }
    }

    public func encode(to encoder: Encoder) throws {
        switch self {
        case .null:
            var c = encoder.singleValueContainer()
            try c.encodeNil()
        case .bool(let b):
            var c = encoder.singleValueContainer()
            try c.encode(b)
        case .number:
            var c = encoder.singleValueContainer()
            if let i = int { try c.encode(i) } else { try c.encode(double ?? .nan) }
        case .string(let s):
            var c = encoder.singleValueContainer()
            try c.encode(s)
        case .array(let items):
            var c = encoder.unkeyedContainer()
            for item in items { try c.encode(item) }
        case .object(let members):
            var c = encoder.container(keyedBy: AnyKey.self)
            for (key, value) in members { try c.encode(value, forKey: AnyKey(stringValue: key)) }
        }
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}
