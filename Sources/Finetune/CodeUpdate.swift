import Calibration
import Checkpoint
import Evaluation
import Foundation
import Kernels
import Llama
import Quantizer

/// Settings of the V step of PV-tuning (Malinovskii et al. 2024, arXiv 2405.14852): between
/// the P steps (Adam on codebooks, scales and norms with codes fixed), the codes themselves move.
///
/// The step is the paper's *linearized V step in a subspace*: over a window of `everySteps`
/// P steps, ∂L/∂Ŵ of every quantized linear is summed, with its element-wise square, and XᵀX
/// of its input (from the first sequence of each step). Then, per linear,
///   Δ = −η·rms(ŵ_r)·m/(√v + ε)      (m, v: the window's mean gradient and mean squared gradient),
/// an Adam-like normalised step (every element moves by at most η row-RMSs, the most where the
/// sequences agree on the sign), scaled per row so that η is dimensionless across layers. The
/// subspace is the fraction τ of (row, group) pairs whose move Σ_a H_aa·Δ_a² is largest, and
/// those groups alone are re-encoded by beam search toward Ŵ + Δ under the XᵀX-weighted error
/// (the quantizer's own objective), every other code, codebook and scale fixed. Keeping a code is
/// always a candidate, so the searched objective never increases.
public struct CodeUpdateOptions: Sendable, Equatable {
    /// τ: fraction of each linear's code groups re-encoded per V step; 0 turns V steps off.
    public var fraction = 0.0
    /// η: the largest move of one weight, in units of its row's RMS.
    public var stepSize: Float = 0.1
    /// P steps between V steps (a V step also ends every epoch).
    public var everySteps = 8
    /// Beam width of the re-encoding search.
    public var beamSize = 8
    /// Re-encode under the XᵀX-weighted error (true) or the plain squared error.
    public var activationWeighted = true
    /// How the subspace is chosen and the codes moved (see `CodeSelection`).
    public var selection = CodeSelection.movement
    /// η and τ over the run: constant, or cosine (both shrink with the same factor as a cosine
    /// learning rate, to 0 at the last Adam step), so that the codes settle while the P steps
    /// go on adapting the codebooks to them.
    public var schedule = LearningRateSchedule.constant

    /// V steps off (`fraction` 0); the other fields are the movement step's settings.
    public init() {}

    /// What `aqlm finetune` runs by default: PV-tuning's straight-through step after every Adam
    /// step, τ 0.1 % of the groups re-encoded toward the buffers under the plain squared error
    /// (beam 5), η and τ shrinking on a cosine. On SmolLM2-135M 2x8 it lowered the mean KLD
    /// against frozen codes on all four test texts (WikiText −4.1 %, licences −2.7 %, Macbeth
    /// −0.6 %; BENCHMARKS.md, session 15); a constant schedule, or τ 1 %, won the training loss
    /// and lost on held-out text: the late V steps then undo what the early ones gained.
    public static let recommended: CodeUpdateOptions = {
        var o = CodeUpdateOptions()
        o.fraction = 0.001
        o.stepSize = 0.03
        o.everySteps = 1
        o.beamSize = 5
        o.activationWeighted = false
        o.selection = .straightThrough
        o.schedule = .cosine
        return o
    }()

    /// The options of a V step after Adam step `step` of `total`: η and τ scaled by `schedule`.
    public func scheduled(step: Int, total: Int) -> CodeUpdateOptions {
        var o = self
        let factor = schedule.rate(base: 1, step: step, total: total)
        o.stepSize *= factor
        o.fraction *= Double(factor)
        return o
    }

    public var enabled: Bool { fraction > 0 }

    var fingerprint: String {
        enabled ? "v:\(fraction):\(stepSize):\(everySteps):\(beamSize):\(activationWeighted)"
            + (selection == .movement ? "" : ":\(selection.rawValue)")
            + (schedule == .constant ? "" : ":\(schedule.rawValue)") : "v:off"
    }
}

