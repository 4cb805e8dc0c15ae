import CBLAS
import Checkpoint
import Kernels
import Quantizer

/// How codebooks are parameterised while training.
public enum CodebookTransform: String, Sendable, CaseIterable {
    /// The codewords themselves are the parameters.
    case none
    /// SimVQ (Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models
    /// with One Linear Layer"): codebook m is B_m·A_m with A_m a learned g×g matrix starting at
    /// the identity, so one gradient step on A_m moves every codeword of the codebook at once,
    /// used or not. Folded back into plain codewords when saved.
    case linear
}

/// One quantized linear under fine-tuning: the codes are frozen, the codebooks and row scales
/// (and, with `CodebookTransform.linear`, the per-codebook transforms) are trained.
/// Ŵ[r, group j] = s_r·Σ_m C_m[b_{r,j,m}] with C_m = B_m (plain) or B_m·A_m (SimVQ).
public struct TrainableLinear: Sendable {
    public let scheme: AQLMScheme
    public let dOut: Int
    public let dIn: Int
    /// [dOut, dIn/g, M]: frozen by the P steps, moved only by V steps (`CodeUpdate.swift`).
    public internal(set) var codes: [UInt16]
    /// [M, 2^B, g]: the codewords, or with a transform the base codewords B_m.
    public var codebooks: [Float]
    /// [M, g, g] (A_m row-major, codeword = b·A_m for a row vector b), or nil for plain codebooks.
    public var transform: [Float]?
    /// [dOut]
    public var scales: [Float]

    public init(_ code: AdditiveCode, transform: CodebookTransform = .none) {
        scheme = code.scheme
        dOut = code.dOut
        dIn = code.dIn
        codes = code.codes
        codebooks = code.codebooks
        scales = code.scales
        switch transform {
        case .none: self.transform = nil
        case .linear: self.transform = Self.identityTransforms(scheme)
        }
    }

    static func identityTransforms(_ s: AQLMScheme) -> [Float] {
        var a = [Float](repeating: 0, count: s.codebookCount * s.groupSize * s.groupSize)
        for m in 0..<s.codebookCount {
            for i in 0..<s.groupSize { a[(m * s.groupSize + i) * s.groupSize + i] = 1 }
        }
        return a
    }

    var groups: Int { dIn / scheme.groupSize }

    /// The codewords the weight is built from: `codebooks`, or B_m·A_m per codebook.
    public var effectiveCodebooks: [Float] {
        guard let transform else { return codebooks }
        let g = scheme.groupSize, k = scheme.codebookSize
        var out = [Float](repeating: 0, count: codebooks.count)
        for m in 0..<scheme.codebookCount {
            codebooks.withUnsafeBufferPointer { b in
                transform.withUnsafeBufferPointer { a in
                    out.withUnsafeMutableBufferPointer { o in
                        sgemm(.noTrans, .noTrans, k, g, g, 1, b.baseAddress! + m * k * g, g, a.baseAddress! + m * g * g, g,
                              0, o.baseAddress! + m * k * g, g)
                    }
                }
            }
        }
        return out
    }

    /// The layer as plain codes (any transform folded into the codewords).
    public var additiveCode: AdditiveCode {
        AdditiveCode(scheme: scheme, dOut: dOut, dIn: dIn, codes: codes, codebooks: effectiveCodebooks, scales: scales)
    }

    /// Ŵ [dOut, dIn] as a dense layer, what the training forward multiplies by.
    public func denseLinear() -> DenseLinear {
        DenseLinear(weights: additiveCode.dequantized(), outputSize: dOut, inputSize: dIn)
    }

    /// Codewords and scales rounded to fp16 as the packed file stores them (transform folded).
    public func roundedToFloat16() -> TrainableLinear {
        var out = self
        out.codebooks = effectiveCodebooks.map { halfToFloat(floatToHalf($0)) }
        out.transform = transform.map { _ in Self.identityTransforms(scheme) }
        out.scales = scales.map { halfToFloat(floatToHalf($0)) }
        return out
    }

