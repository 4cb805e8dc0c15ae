import Kernels

/// Initial row scales: each row's root mean square.
///
/// Dividing a row by its RMS puts every row's groups on the same unit scale, so one set of shared
/// codebooks fits rows of very different magnitudes (the reference uses the L2 norm, which differs
/// only by the constant √d_in and would make codebook entries ~1/√d_in). A zero row gets scale 1.
func initialScales(_ problem: LayerProblem) -> [Float] {
    (0..<problem.dOut).map { r in
        var sum: Float = 0
        for i in 0..<problem.dIn {
            let w = problem.weight[r * problem.dIn + i]
            sum += w * w
        }
        let rms = (sum / Float(problem.dIn)).squareRoot()
        return rms > 0 ? rms : 1
    }
}

/// The k-means points of a layer: every row-normalised group x = w[r, group] / s_r, with
/// per-coordinate weights ω = s_r² · diag(H)[column] / mean(diag H) when `weighted` (the diagonal
/// part of the layer objective, see `weightedKMeans`), else 1 (the reference's unweighted k-means).
struct GroupPoints {
    var values: [Float]
    let weights: [Float]
}

func normalisedGroups(_ problem: LayerProblem, scales: [Float], weighted: Bool) -> GroupPoints {
    let diagonal = problem.hessianDiagonal.map { max(0, $0) }
    let meanDiagonal = diagonal.reduce(0, +) / Float(problem.dIn)
    let useDiagonal = weighted && meanDiagonal > 0
    var values = [Float](repeating: 0, count: problem.dOut * problem.dIn)
    var weights = [Float](repeating: 1, count: problem.dOut * problem.dIn)
    for r in 0..<problem.dOut {
        let inverse = 1 / scales[r]
        let rowWeight = scales[r] * scales[r]
        for i in 0..<problem.dIn {
            values[r * problem.dIn + i] = problem.weight[r * problem.dIn + i] * inverse
            if useDiagonal { weights[r * problem.dIn + i] = rowWeight * diagonal[i] / meanDiagonal }
        }
    }
    return GroupPoints(values: values, weights: weights)
}

/// How AQLM's codes and codebooks start.
public enum AQLMInitialization: String, Sendable, CaseIterable {
    /// Product k-means (PQ): codebook m fits slice m of each group, zero elsewhere. A valid
    /// additive code whose codebooks do not compete for the same residual; the alternation then
    /// fills every coordinate. On SmolLM2's gate_proj (2x8) it ends 8% below `residual`, with
    /// H = I and with a dense H alike, at less k-means cost. Falls back to `residual` if M > g.
    case product
    /// Residual k-means, as in the paper and the reference code.
    case residual
    /// Product k-means, then EM rounds under the output-aware block metric (the g×g diagonal
    /// blocks of XᵀX) over all codebooks jointly: `outputAwareEMInitialization`.
    case outputAwareEM = "oa-em"
}

/// The initial code `options.initialization` asks for.
func initialCode(problem: LayerProblem, scheme: AQLMScheme, options: AQLMOptions) throws -> AdditiveCode {
    if options.initialization == .outputAwareEM {
        return try outputAwareEMInitialization(problem: problem, scheme: scheme, options: options)
    }
    if options.initialization == .product && scheme.codebookCount <= scheme.groupSize {
        return try productKMeansInitialization(problem: problem, scheme: scheme, options: options)
    }
    return try residualKMeansInitialization(problem: problem, scheme: scheme, options: options)
}

/// The columns of a g-group codebook m of M codes in product quantization: m·g/M ..< (m+1)·g/M.
func productSlice(_ m: Int, codebooks: Int, groupSize g: Int) -> Range<Int> {
    (m * g / codebooks)..<((m + 1) * g / codebooks)
}

/// Product k-means: each slice of the row-normalised groups is clustered on its own (diag(H)-weighted),
/// stored as additive codebooks that are zero outside their slice.
public func productKMeansInitialization(
    problem: LayerProblem, scheme: AQLMScheme, options: AQLMOptions = AQLMOptions()
) throws -> AdditiveCode {
    try scheme.validate(dOut: problem.dOut, dIn: problem.dIn)
    let g = scheme.groupSize, books = scheme.codebookCount, size = scheme.codebookSize
    guard books <= g else {
        throw QuantizerError("product quantization \(scheme): \(books) codebooks cannot split groups of \(g)")
    }
    let scales = initialScales(problem)
    let points = normalisedGroups(problem, scales: scales, weighted: options.weightedInitialization)
    let groupCount = problem.dOut * problem.dIn / g
    var codes = [UInt16](repeating: 0, count: groupCount * books)
    var codebooks = [Float](repeating: 0, count: books * size * g)
    for m in 0..<books {
        let slice = productSlice(m, codebooks: books, groupSize: g), width = slice.count
        var values = [Float](repeating: 0, count: groupCount * width)
        var weights = values
        for i in 0..<groupCount {
            for (k, a) in slice.enumerated() {
                values[i * width + k] = points.values[i * g + a]
                weights[i * width + k] = points.weights[i * g + a]
            }
        }
        let fit = weightedKMeans(points: values, weights: weights, dims: width, clusters: size,
                                 iterations: options.kmeansIterations, seed: options.seed &+ UInt64(m) &* 0x9E37_79B9,
                                 trainingPointsPerCluster: options.kmeansPointsPerCode)
        for c in 0..<size {
            for (k, a) in slice.enumerated() { codebooks[(m * size + c) * g + a] = fit.centroids[c * width + k] }
        }
        for i in 0..<groupCount { codes[i * books + m] = UInt16(fit.assignments[i]) }
    }
    return AdditiveCode(scheme: scheme, dOut: problem.dOut, dIn: problem.dIn, codes: codes, codebooks: codebooks, scales: scales)
}

/// AQLM's initialisation in the paper (§3.1, reference `init_aq_kmeans`): codebook m is a k-means
/// fit of the residual the codebooks before it leave, over row-normalised weight groups.
public func residualKMeansInitialization(
    problem: LayerProblem, scheme: AQLMScheme, options: AQLMOptions = AQLMOptions()
) throws -> AdditiveCode {
    try scheme.validate(dOut: problem.dOut, dIn: problem.dIn)
    let g = scheme.groupSize, books = scheme.codebookCount, size = scheme.codebookSize
    let scales = initialScales(problem)
    var points = normalisedGroups(problem, scales: scales, weighted: options.weightedInitialization)
    let groupCount = problem.dOut * problem.dIn / g
    var codes = [UInt16](repeating: 0, count: groupCount * books)
    var codebooks = [Float](repeating: 0, count: books * size * g)
    for m in 0..<books {
        let fit = weightedKMeans(points: points.values, weights: points.weights, dims: g, clusters: size,
                                 iterations: options.kmeansIterations, seed: options.seed &+ UInt64(m) &* 0x9E37_79B9,
                                 trainingPointsPerCluster: options.kmeansPointsPerCode)
        for k in 0..<(size * g) { codebooks[m * size * g + k] = fit.centroids[k] }
        for i in 0..<groupCount {
            let c = Int(fit.assignments[i])
            codes[i * books + m] = UInt16(c)
            for a in 0..<g { points.values[i * g + a] -= fit.centroids[c * g + a] }
        }
    }
    return AdditiveCode(scheme: scheme, dOut: problem.dOut, dIn: problem.dIn, codes: codes, codebooks: codebooks, scales: scales)
}