/// How a V step picks the groups it changes.
public enum CodeSelection: String, Sendable, CaseIterable {
    /// The τ fraction of groups the normalised step Δ moves most (Σ_a H_aa·Δ_a²), re-encoded by
    /// beam search toward Ŵ + Δ.
    case movement
    /// Every group's best single-code change under the linearised loss G·δ + (L/2)·δᵀH_jjδ
    /// (`linearizedCodeProposals`, G the window's mean raw gradient); the τ fraction with the
    /// most negative predicted change is applied, and only changes predicted to lower the loss.
    /// L = rms(G)/(η·rms(Ŵ)) under H scaled to a unit mean diagonal, so the continuous step
    /// −G/L moves weights by about η row-RMSs, like `movement`'s η.
    case gain
    /// PV-tuning's straight-through step (`StraightThroughCodes`): a continuous copy B of each
    /// linear's weights takes a LAMB-normalised Adam step of relative size η every V step and is
    /// never reset, and the τ fraction of groups farthest from B are re-encoded toward it.
    case straightThrough = "straight-through"
}

/// What the V steps see between two of them: XᵀX of every quantized linear's input, per block.
struct CodeUpdateWindow {
    /// [block][input site] accumulators; empty when the V steps search under the plain squared
    /// error, which needs none (12 bytes per entry: 1.2 GB for SmolLM2-135M, 7.5 GB for Qwen2.5-0.5B).
    var covariances: [[LinearInputSite: HessianAccumulator]]
    /// Training sequences whose gradients are in the window (0: empty, a save point).
    var sequences = 0
    /// Adam (P) steps in the window.
    var steps = 0

    init(config c: LlamaConfig, collectsInputs: Bool) {
        let q = c.numHeads * c.headDim
        let widths: [LinearInputSite: Int] = [.attention: c.hiddenSize, .attentionOutput: q, .mlp: c.hiddenSize,
                                              .mlpHidden: c.intermediateSize]
        covariances = collectsInputs ? (0..<c.numLayers).map { _ in widths.mapValues { HessianAccumulator(dim: $0) } } : []
    }

    /// Adds XᵀX of every block's linear inputs for the sequence the workspace just ran forward.
    mutating func addInputs(_ activations: [BlockActivations]) {
        guard !covariances.isEmpty else { return }
        for (l, a) in activations.enumerated() {
            let t = a.tokens
            covariances[l][.attention]!.add(a.normedInput, rows: t)
            covariances[l][.attentionOutput]!.add(a.attention, rows: t)
            covariances[l][.mlp]!.add(a.normedResidual, rows: t)
            covariances[l][.mlpHidden]!.add(a.mlpHidden, rows: t)
        }
    }
}

/// What one V step did.
struct CodeUpdateOutcome {
    var changedCodes = 0
    var totalCodes = 0
    /// Σ over linears of the searched objective before and after (relative to each linear's
    /// tr(W'HW'ᵀ), so layers count alike).
    var objectiveBefore = 0.0
    var objectiveAfter = 0.0
    /// Straight-through steps skipped because a gradient was not finite or overflowed g²; of
    /// their window sums, the largest finite |∂L/∂Ŵ| and the count of non-finite entries (what
    /// went wrong, for the log).
    var skippedLinears = 0
    var largestSkippedGradient: Float = 0
    var nonFiniteSkippedGradients = 0
}

/// Damping added to XᵀX's diagonal, as a fraction of its mean: a window holds a few thousand
/// tokens, and a rank-deficient metric would let the search move codes along directions the
/// window never saw.
let codeUpdateDamping: Float = 0.01

/// The symmetric, averaged and damped XᵀX of one accumulator, in Float32.
func dampedCovariance(_ accumulator: HessianAccumulator) -> [Float] {
    let n = accumulator.dim, tokens = Double(max(accumulator.tokenCount, 1))
    var h = accumulator.hessian().map { Float($0 / tokens) }
    var mean: Float = 0
    for i in 0..<n { mean += h[i * n + i] }
    mean = max(mean / Float(n), 1e-12)
    for i in 0..<n { h[i * n + i] += codeUpdateDamping * mean }
    return h
}

