import Checkpoint
import QuantizePipeline

/// The series a point belongs to in the table and the plot.
public enum MethodFamily: String, Sendable, CaseIterable {
    /// The model the sweep started from, evaluated as stored (the KLD reference).
    case original
    /// Beam search over additive codes with codebook/scale updates.
    case aqlm
    /// Greedy residual VQ: AQLM's k-means initialisation alone.
    case rvq
    /// Product quantization: one codebook per disjoint slice of each group.
    case pq
    /// Scalar round-to-nearest.
    case rtn
    /// A point measured by another tool (`--reference CSV`).
    case external

    /// What a reader of the table must know about every row of the family.
    public var note: String? {
        switch self {
        case .rtn:
            return "written dequantized (a dense Float32 model directory), so its file size and decode speed are those "
                + "of the dense model; bits/weight counts the packed codes plus the fp16 scale and minimum of each group of 64"
        default:
            return nil
        }
    }

    public init(_ choice: QuantizationChoice) {
        switch choice {
        case .aqlm: self = .aqlm
        case .rvq: self = .rvq
        case .pq: self = .pq
        case .rtn: self = .rtn
        }
    }
}

/// One line of the trade-off table. Unknown figures (an external point without KLD, the
/// original's quantize time) are nil and written as empty CSV cells / JSON null.
public struct SweepRow: Equatable, Sendable {
    public var scheme: String
    public var family: MethodFamily
    /// Over the block linears, codebooks and scales included (what a quantizer compresses).
    public var bitsPerWeight: Double
    /// Bytes of the model as stored (all files of its directory).
    public var fileBytes: Int?
    public var ppl: Double
    public var pplStderr: Double?
    /// Mean KL(original ‖ this) per scored position.
    public var kldMean: Double?
    /// Fraction (0...1) of positions whose most likely token is the original's.
    public var top1Agreement: Double?
    public var quantizeSeconds: Double?
    public var decodeTokensPerSecond: Double?
    /// Free text shown with the row in results.md (e.g. how an external figure was measured).
    public var note: String?

    public var external: Bool { family == .external }

    public init(scheme: String, family: MethodFamily, bitsPerWeight: Double, fileBytes: Int? = nil, ppl: Double,
                pplStderr: Double? = nil, kldMean: Double? = nil, top1Agreement: Double? = nil,
                quantizeSeconds: Double? = nil, decodeTokensPerSecond: Double? = nil, note: String? = nil) {
        self.scheme = scheme
        self.family = family
        self.bitsPerWeight = bitsPerWeight
        self.fileBytes = fileBytes
        self.ppl = ppl
        self.pplStderr = pplStderr
        self.kldMean = kldMean
        self.top1Agreement = top1Agreement
        self.quantizeSeconds = quantizeSeconds
        self.decodeTokensPerSecond = decodeTokensPerSecond
        self.note = note
    }

    /// The columns of results.csv and the keys of each results.json row, in order.
    public static let columns = ["scheme", "family", "bits_per_weight", "file_bytes", "ppl", "ppl_stderr", "kld_mean",
                                 "top1_agreement", "quantize_seconds", "decode_tokens_per_second", "external"]

    public var json: JSONValue {
        func number(_ v: Double?) -> JSONValue { v.map(JSONValue.double) ?? .null }
        var members: [(String, JSONValue)] = [
            ("scheme", .string(scheme)),
            ("family", .string(family.rawValue)),
            ("bits_per_weight", .double(bitsPerWeight)),
            ("file_bytes", fileBytes.map(JSONValue.int) ?? .null),
            ("ppl", .double(ppl)),
            ("ppl_stderr", number(pplStderr)),
            ("kld_mean", number(kldMean)),
            ("top1_agreement", number(top1Agreement)),
            ("quantize_seconds", number(quantizeSeconds)),
            ("decode_tokens_per_second", number(decodeTokensPerSecond)),
            ("external", .bool(external)),
        ]
        if let note { members.append(("note", .string(note))) }
        return .object(members)
    }

    /// Reads a row written by `json`; `source` names the file in errors.
    public init(json j: JSONValue, source: String) throws {
        guard let scheme = j["scheme"]?.string, let familyName = j["family"]?.string,
              let family = MethodFamily(rawValue: familyName), let bits = j["bits_per_weight"]?.double,
              let ppl = j["ppl"]?.double else {
            throw SweepError("\(source): not a sweep result row (needs scheme, family, bits_per_weight, ppl)")
        }
        self.init(scheme: scheme, family: family, bitsPerWeight: bits, fileBytes: j["file_bytes"]?.int, ppl: ppl,
                  pplStderr: j["ppl_stderr"]?.double, kldMean: j["kld_mean"]?.double,
                  top1Agreement: j["top1_agreement"]?.double, quantizeSeconds: j["quantize_seconds"]?.double,
                  decodeTokensPerSecond: j["decode_tokens_per_second"]?.double, note: j["note"]?.string)
    }
}
