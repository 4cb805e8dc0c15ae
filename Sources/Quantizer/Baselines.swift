import Kernels

/// Scalar round-to-nearest, the baseline every low-bit method must beat: each run of `groupSize`
/// weights in a row gets w ≈ min + scale·q, q ∈ 0..<2^bits, scale = (max − min)/(2^bits − 1), with
/// scale and min stored as Float16 (counted in the bits per weight: bits + 32/groupSize).
public func quantizeRoundToNearest(_ problem: LayerProblem, bits: Int, groupSize: Int = 64) throws -> QuantizedLinear {
    guard (1...8).contains(bits) else { throw QuantizerError("round-to-nearest: \(bits) bits is out of range 1...8") }
    guard groupSize > 0, problem.dIn % groupSize == 0 else {
        throw QuantizerError("round-to-nearest: d_in \(problem.dIn) is not a multiple of the group size \(groupSize)")
    }
    let clock = Stopwatch()
    let levels = Float((1 << bits) - 1)
    let groupCount = problem.dOut * problem.dIn / groupSize
    var scales = [Float](repeating: 0, count: groupCount)
    var minimums = [Float](repeating: 0, count: groupCount)
    var codes = [UInt16](repeating: 0, count: problem.dOut * problem.dIn)
    for group in 0..<groupCount {
        let start = group * groupSize
        let values = problem.weight[start..<(start + groupSize)]
        let low = values.min()!, high = values.max()!
        let minimum = Float(Float16(low))
        let scale = Float(Float16((high - low) / levels))
        minimums[group] = minimum
        scales[group] = scale
        guard scale > 0 else { continue }
        for i in start..<(start + groupSize) {
            codes[i] = UInt16(min(levels, max(0, ((problem.weight[i] - minimum) / scale).rounded())))
        }
    }
    let draft = QuantizedLinear(
        method: .roundToNearest(bits: bits, groupSize: groupSize), dOut: problem.dOut, dIn: problem.dIn, codes: codes,
        codebooks: [], scales: scales, minimums: minimums, bitsPerWeight: Double(bits) + 32 / Double(groupSize),
        initialError: LayerError(0, problem: problem), finalError: LayerError(0, problem: problem), usage: [],
        restarts: [], history: [], timings: QuantizationTimings())
    return draft.withMeasuredError(problem, seconds: clock.total)
}

/// Residual vector quantization: AQLM's residual k-means initialisation with nothing after it.
public func quantizeResidualVQ(_ problem: LayerProblem, scheme: AQLMScheme, options: AQLMOptions = AQLMOptions()) throws -> QuantizedLinear {
    let clock = Stopwatch()
    let code = try residualKMeansInitialization(problem: problem, scheme: scheme, options: options)
    return QuantizedLinear(additive: code, method: .residualVQ(scheme), problem: problem,
                           bitsPerWeight: scheme.bitsPerWeight(dOut: problem.dOut, dIn: problem.dIn))
        .withMeasuredError(problem, seconds: clock.total)
}

/// Product quantization: each group of g weights (row-normalised) is split into M slices
/// (m·g/M ..< (m+1)·g/M), and slice m is k-means-coded with its own 2^B-vector codebook (k-means
/// only). Stored as additive codebooks that are zero outside their slice, so it dequantizes like
/// AQLM; its bits count codebooks of slice length only.
public func quantizeProductVQ(_ problem: LayerProblem, scheme: AQLMScheme, options: AQLMOptions = AQLMOptions()) throws -> QuantizedLinear {
    let clock = Stopwatch()
    let code = try productKMeansInitialization(problem: problem, scheme: scheme, options: options)
    let groupCount = problem.dOut * problem.dIn / scheme.groupSize
    let codeBits = Double(groupCount * scheme.codebookCount * scheme.codeBits)
    let codebookBits = Double(scheme.codebookSize * scheme.groupSize * 16)  // the slices add up to g
    let bits = (codeBits + codebookBits + Double(problem.dOut * 16)) / Double(problem.dOut * problem.dIn)
    return QuantizedLinear(additive: code, method: .productVQ(scheme), problem: problem, bitsPerWeight: bits)
        .withMeasuredError(problem, seconds: clock.total)
}

extension QuantizedLinear {
    init(additive code: AdditiveCode, method: QuantizationMethod, problem: LayerProblem, bitsPerWeight: Double) {
        self.init(method: method, dOut: problem.dOut, dIn: problem.dIn, codes: code.codes, codebooks: code.codebooks,
                  scales: code.scales, minimums: [], bitsPerWeight: bitsPerWeight,
                  initialError: LayerError(0, problem: problem), finalError: LayerError(0, problem: problem),
                  usage: code.usage(), restarts: [], history: [], timings: QuantizationTimings())
    }

    /// The one-shot baselines: initial and final error are both the result's error.
    func withMeasuredError(_ problem: LayerProblem, seconds: Double) -> QuantizedLinear {
        let error = LayerError(problem.error(of: dequantized()), problem: problem)
        var timings = QuantizationTimings()
        timings.initialization = seconds
        timings.total = seconds
        return QuantizedLinear(method: method, dOut: dOut, dIn: dIn, codes: codes, codebooks: codebooks, scales: scales,
                               minimums: minimums, bitsPerWeight: bitsPerWeight, initialError: error, finalError: error,
                               usage: usage, restarts: restarts, history: history, timings: timings)
    }
}