/// The normalised V-step move Δ [dOut, dIn] of one linear (see `CodeUpdateOptions`).
/// With sums over n sequences, Σg/√(Σg²) = √n·m/√v, and |Σg| ≤ √n·√(Σg²) (Cauchy-Schwarz), so
/// dividing by √n gives m/√v, bounded by 1.
func codeUpdateStep(weights: [Float], gradientSum: [Float], squareSum: [Float], sequences n: Int, dOut: Int, dIn: Int,
                    stepSize: Float) -> [Float] {
    let perSequence = 1 / Float(max(n, 1)).squareRoot()
    var step = [Float](repeating: 0, count: weights.count)
    for r in 0..<dOut {
        let row = r * dIn
        var energy: Float = 0
        for i in row..<(row + dIn) { energy += weights[i] * weights[i] }
        let rowScale = stepSize * (energy / Float(dIn)).squareRoot() * perSequence
        for i in row..<(row + dIn) {
            let root = squareSum[i].squareRoot()
            step[i] = root > 0 ? -rowScale * gradientSum[i] / root : 0
        }
    }
    return step
}

/// The τ·(rows·groups) (row, group) pairs with the largest Σ_a H_aa·Δ_a², as a mask
/// [dOut, groups]; ties broken by position so the choice is deterministic.
func selectMovedGroups(step: [Float], hessianDiagonal: [Float], dOut: Int, dIn: Int, groupSize g: Int, fraction: Double) -> [Bool] {
    let groups = dIn / g, total = dOut * groups
    let count = min(total, Int((fraction * Double(total)).rounded(.up)))
    var scores = [Float](repeating: 0, count: total)
    for r in 0..<dOut {
        for j in 0..<groups {
            var s: Float = 0
            for a in 0..<g {
                let d = step[r * dIn + j * g + a]
                s += hessianDiagonal[j * g + a] * d * d
            }
            scores[r * groups + j] = s
        }
    }
    // The `count` largest scores, ties to the lower index: one pass that keeps only the best
    // so far (τ is ~0.1 %), not a sort of every group of the layer (13 M on SmolLM2 per V step).
    let ranked = scores.withUnsafeBufferPointer { topKEntries($0, k: count) }
    var mask = [Bool](repeating: false, count: total)
    for (i, score) in ranked where score > 0 { mask[i] = true }
    return mask
}

extension TrainableLinear {
    /// One V step of this linear toward Ŵ + Δ (Δ from the window's gradients), searching the
    /// selected groups under `hessian` [dIn, dIn]. Returns the changed codes and the searched
    /// objective before and after, relative to tr(W'HW'ᵀ).
    mutating func updateCodes(gradient: LinearGradient, sequences: Int, hessian: [Float], options o: CodeUpdateOptions,
                              seed: UInt64) -> (changed: Int, before: Double, after: Double) {
        guard let sum = gradient.weightSum, let squares = gradient.weightSquareSum else { return (0, 0, 0) }
        precondition(o.selection != .straightThrough, "straight-through V steps go through StraightThroughCodes")
        if o.selection == .gain { return updateCodesByPredictedGain(gradientSum: sum, sequences: sequences, hessian: hessian, options: o) }
        let current = additiveCode.dequantized()
        let step = codeUpdateStep(weights: current, gradientSum: sum, squareSum: squares, sequences: sequences, dOut: dOut, dIn: dIn, stepSize: o.stepSize)
        return searchMovedGroups(current: current, step: step, hessian: hessian, options: o, seed: seed)
    }

    /// Re-encodes the τ fraction of groups that `step` moves Ŵ (= `current`) most, by beam
    /// search toward Ŵ + step with every other code and the codebooks fixed. The target is the
    /// step restricted to that subspace (unselected groups keep Ŵ): otherwise the XᵀX cross terms
    /// make each selected group absorb its whole row's move. Returns the changed codes and the
    /// searched objective before and after, relative to tr(W'HW'ᵀ).
    mutating func searchMovedGroups(current: [Float], step: [Float], hessian: [Float], options o: CodeUpdateOptions,
                                    seed: UInt64) -> (changed: Int, before: Double, after: Double) {
        let diagonal = (0..<dIn).map { hessian[$0 * dIn + $0] }
        let mask = selectMovedGroups(step: step, hessianDiagonal: diagonal, dOut: dOut, dIn: dIn, groupSize: scheme.groupSize,
                                     fraction: o.fraction)
        var target = current
        let g = scheme.groupSize
        for (pair, selected) in mask.enumerated() where selected {
            for i in (pair * g)..<((pair + 1) * g) { target[i] += step[i] }
        }
        guard let problem = try? LayerProblem(weight: target, dOut: dOut, dIn: dIn, hessian: hessian) else { return (0, 0, 0) }
        let result = searchCodes(additiveCode, problem: problem, beamSize: o.beamSize, seed: seed, selectedGroups: mask)
        codes = result.code.codes
        let reference = max(problem.referenceEnergy, .leastNonzeroMagnitude)
        return (result.changedCodes, result.initialObjective / reference, result.trackedObjective / reference)
    }
}

