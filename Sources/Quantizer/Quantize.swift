import Foundation
import Kernels

/// Settings of the AQLM per-layer engine.
///
/// Defaults come from measuring the seven linears of one SmolLM2-135M block (2x8, synthetic
/// activation Hessians, `QuantizerBenchmarks.testBlockTiming`): mean relative error / CPU seconds
/// per block (wall ≈ CPU / 2 on two idle cores):
///   beam 1: 0.00879 / 8.0, beam 2: 0.00866 / 10.1, beam 4: 0.00854 / 11.8, beam 8: 0.00845 / 17.3;
///   at beam 8, k-means 15 / 50 iterations: 0.00852 / 0.00841; tolerance 0.003: 0.00834 / 24.4 s;
///   the paper's residual initialisation: 0.00941 / 21.1 s.
public struct AQLMOptions: Sendable {
    /// Hypotheses kept per row in the code search; 1 is greedy coordinate descent (−32% time at
    /// beam 4 for +1% error, −54% at beam 1 for +4%).
    public var beamSize = 8
    /// Alternations of code search, codebook update and scale update.
    public var maxIterations = 8
    /// Stop once an alternation lowers the objective by less than this fraction.
    public var tolerance = 0.01
    public var seed: UInt64 = 0
    /// Product k-means (this library default and the fast preset's), OA-EM (the default and best
    /// presets' of `aqlm quantize`) or the paper's residual k-means.
    public var initialization = AQLMInitialization.product
    /// Lloyd iterations of each codebook's k-means in the initialisation.
    public var kmeansIterations = 30
    /// Most EM rounds of the `outputAwareEM` initialisation (they also stop once a round gains
    /// less than 0.1 % of the block metric).
    public var emIterations = 10
    /// k-means fits its centroids on a random subset of at most this many groups per code
    /// (all groups get assigned afterwards); 0 uses every group. Subsets overfit: on Gaussian
    /// 8-dim groups, 128 per code leaves held-out groups ~3% worse, so the default is all.
    public var kmeansPointsPerCode = 0
    /// Weight k-means by s_r²·diag(H) (false: the reference's unweighted k-means).
    public var weightedInitialization = true
    public var codebookSolver: CodebookSolver = .automatic
    /// Conjugate-gradient iterations per codebook update (it converges in about 3 at real shapes).
    public var codebookIterations = 8
    /// Re-seed unused codes before each code search.
    public var restartDeadCodes = true
    /// Called after initialisation and after every alternation.
    public var progress: (@Sendable (AQLMProgress) -> Void)?

    public init() {}
}

/// A progress report: iteration 0 is the initialisation.
public struct AQLMProgress: Sendable {
    public let iteration: Int
    public let relativeError: Double
    public let changedCodes: Int
    public let elapsedSeconds: Double
}

/// Quantizes one linear layer with AQLM (Egiazarian et al. 2024): k-means initialisation weighted
/// by diag(H) (product k-means by default, see `AQLMInitialization`), then alternating (1) beam
/// search over codes, (2) the codebooks' closed-form least squares, (3) closed-form row scales, until an alternation gains
/// less than `options.tolerance` of the objective tr((W−Ŵ)H(W−Ŵ)ᵀ). Each step's result is kept only
/// if it does not raise the objective, so the objective never increases. Only the code search
/// computes Ŵ·H afresh (one sgemm); the codebook solve carries it on to the scales.
public func quantizeLinear(
    weight: [Float], dOut: Int, dIn: Int, hessian: [Double], scheme: AQLMScheme = .preset2x8, options: AQLMOptions = AQLMOptions()
) throws -> QuantizedLinear {
    try quantizeLinear(LayerProblem(weight: weight, dOut: dOut, dIn: dIn, hessian: hessian), scheme: scheme, options: options)
}

public func quantizeLinear(
    weight: [Float], dOut: Int, dIn: Int, hessian: [Float], scheme: AQLMScheme = .preset2x8, options: AQLMOptions = AQLMOptions()
) throws -> QuantizedLinear {
    try quantizeLinear(LayerProblem(weight: weight, dOut: dOut, dIn: dIn, hessian: hessian), scheme: scheme, options: options)
}

