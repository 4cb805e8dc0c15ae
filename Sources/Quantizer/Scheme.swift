import Kernels

/// One bad argument to the quantizer, described in one line.
public struct QuantizerError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The quantizer's view of `AQLMScheme` (defined in Kernels, shared with the inference kernels):
/// validation, parsing, presets and honest storage accounting. Out-group size is always 1.
extension AQLMScheme {
    public static let supportedGroupSizes = [4, 8, 16]

    /// A scheme the quantizer supports, or an error naming the bad value.
    public static func validated(codebookCount: Int, codeBits: Int, groupSize: Int = 8) throws -> AQLMScheme {
        guard (1...8).contains(codebookCount) else {
            throw QuantizerError("AQLM scheme: \(codebookCount) codebooks is out of range 1...8")
        }
        guard (1...16).contains(codeBits) else {
            throw QuantizerError("AQLM scheme: \(codeBits) bits per codebook is out of range 1...16")
        }
        guard supportedGroupSizes.contains(groupSize) else {
            throw QuantizerError("AQLM scheme: in-group size \(groupSize) is not one of \(supportedGroupSizes)")
        }
        return AQLMScheme(codebookCount: codebookCount, codeBits: codeBits, groupSize: groupSize)
    }

    /// Parses "MxB" or "MxBgG" (g defaults to 8), e.g. "2x8", "1x16", "2x8g16".
    public init(parsing text: String) throws {
        let lower = text.lowercased().replacingOccurrences(of: " ", with: "")
        let parts = lower.split(separator: "g", maxSplits: 1, omittingEmptySubsequences: false)
        let codebookPart = parts[0].split(separator: "x", omittingEmptySubsequences: false)
        guard codebookPart.count == 2, let m = Int(codebookPart[0]), let b = Int(codebookPart[1]) else {
            throw QuantizerError("AQLM scheme '\(text)': expected MxB or MxBgG, e.g. 2x8 or 2x8g16")
        }
        var g = 8
        if parts.count == 2 {
            guard let parsed = Int(parts[1]) else {
                throw QuantizerError("AQLM scheme '\(text)': group size after 'g' is not a number")
            }
            g = parsed
        }
        self = try Self.validated(codebookCount: m, codeBits: b, groupSize: g)
    }

    public static let preset2x8 = AQLMScheme(codebookCount: 2, codeBits: 8, groupSize: 8)
    public static let preset1x8 = AQLMScheme(codebookCount: 1, codeBits: 8, groupSize: 8)
    public static let preset3x8 = AQLMScheme(codebookCount: 3, codeBits: 8, groupSize: 8)
    public static let preset4x8 = AQLMScheme(codebookCount: 4, codeBits: 8, groupSize: 8)
    public static let preset1x16 = AQLMScheme(codebookCount: 1, codeBits: 16, groupSize: 8)
    /// The presets by name; "2x8" is the default.
    public static let presets: [(name: String, scheme: AQLMScheme)] = [
        ("2x8", preset2x8), ("1x8", preset1x8), ("3x8", preset3x8), ("4x8", preset4x8), ("1x16", preset1x16),
    ]

    /// Storage of a [dOut, dIn] layer in this scheme over its parameter count: code bits,
    /// Float16 codebooks and one Float16 scale per output row.
    public func bitsPerWeight(dOut: Int, dIn: Int) -> Double {
        let codeBits = Double(dOut * (dIn / groupSize) * codebookCount * self.codeBits)
        let codebookBits = Double(codebookCount * codebookSize * groupSize * 16)
        let scaleBits = Double(dOut * 16)
        return (codeBits + codebookBits + scaleBits) / Double(dOut * dIn)
    }

    /// Throws unless a [dOut, dIn] layer can be coded in this scheme.
    public func validate(dOut: Int, dIn: Int) throws {
        _ = try Self.validated(codebookCount: codebookCount, codeBits: codeBits, groupSize: groupSize)
        guard dOut > 0, dIn > 0 else { throw QuantizerError("layer shape [\(dOut), \(dIn)] is empty") }
        guard dIn % groupSize == 0 else {
            throw QuantizerError("layer shape [\(dOut), \(dIn)]: d_in is not a multiple of the in-group size \(groupSize)")
        }
    }
}