extension TrainableLinear {
    /// The `CodeSelection.gain` V step. Returns the changed codes and, as "before → after",
    /// 0 → the summed predicted loss change of the applied changes.
    mutating func updateCodesByPredictedGain(gradientSum: [Float], sequences: Int, hessian: [Float],
                                             options o: CodeUpdateOptions) -> (changed: Int, before: Double, after: Double) {
        let code = additiveCode
        let n = Float(max(sequences, 1))
        let meanGradient = gradientSum.map { $0 / n }
        var meanDiagonal: Float = 0
        for i in 0..<dIn { meanDiagonal += hessian[i * dIn + i] }
        meanDiagonal = max(meanDiagonal / Float(dIn), 1e-12)
        let metric = hessian.map { $0 / meanDiagonal }
        let weights = code.dequantized()
        let gradientRMS = (meanGradient.reduce(Float(0)) { $0 + $1 * $1 } / Float(meanGradient.count)).squareRoot()
        let weightRMS = (weights.reduce(Float(0)) { $0 + $1 * $1 } / Float(weights.count)).squareRoot()
        guard gradientRMS > 0, weightRMS > 0, o.stepSize > 0 else { return (0, 0, 0) }
        let trust = gradientRMS / (o.stepSize * weightRMS)
        let proposals = linearizedCodeProposals(code, gradient: meanGradient, hessian: metric, trust: trust)
            .sorted { $0.predictedChange != $1.predictedChange ? $0.predictedChange < $1.predictedChange
                : ($0.row, $0.group) < ($1.row, $1.group) }
        let total = dOut * (dIn / scheme.groupSize)
        let count = min(proposals.count, Int((o.fraction * Double(total)).rounded(.up)))
        var predicted = 0.0
        let groups = dIn / scheme.groupSize, books = scheme.codebookCount
        for p in proposals.prefix(count) {
            codes[(p.row * groups + p.group) * books + p.codebook] = p.code
            predicted += Double(p.predictedChange)
        }
        return (count, 0, predicted)
    }
}

/// The metric a V step searches codes under: the window's damped XᵀX of the linear's input,
/// or the identity (plain squared error) when asked or when the window saw no input.
func codeSearchMetric(window: CodeUpdateWindow, block l: Int, linear: LlamaLinear, dIn: Int, options o: CodeUpdateOptions) -> [Float] {
    if o.activationWeighted, l < window.covariances.count, let accumulator = window.covariances[l][linear.input],
       accumulator.tokenCount > 0 {
        return dampedCovariance(accumulator)
    }
    var identity = [Float](repeating: 0, count: dIn * dIn)
    for i in 0..<dIn { identity[i * dIn + i] = 1 }
    return identity
}

extension TrainableModel {
    /// One V step over every quantized linear, from the window's gradients (in `gradients`)
    /// and input covariances; `seed` varies the beam search's visit order per step and layer.
    mutating func updateCodes(gradients: ModelGradients, window: CodeUpdateWindow, options o: CodeUpdateOptions,
                              seed: UInt64) -> CodeUpdateOutcome {
        updateEachQuantizedLinear(window: window, options: o, seed: seed) { _, l, linear, layer, hessian, layerSeed, _ in
            guard let gradient = gradients.blocks[l].linears[linear] else { return nil }
            return layer.updateCodes(gradient: gradient, sequences: window.sequences, hessian: hessian, options: o, seed: layerSeed)
        }
    }

