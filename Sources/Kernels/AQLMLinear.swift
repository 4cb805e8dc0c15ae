/// An AQLM quantization scheme "MxB gG": every run of G consecutive input weights of a row is
/// the sum of M codewords, one from each of M codebooks of 2^B vectors of length G, times the
/// row's scale (Egiazarian et al. 2024, "Extreme Compression of LLMs via Additive Quantization").
public struct AQLMScheme: Hashable, Sendable, CustomStringConvertible {
    /// M: codebooks per group.
    public let codebookCount: Int
    /// B: bits per code (2^B codewords per codebook).
    public let codeBits: Int
    /// G: input weights per group (the codeword length).
    public let groupSize: Int

    public init(codebookCount: Int, codeBits: Int, groupSize: Int) {
        self.codebookCount = codebookCount
        self.codeBits = codeBits
        self.groupSize = groupSize
    }

    public var codebookSize: Int { 1 << codeBits }
    /// Bits per weight spent on codes (scales and codebooks excluded).
    public var bitsPerWeight: Double { Double(codebookCount * codeBits) / Double(groupSize) }
    public var description: String { "\(codebookCount)x\(codeBits) g\(groupSize)" }
}

/// A malformed AQLM layer: `description` is one line naming the layer and the bad argument.
public struct AQLMShapeError: Error, CustomStringConvertible {
    public let description: String
}

/// A linear layer whose weight is stored as AQLM codes, constructed from the Hugging Face AQLM
/// layout: `codes` [d_out, d_in/G, M] (unsigned code indices), `codebooks` [M, 2^B, G],
/// `scales` [d_out], with Ŵ[r, j·G ..< (j+1)·G] = scales[r] · Σ_m codebooks[m][codes[r, j, m]].
/// HF checkpoints store codes as signed int8 (B ≤ 8) or int16 (B ≤ 16), codes ≥ 2^(B-1) minus
/// 2^B (aqlm's `pack_int_data`); the index is the stored value mod 2^B, i.e. its low B bits
/// (`unpack_int_data`), which for B = 8 or 16 is the bit pattern as UInt8 / UInt16.
///
/// For B ≤ 8 the codes are re-laid out at construction in the decode kernel's read order
/// (64-row blocks, table by table: see `AQLMBlockedCodes`); `apply` uses the lookup-table
/// kernel for up to `decodeTokenLimit` tokens and weight panels (dequantized, then a 512-bit
/// micro-kernel: `multiplyByWeightPanels`) beyond.
/// For B > 8 (e.g. 1x16) the codes stay in the HF layout and decoding goes through dequantized
/// rows (a 65536-entry table per group would not fit any cache); prefill through weight panels.
public struct AQLMLinear: LinearOperator, @unchecked Sendable {
    public let outputSize: Int
    public let inputSize: Int
    public let scheme: AQLMScheme
    /// [M, 2^B, G] Float32 (the file's fp16 widened; Kx8 codebooks are 16 KB per codebook pair).
    public let codebooks: [Float]
    /// [d_out]
    public let scales: [Float]
    /// Token counts up to this use the lookup-table matvec; more use weight panels.
    public static let decodeTokenLimit = 4

    /// B ≤ 8: codes in lookup order.
    let blockedCodes: AQLMBlockedCodes?
    /// B > 8: codes in the HF layout [d_out, d_in/G, M].
    let wideCodes: [UInt16]
    /// B ≤ 8: codebooks transposed to [M, G, 256] (zero-padded past 2^B) for building tables.
    let transposedCodebooks: [Float]
    /// max_{m,c} ‖codebooks[m][c]‖: with ‖x_j‖, bounds every table entry (`aqlmTableStep`).
    let largestCodewordNorm: Float

    public var groupCount: Int { inputSize / scheme.groupSize }
    /// Lookup tables per token: one per (input group, codebook).
    public var tableCount: Int { groupCount * scheme.codebookCount }

    /// - Parameter name: the layer's name, used in error messages only.
    public init(codes: [UInt16], codebooks: [Float], scales: [Float], outputSize: Int, inputSize: Int,
                scheme: AQLMScheme, name: String = "AQLM linear") throws {
        try Self.validate(codeCount: codes.count, codebooks: codebooks, scales: scales, outputSize: outputSize,
                          inputSize: inputSize, scheme: scheme, name: name)
        if let bad = codes.first(where: { Int($0) >= scheme.codebookSize }) {
            throw AQLMShapeError(description: "\(name): code \(bad) out of range for \(scheme.codeBits)-bit codebooks")
        }
        self.outputSize = outputSize
        self.inputSize = inputSize
        self.scheme = scheme
        self.codebooks = codebooks
        self.scales = scales
        largestCodewordNorm = stride(from: 0, to: codebooks.count, by: scheme.groupSize).map { start in
            codebooks[start ..< start + scheme.groupSize].reduce(0) { $0 + $1 * $1 }.squareRoot()
        }.max() ?? 0
        if scheme.codeBits <= 8 {
            let narrow = codes.map { UInt8(truncatingIfNeeded: $0) }
            blockedCodes = AQLMBlockedCodes(rowMajor: narrow, rows: outputSize, tables: inputSize / scheme.groupSize * scheme.codebookCount)
            wideCodes = []
            transposedCodebooks = transposeCodebooks(codebooks, scheme: scheme)
        } else {
            blockedCodes = nil
            wideCodes = codes
            transposedCodebooks = []
        }
    }