    /// Adds ∂L/∂C (with respect to the effective codewords) and ∂L/∂s for a weight gradient
    /// ∂L/∂Ŵ [dOut, dIn]; `codewords` is `effectiveCodebooks`, passed in so a caller routing
    /// several gradients through the same parameters computes it once.
    public func accumulateGradient(weightGrad: UnsafePointer<Float>, codewords: [Float], into gradient: inout LinearGradient) {
        let s = scheme
        codes.withUnsafeBufferPointer { c in
            codewords.withUnsafeBufferPointer { books in
                scales.withUnsafeBufferPointer { sc in
                    gradient.codewords.withUnsafeMutableBufferPointer { gb in
                        gradient.scales.withUnsafeMutableBufferPointer { gs in
                            accumulateAdditiveCodeGradient(
                                weightGrad: weightGrad, codes: c.baseAddress!, codebooks: books.baseAddress!,
                                scales: sc.baseAddress!, rows: dOut, groups: groups, codebookCount: s.codebookCount,
                                codebookSize: s.codebookSize, groupSize: s.groupSize,
                                codebookGrad: gb.baseAddress!, scaleGrad: gs.baseAddress!)
                        }
                    }
                }
            }
        }
    }

    /// With a transform, maps ∂L/∂C_m to the parameters: ∂L/∂B_m = ∂L/∂C_m·A_mᵀ and
    /// ∂L/∂A_m = B_mᵀ·∂L/∂C_m. Without one, ∂L/∂B = ∂L/∂C.
    public func parameterGradients(_ gradient: LinearGradient) -> (codebooks: [Float], transform: [Float]?) {
        guard let transform else { return (gradient.codewords, nil) }
        let g = scheme.groupSize, k = scheme.codebookSize
        var base = [Float](repeating: 0, count: codebooks.count)
        var matrix = [Float](repeating: 0, count: transform.count)
        for m in 0..<scheme.codebookCount {
            gradient.codewords.withUnsafeBufferPointer { dc in
                let dc = dc.baseAddress! + m * k * g
                transform.withUnsafeBufferPointer { a in
                    base.withUnsafeMutableBufferPointer { db in
                        sgemm(.noTrans, .trans, k, g, g, 1, dc, g, a.baseAddress! + m * g * g, g, 0, db.baseAddress! + m * k * g, g)
                    }
                }
                codebooks.withUnsafeBufferPointer { b in
                    matrix.withUnsafeMutableBufferPointer { da in
                        sgemm(.trans, .noTrans, g, g, k, 1, b.baseAddress! + m * k * g, g, dc, g, 0, da.baseAddress! + m * g * g, g)
                    }
                }
            }
        }
        return (base, matrix)
    }
}

/// Which per-sequence sums of ∂L/∂Ŵ a V step needs (`LinearGradient.weightSum` and
/// `weightSquareSum`): none without V steps; the squares only for `CodeSelection.movement`,
/// whose Adam-like step divides by their root.
public enum WeightGradientSums: Sendable {
    case none, sum, sumAndSquares

    public init(_ options: CodeUpdateOptions) {
        self = !options.enabled ? .none : options.selection == .movement ? .sumAndSquares : .sum
    }
}

/// Gradient of the loss with respect to one trainable linear's effective codewords [M, 2^B, g]
/// and scales [dOut].
public struct LinearGradient: Sendable {
    public var codewords: [Float]
    public var scales: [Float]
    /// With V steps on: Σ ∂L/∂Ŵ [dOut, dIn] and Σ (∂L/∂Ŵ)² over the sequences since the last
    /// V step, one term per sequence (not cleared by `zero()`, which runs every P step).
    public var weightSum: [Float]?
    public var weightSquareSum: [Float]?

    public init(_ linear: TrainableLinear, weightSums: WeightGradientSums = .none) {
        codewords = [Float](repeating: 0, count: linear.codebooks.count)
        scales = [Float](repeating: 0, count: linear.dOut)
        if weightSums != .none { weightSum = [Float](repeating: 0, count: linear.dOut * linear.dIn) }
        if weightSums == .sumAndSquares { weightSquareSum = weightSum }
    }

    /// Adds one sequence's ∂L/∂Ŵ to the V step's sums (no-op when they are off).
    mutating func addWeightGradient(_ g: UnsafePointer<Float>) {
        guard weightSum != nil else { return }
        weightSum!.withUnsafeMutableBufferPointer { add(g, into: $0.baseAddress!, count: $0.count) }
        weightSquareSum?.withUnsafeMutableBufferPointer { addSquares(g, into: $0.baseAddress!, count: $0.count) }
    }

    /// Empties the V step's sums.
    mutating func clearWeightGradient() {
        weightSum?.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        weightSquareSum?.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }

    mutating func zero() {
        codewords.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        scales.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }
}
