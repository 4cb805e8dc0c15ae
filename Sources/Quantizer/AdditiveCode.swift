import Foundation
import Kernels

/// Codes, codebooks and scales of one layer in the Hugging Face AQLM layout (out-group size 1):
/// Ŵ[r, j·g ..< (j+1)·g] = scales[r] · Σ_m codebooks[m][codes[r, j, m]].
public struct AdditiveCode: Equatable, Sendable {
    public let scheme: AQLMScheme
    public let dOut: Int
    public let dIn: Int
    /// [dOut, dIn/g, M], row-major.
    public var codes: [UInt16]
    /// [M, 2^B, g], row-major.
    public var codebooks: [Float]
    /// [dOut].
    public var scales: [Float]

    public init(scheme: AQLMScheme, dOut: Int, dIn: Int, codes: [UInt16], codebooks: [Float], scales: [Float]) {
        precondition(dIn % scheme.groupSize == 0)
        precondition(codes.count == dOut * (dIn / scheme.groupSize) * scheme.codebookCount)
        precondition(codebooks.count == scheme.codebookCount * scheme.codebookSize * scheme.groupSize)
        precondition(scales.count == dOut)
        self.scheme = scheme
        self.dOut = dOut
        self.dIn = dIn
        self.codes = codes
        self.codebooks = codebooks
        self.scales = scales
    }

    public var groupsPerRow: Int { dIn / scheme.groupSize }

    /// Offset of codebook m's vector c in `codebooks`.
    @inline(__always) func codebookOffset(_ m: Int, _ c: Int) -> Int {
        (m * scheme.codebookSize + c) * scheme.groupSize
    }

    /// Σ_m codebooks[m][codes[r, j, m]] for every group, without the row scales: [dOut, dIn].
    public func unscaledReconstruction() -> [Float] {
        reconstruction(scaled: false)
    }

    /// Ŵ [dOut, dIn].
    public func dequantized() -> [Float] {
        reconstruction(scaled: true)
    }

    private func reconstruction(scaled: Bool) -> [Float] {
        [Float](unsafeUninitializedCapacity: dOut * dIn) { out, count in
            parallelChunks(dOut, minChunk: 16) { lo, hi in
                reconstructRows(lo..<hi, scaled: scaled, into: out.baseAddress! + lo * dIn)
            }
            count = dOut * dIn
        }
    }

    /// Rows `range` of Ŵ (or of the unscaled sums) into `out[0 ..< range.count · dIn]`, on the
    /// calling thread: what `dequantized()` computes for those rows, bit for bit.
    public func reconstructRows(_ range: Range<Int>, scaled: Bool = true, into out: UnsafeMutablePointer<Float>) {
        let g = scheme.groupSize, m = scheme.codebookCount, groups = groupsPerRow
        out.initialize(repeating: 0, count: range.count * dIn)
        codes.withUnsafeBufferPointer { codes in
            codebooks.withUnsafeBufferPointer { books in
                let codes = codes.baseAddress!, books = books.baseAddress!
                for r in range {
                    let s = scaled ? scales[r] : 1
                    for j in 0..<groups {
                        let dst = out + (r - range.lowerBound) * dIn + j * g
                        for k in 0..<m {
                            let src = books + codebookOffset(k, Int(codes[(r * groups + j) * m + k]))
                            for a in 0..<g { dst[a] += src[a] }
                        }
                        if s != 1 { for a in 0..<g { dst[a] *= s } }
                    }
                }
            }
        }
    }

    /// How often each code of each codebook is used.
    public func usage() -> [CodebookUsage] {
        let m = scheme.codebookCount
        var counts = [[Int]](repeating: [Int](repeating: 0, count: scheme.codebookSize), count: m)
        for (i, code) in codes.enumerated() { counts[i % m][Int(code)] += 1 }
        return counts.map(CodebookUsage.init(counts:))
    }
}

/// Code usage of one codebook: a healthy codebook uses most codes about equally often, i.e. its
/// entropy is close to B bits; a low entropy means bits are wasted.
public struct CodebookUsage: Equatable, Sendable {
    public let counts: [Int]
    /// −Σ p log₂ p over the codes' empirical frequencies.
    public let entropyBits: Double
    public var unusedCodes: Int { counts.lazy.filter { $0 == 0 }.count }

    public init(counts: [Int]) {
        self.counts = counts
        let total = Double(counts.reduce(0, +))
        var entropy = 0.0
        if total > 0 {
            for n in counts where n > 0 {
                let p = Double(n) / total
                entropy -= p * log2(p)
            }
        }
        entropyBits = entropy
    }
}
