import Kernels

/// Which quantizer produced a `QuantizedLinear`.
public enum QuantizationMethod: Hashable, Sendable, CustomStringConvertible {
    /// AQLM: residual k-means, then alternating beam search, codebook and scale least squares.
    case aqlm(AQLMScheme)
    /// Residual vector quantization: the residual k-means initialisation alone.
    case residualVQ(AQLMScheme)
    /// Product quantization: codebook m codes only the m-th of M disjoint slices of each group
    /// (stored as additive codebooks that are zero outside their slice).
    case productVQ(AQLMScheme)
    /// Scalar round-to-nearest with one Float16 scale and minimum per group of weights in a row.
    case roundToNearest(bits: Int, groupSize: Int)

    public var description: String {
        switch self {
        case .aqlm(let s): "aqlm-\(s)"
        case .residualVQ(let s): "rvq-\(s)"
        case .productVQ(let s): "pq-\(s)"
        case .roundToNearest(let bits, let groupSize): "rtn\(bits)-g\(groupSize)"
        }
    }
}

/// tr((W−Ŵ)H(W−Ŵ)ᵀ) and the same over tr(W H Wᵀ).
public struct LayerError: Equatable, Sendable {
    public let absolute: Double
    public let relative: Double

    init(_ absolute: Double, problem: LayerProblem) {
        self.absolute = absolute
        relative = problem.referenceEnergy > 0 ? absolute / problem.referenceEnergy : 0
    }
}

/// One alternation of AQLM: the objective after each of its steps.
public struct IterationRecord: Equatable, Sendable {
    public let iteration: Int
    public let afterCodes: LayerError
    public let afterCodebooks: LayerError
    public let afterScales: LayerError
    public let changedCodes: Int
    public let seconds: Double
}

/// Unused codes re-seeded before an iteration's code search.
public struct DeadCodeRestart: Equatable, Sendable {
    public let iteration: Int
    public let codebook: Int
    public let codes: [Int]
}

/// Wall time of each phase, seconds.
public struct QuantizationTimings: Equatable, Sendable {
    public var initialization = 0.0
    public var codeSearch = 0.0
    public var codebookUpdate = 0.0
    public var scaleUpdate = 0.0
    public var total = 0.0
}

/// A quantized linear layer and how it was obtained; the one result type of every method here.
///
/// Additive methods (AQLM, RVQ, PQ) fill `codes` [dOut, dIn/g, M], `codebooks` [M, 2^B, g] and
/// `scales` [dOut] in the Hugging Face AQLM layout (see `AdditiveCode`). Round-to-nearest fills
/// `codes` with one level per weight [dOut, dIn], and `scales`/`minimums` per group [dOut, dIn/groupSize].
public struct QuantizedLinear: Sendable {
    public let method: QuantizationMethod
    public let dOut: Int
    public let dIn: Int
    public let codes: [UInt16]
    public let codebooks: [Float]
    public let scales: [Float]
    public let minimums: [Float]
    /// Storage over parameter count, every stored Float16 included.
    public let bitsPerWeight: Double
    /// After initialisation (AQLM) or of the final result (the one-shot baselines).
    public let initialError: LayerError
    public let finalError: LayerError
    public let usage: [CodebookUsage]
    public let restarts: [DeadCodeRestart]
    public let history: [IterationRecord]
    public let timings: QuantizationTimings

    /// The codes in the AQLM layout, for the additive methods.
    public var additiveCode: AdditiveCode? {
        switch method {
        case .aqlm(let scheme), .residualVQ(let scheme), .productVQ(let scheme):
            AdditiveCode(scheme: scheme, dOut: dOut, dIn: dIn, codes: codes, codebooks: codebooks, scales: scales)
        case .roundToNearest:
            nil
        }
    }

    /// Ŵ [dOut, dIn].
    public func dequantized() -> [Float] {
        if let additive = additiveCode { return additive.dequantized() }
        guard case .roundToNearest(_, let groupSize) = method else { return [] }
        let groupsPerRow = dIn / groupSize
        return (0..<(dOut * dIn)).map { i in
            let group = (i / dIn) * groupsPerRow + (i % dIn) / groupSize
            return minimums[group] + scales[group] * Float(codes[i])
        }
    }
}