    /// The quantized linears in the order V steps visit and sum them: block by block,
    /// `LlamaLinear.allCases` order within a block (`index`: the position in allCases).
    var quantizedLinearOrder: [(block: Int, index: Int, linear: LlamaLinear)] {
        blocks.indices.flatMap { l in
            LlamaLinear.allCases.enumerated().compactMap { index, linear in
                blocks[l].quantized[linear] == nil ? nil : (l, index, linear)
            }
        }
    }

    /// Runs `update` on every quantized linear (`job`: its position in `quantizedLinearOrder`)
    /// with its search metric and its own seed (the step's seed mixed with the linear's index,
    /// so each layer's beam search visits groups in its own order), and sums the outcomes;
    /// `update` returns nil to leave a linear alone. Linears are independent given the window,
    /// so they run one per worker (each one's row search then runs on that worker alone), and
    /// the outcomes are summed in the fixed order afterwards: the same bits at any thread count.
    /// `update` is called concurrently for different jobs: it may write only its own job's data.
    mutating func updateEachQuantizedLinear(
        window: CodeUpdateWindow, options o: CodeUpdateOptions, seed: UInt64,
        _ update: (_ job: Int, _ block: Int, _ linear: LlamaLinear, _ layer: inout TrainableLinear, _ hessian: [Float],
                   _ seed: UInt64, _ outcome: inout CodeUpdateOutcome) -> (changed: Int, before: Double, after: Double)?
    ) -> CodeUpdateOutcome {
        let jobs = quantizedLinearOrder
        var layers = jobs.map { blocks[$0.block].quantized[$0.linear]! }
        var results = [(changed: Int, before: Double, after: Double)?](repeating: nil, count: jobs.count)
        var outcomes = [CodeUpdateOutcome](repeating: CodeUpdateOutcome(), count: jobs.count)
        layers.withUnsafeMutableBufferPointer { layers in
            results.withUnsafeMutableBufferPointer { results in
                outcomes.withUnsafeMutableBufferPointer { outcomes in
                    parallelFor(jobs.count) { j in
                        let (l, index, linear) = jobs[j]
                        let hessian = codeSearchMetric(window: window, block: l, linear: linear, dIn: layers[j].dIn, options: o)
                        let layerSeed = seed &+ UInt64(l * LlamaLinear.allCases.count + index) &* 0x9E37_79B9_7F4A_7C15
                        results[j] = update(j, l, linear, &layers[j], hessian, layerSeed, &outcomes[j])
                    }
                }
            }
        }
        var outcome = CodeUpdateOutcome()
        for (j, job) in jobs.enumerated() {
            outcome.skippedLinears += outcomes[j].skippedLinears
            outcome.largestSkippedGradient = max(outcome.largestSkippedGradient, outcomes[j].largestSkippedGradient)
            outcome.nonFiniteSkippedGradients += outcomes[j].nonFiniteSkippedGradients
            guard let done = results[j] else { continue }
            blocks[job.block].quantized[job.linear] = layers[j]
            outcome.changedCodes += done.changed
            outcome.totalCodes += layers[j].codes.count
            outcome.objectiveBefore += done.before
            outcome.objectiveAfter += done.after
        }
        return outcome
    }
}

extension TrainableModel {
    /// Every quantized linear's codes by its tensor name (the resume state of V steps).
    var codeTensors: [String: [UInt16]] {
        var out: [String: [UInt16]] = [:]
        for (l, block) in blocks.enumerated() {
            for (linear, layer) in block.quantized { out[Self.blockPrefix(l) + linear.rawValue] = layer.codes }
        }
        return out
    }

    mutating func setCodeTensors(_ values: [String: [UInt16]]) throws {
        for l in blocks.indices {
            for linear in Array(blocks[l].quantized.keys) {
                let name = Self.blockPrefix(l) + linear.rawValue
                guard let codes = values[name], codes.count == blocks[l].quantized[linear]!.codes.count else {
                    throw FinetuneError("checkpoint lacks the codes of '\(name)'")
                }
                blocks[l].quantized[linear]!.codes = codes
            }
        }
    }
}