    /// Convenience for B ≤ 8 codes stored one byte each (the HF layout of Kx8 schemes).
    public init(codes: [UInt8], codebooks: [Float], scales: [Float], outputSize: Int, inputSize: Int,
                scheme: AQLMScheme, name: String = "AQLM linear") throws {
        guard scheme.codeBits <= 8 else {
            throw AQLMShapeError(description: "\(name): \(scheme.codeBits)-bit codes need UInt16 storage, got UInt8")
        }
        try self.init(codes: codes.map { UInt16($0) }, codebooks: codebooks, scales: scales, outputSize: outputSize,
                      inputSize: inputSize, scheme: scheme, name: name)
    }

    private static func validate(codeCount: Int, codebooks: [Float], scales: [Float], outputSize: Int, inputSize: Int,
                                 scheme: AQLMScheme, name: String) throws {
        let g = scheme.groupSize, m = scheme.codebookCount
        guard (1...16).contains(scheme.codeBits) else {
            throw AQLMShapeError(description: "\(name): code bits \(scheme.codeBits) not in 1...16")
        }
        guard g > 0, m > 0, outputSize > 0, inputSize > 0 else {
            throw AQLMShapeError(description: "\(name): sizes must be positive (d_out \(outputSize), d_in \(inputSize), scheme \(scheme))")
        }
        guard inputSize % g == 0 else {
            throw AQLMShapeError(description: "\(name): d_in \(inputSize) is not a multiple of group size \(g)")
        }
        guard codeCount == outputSize * (inputSize / g) * m else {
            throw AQLMShapeError(description: "\(name): codes hold \(codeCount) entries, expected [\(outputSize), \(inputSize / g), \(m)]")
        }
        guard codebooks.count == m * scheme.codebookSize * g else {
            throw AQLMShapeError(description: "\(name): codebooks hold \(codebooks.count) floats, expected [\(m), \(scheme.codebookSize), \(g)]")
        }
        guard scales.count == outputSize else {
            throw AQLMShapeError(description: "\(name): scales hold \(scales.count) floats, expected \(outputSize)")
        }
        if let i = codebooks.firstIndex(where: { !$0.isFinite }) {
            throw AQLMShapeError(description: "\(name): codebooks[\(i)] is \(codebooks[i])")
        }
        if let i = scales.firstIndex(where: { !$0.isFinite }) {
            throw AQLMShapeError(description: "\(name): scales[\(i)] is \(scales[i])")
        }
    }

    /// Bytes held: codes (B ≤ 8 padded to 64-row blocks), Float32 codebooks (and their
    /// transposed copy for B ≤ 8) and scales.
    public var weightBytes: Int {
        let codeBytes = blockedCodes?.bytes.count ?? wideCodes.count * 2
        return codeBytes + (codebooks.count + transposedCodebooks.count + scales.count) * 4
    }

    /// Code of row `row`, input group `group`, codebook `codebook` (HF indexing).
    @inline(__always)
    public func code(row: Int, group: Int, codebook: Int) -> Int {
        let table = group * scheme.codebookCount + codebook
        if let blocked = blockedCodes { return Int(blocked.code(row: row, table: table)) }
        return Int(wideCodes[row * tableCount + table])
    }

    public func apply(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        if tokens <= Self.decodeTokenLimit {
            applyDecode(x, y, tokens: tokens)
        } else {
            applyPrefill(x, y, tokens: tokens)
        }
    }

    /// The decode path whatever the token count: the lookup-table kernel for B ≤ 8, fused
    /// per-row dequantize + dot products for wider codes.
    public func applyDecode(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        if blockedCodes != nil {
            applyLookupTables(x, y, tokens: tokens)
        } else {
            applyDequantizedDots(x, y, tokens: tokens)
        }
    }

    /// The dense weight Ŵ [d_out, d_in], row-major (reference and tests; the kernels never
    /// materialise it whole).
    public func dequantize() -> [Float] {
        var w = [Float](repeating: 0, count: outputSize * inputSize)
        w.withUnsafeMutableBufferPointer { dequantizeRows(0..<outputSize, into: $0.baseAddress!) }
        return w
    }
}

/// [M, 2^B, G] → [M, G, 256]: a table build then reads the k-th coordinate of 16 consecutive
/// codewords as one vector. Codewords past 2^B are zero (their codes never occur).
func transposeCodebooks(_ codebooks: [Float], scheme: AQLMScheme) -> [Float] {
    let g = scheme.groupSize, size = scheme.codebookSize
    var out = [Float](repeating: 0, count: scheme.codebookCount * g * aqlmTableEntries)
    for m in 0..<scheme.codebookCount {
        for c in 0..<size {
            for k in 0..<g {
                out[(m * g + k) * aqlmTableEntries + c] = codebooks[(m * size + c) * g + k]
            }
        }
    }
    return out
}
