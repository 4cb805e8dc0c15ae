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

    public init(name: String, shape: [Int], type: String, bytes: Int, parameters: Int, role: TensorRole) {
        self.name = name
        self.shape = shape
        self.type = type
        self.bytes = bytes
        self.parameters = parameters
        self.role = role
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
    public var totalBytes: Int
    /// 8 · bytes / parameters over all tensors.
    public var bitsPerWeight: Double
    /// The same over the block linears only (the tensors a weight quantizer compresses).
    public var blockLinearBitsPerWeight: Double

    public init(path: String, format: String, architecture: String?, config: LlamaConfig?,
                metadata: [MetadataSummary], tensors: [TensorSummary]) {
        self.path = path
        self.format = format
        self.architecture = architecture
        self.config = config
        self.metadata = metadata
        self.tensors = tensors
        parameters = ParameterCounts(tensors)
        totalBytes = tensors.reduce(0) { $0 + $1.bytes }
        bitsPerWeight = Self.bits(totalBytes, parameters.total)
        let linearBytes = tensors.filter { $0.role == .blockLinear }.reduce(0) { $0 + $1.bytes }
        blockLinearBitsPerWeight = Self.bits(linearBytes, parameters.blockLinears)
    }

    private static func bits(_ bytes: Int, _ parameters: Int) -> Double {
        parameters > 0 ? 8 * Double(bytes) / Double(parameters) : 0
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