public func quantizeLinear(_ problem: LayerProblem, scheme: AQLMScheme, options: AQLMOptions = AQLMOptions()) throws -> QuantizedLinear {
    guard options.beamSize >= 1 else { throw QuantizerError("AQLM options: beam size \(options.beamSize) must be at least 1") }
    guard options.maxIterations >= 0 else { throw QuantizerError("AQLM options: max iterations \(options.maxIterations) is negative") }
    var clock = Stopwatch()
    var timings = QuantizationTimings()
    var code = try initialCode(problem: problem, scheme: scheme, options: options)
    var error = problem.error(of: code.dequantized())
    timings.initialization = clock.lap()
    let initialError = LayerError(error, problem: problem)
    options.progress?(AQLMProgress(iteration: 0, relativeError: initialError.relative, changedCodes: 0, elapsedSeconds: clock.total))

    var history = [IterationRecord]()
    var restarts = [DeadCodeRestart]()
    var iteration = 0
    while iteration < options.maxIterations {
        iteration += 1
        let iterationStart = clock.total
        if options.restartDeadCodes {
            restarts += restartDeadCodes(&code, problem: problem, iteration: iteration)
        }
        // (1) codes; the pass also measures the exact objective of its input.
        let search = searchCodes(code, problem: problem, beamSize: options.beamSize, seed: options.seed &+ UInt64(iteration))
        error = search.initialObjective
        let errorBefore = error
        if search.trackedObjective <= error {
            code = search.code
            error = search.trackedObjective
        }
        let afterCodes = LayerError(error, problem: problem)
        timings.codeSearch += clock.lap()
        // (2) codebooks, carrying Ŵ·H on to (3) scales.
        var evaluated = solveCodebooksEvaluated(code, problem: problem, solver: options.codebookSolver,
                                                maxIterations: options.codebookIterations)
        if evaluated.objective > error { evaluated = EvaluatedCode(code, problem: problem) }
        code = evaluated.code
        error = evaluated.objective
        let afterCodebooks = LayerError(error, problem: problem)
        timings.codebookUpdate += clock.lap()
        let scaled = solveScales(evaluated, problem: problem)
        if scaled.objective <= error {
            code = scaled.code
            error = scaled.objective
        }
        timings.scaleUpdate += clock.lap()
        history.append(IterationRecord(iteration: iteration, afterCodes: afterCodes, afterCodebooks: afterCodebooks,
                                       afterScales: LayerError(error, problem: problem), changedCodes: search.changedCodes,
                                       seconds: clock.total - iterationStart))
        options.progress?(AQLMProgress(iteration: iteration, relativeError: LayerError(error, problem: problem).relative,
                                       changedCodes: search.changedCodes, elapsedSeconds: clock.total))
        if errorBefore <= 0 || (errorBefore - error) / errorBefore < options.tolerance { break }
    }
    if iteration > 0 { error = problem.error(of: code.dequantized()) }
    timings.total = clock.total
    return QuantizedLinear(
        method: .aqlm(scheme), dOut: problem.dOut, dIn: problem.dIn, codes: code.codes, codebooks: code.codebooks,
        scales: code.scales, minimums: [], bitsPerWeight: scheme.bitsPerWeight(dOut: problem.dOut, dIn: problem.dIn),
        initialError: initialError, finalError: LayerError(error, problem: problem), usage: code.usage(),
        restarts: restarts, history: history, timings: timings)
}

/// Elapsed wall time since creation, and since the previous lap.
struct Stopwatch {
    private let start = DispatchTime.now().uptimeNanoseconds
    private var last = DispatchTime.now().uptimeNanoseconds

    var total: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    mutating func lap() -> Double {
        let now = DispatchTime.now().uptimeNanoseconds
        defer { last = now }
        return Double(now - last) / 1e9
    }
}
