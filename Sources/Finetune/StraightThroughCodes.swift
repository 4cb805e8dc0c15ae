import Foundation
import Kernels
import Llama
import Quantizer

/// The state of `CodeSelection.straightThrough` V steps: PV-tuning's straight-through variant
/// as the AQLM authors run it (their `StraightThroughAdamW` with `delta_decay` 0; the settings of
/// their published recipe: β1 0, β2 0.95, a LAMB-normalised step, at most 1 % of groups per step,
/// beam 5). Every quantized linear keeps a continuous copy B of its weights that Adam trains with
/// ∂L/∂Ŵ as if the weights were continuous; B is never reset to Ŵ, so small steps accumulate
/// until a group's B is far enough from Ŵ for another code to be nearer. Each V step then
/// re-encodes the τ fraction of groups where ‖B − Ŵ‖ is largest toward B, everything else fixed.
///
/// What this fixes in the window-step V step (`movement`): that one forgets its step after each
/// window, so a code only moves if one window's normalised step alone crosses a quantization
/// cell, i.e. with steps so large they follow noise (held-out KL worse, BENCHMARKS issue 14).
struct StraightThroughCodes {
    /// [block][linear]: B, the continuous weights the codes follow ([dOut, dIn]).
    var buffers: [[LlamaLinear: [Float]]]
    /// [block][linear]: Adam's second moment of ∂L/∂Ŵ (β1 = 0, so no first moment).
    var secondMoments: [[LlamaLinear: [Float]]]
    /// V steps taken: Adam's t, for the bias correction.
    var steps = 0

    /// β2 of the published recipe (`--code_beta2 0.95`).
    static let beta2: Float = 0.95
    /// Adam's ε, far below any |∂L/∂Ŵ| that moves a code: the LAMB normalisation makes the
    /// step's size independent of the gradient's scale, and ε must not bring a scale back.
    static let epsilon: Float = 1e-20

    /// B starts at the model's dequantized weights.
    init(_ model: TrainableModel) {
        buffers = model.blocks.map { block in block.quantized.mapValues { $0.additiveCode.dequantized() } }
        secondMoments = buffers.map { block in block.mapValues { [Float](repeating: 0, count: $0.count) } }
    }

    /// Every buffer and moment by tensor name, for the work directory.
    var tensors: (buffers: [String: [Float]], moments: [String: [Float]]) {
        var b: [String: [Float]] = [:], v: [String: [Float]] = [:]
        for l in buffers.indices {
            for (linear, values) in buffers[l] { b[TrainableModel.blockPrefix(l) + linear.rawValue] = values }
            for (linear, values) in secondMoments[l] { v[TrainableModel.blockPrefix(l) + linear.rawValue] = values }
        }
        return (b, v)
    }

    /// Replaces one linear's buffer (or, with `moment`, its second moment) by a saved tensor,
    /// one at a time as the work directory is read, so that resuming never holds a second copy
    /// of the whole state (4.3 GB on Qwen2.5-0.5B). Throws when no linear has that name or the
    /// size differs.
    mutating func setTensor(_ name: String, moment: Bool, values: [Float]) throws {
        for l in buffers.indices {
            let prefix = TrainableModel.blockPrefix(l)
            guard name.hasPrefix(prefix), let linear = LlamaLinear(rawValue: String(name.dropFirst(prefix.count))),
                  let current = buffers[l][linear] else { continue }
            guard values.count == current.count else {
                throw FinetuneError("the work directory's straight-through state of '\(name)' has \(values.count) values, not \(current.count)")
            }
            if moment { secondMoments[l][linear] = values } else { buffers[l][linear] = values }
            return
        }
        throw FinetuneError("the work directory holds straight-through state for '\(name)', which is not a quantized linear")
    }

    /// Every buffer's tensor name, for checking that a restore set them all.
    var tensorNames: Set<String> {
        Set(buffers.indices.flatMap { l in buffers[l].keys.map { TrainableModel.blockPrefix(l) + $0.rawValue } })
    }
}

/// One LAMB-normalised Adam step (β1 = 0) of B against `gradient`, in place:
/// v ← β2·v + (1−β2)·g², u = g/(√v + ε), B ← B − η·√(1−β2^t)·(‖B‖/‖u‖)·u.
/// The trust ratio ‖B‖/‖u‖ (LAMB, You et al. 2019) makes the step's norm η·‖B‖ (times the bias
/// correction) whatever the gradient's scale, so η is a relative move of the whole tensor.
/// Returns false, changing nothing, when a gradient entry is not finite or so large that g²
/// overflows Float32: one such step would leave v = ∞ and B = NaN for the rest of the run (it
/// happened on SmolLM2 after 42 V steps), while the P step's Adam, bounded by its own
/// normalisation, carries on.
@discardableResult
public func straightThroughAdamStep(buffer: UnsafeMutableBufferPointer<Float>, moment: UnsafeMutableBufferPointer<Float>,
                                    gradient: UnsafeBufferPointer<Float>, gradientScale: Float, stepSize: Float, step t: Int) -> Bool {
    let b2 = StraightThroughCodes.beta2, eps = StraightThroughCodes.epsilon
    let largest: Float = 1e18   // g² ≤ 1e36, far inside Float32's 3.4e38
    for i in 0..<gradient.count {
        let g = gradient[i] * gradientScale
        guard g.isFinite, abs(g) <= largest else { return false }
    }
    var updateEnergy: Float = 0, bufferEnergy: Float = 0
    for i in 0..<buffer.count {
        let g = gradient[i] * gradientScale
        let v = b2 * moment[i] + (1 - b2) * g * g
        moment[i] = v
        let u = g / (v.squareRoot() + eps)
        updateEnergy += u * u
        bufferEnergy += buffer[i] * buffer[i]
    }
    guard updateEnergy > 0, bufferEnergy > 0 else { return true }
    let correction = Float(1 - pow(Double(b2), Double(t))).squareRoot()
    let scale = stepSize * correction * (bufferEnergy / updateEnergy).squareRoot()
    for i in 0..<buffer.count {
        let g = gradient[i] * gradientScale
        buffer[i] -= scale * g / (moment[i].squareRoot() + eps)
    }
    return true
}

extension TrainableLinear {
    /// Re-encodes the `fraction` of groups where ‖B − Ŵ‖ (weighted by diag(H)) is largest
    /// toward B, by beam search under `hessian` with every other group's target left at Ŵ.
    /// Returns the changed codes and the searched objective before and after, relative to
    /// tr(T H Tᵀ) of the target T.
    mutating func followBuffer(_ buffer: [Float], hessian: [Float], options o: CodeUpdateOptions,
                               seed: UInt64) -> (changed: Int, before: Double, after: Double) {
        let current = additiveCode.dequantized()
        var difference = buffer
        for i in difference.indices { difference[i] -= current[i] }
        return searchMovedGroups(current: current, step: difference, hessian: hessian, options: o, seed: seed)
    }
}

extension TrainableModel {
    /// One straight-through V step over every quantized linear: B takes an Adam step with the
    /// window's mean per-step ∂L/∂Ŵ, then the codes follow B (`followBuffer`). The buffers and
    /// moments are moved out of `state` into one array per linear for the step (each linear's
    /// job writes only its own, and nothing is copied), and back after it.
    mutating func updateCodes(following state: inout StraightThroughCodes, gradients: ModelGradients,
                              window: CodeUpdateWindow, stepsInWindow: Int, options o: CodeUpdateOptions,
                              seed: UInt64) -> CodeUpdateOutcome {
        state.steps += 1
        let step = state.steps
        let jobs = quantizedLinearOrder
        var buffers = jobs.map { state.buffers[$0.block].removeValue(forKey: $0.linear) }
        var moments = jobs.map { state.secondMoments[$0.block].removeValue(forKey: $0.linear) }
        defer {
            for (j, job) in jobs.enumerated() {
                state.buffers[job.block][job.linear] = buffers[j]
                state.secondMoments[job.block][job.linear] = moments[j]
            }
        }
        return buffers.withUnsafeMutableBufferPointer { buffers in
            moments.withUnsafeMutableBufferPointer { moments in
                updateEachQuantizedLinear(window: window, options: o, seed: seed) { j, l, linear, layer, hessian, layerSeed, outcome in
                    guard let sum = gradients.blocks[l].linears[linear]?.weightSum,
                          buffers[j] != nil, moments[j] != nil else { return nil }
                    let stepped = buffers[j]!.withUnsafeMutableBufferPointer { b in
                        moments[j]!.withUnsafeMutableBufferPointer { v in
                            sum.withUnsafeBufferPointer { g in
                                straightThroughAdamStep(buffer: b, moment: v, gradient: g, gradientScale: 1 / Float(max(stepsInWindow, 1)),
                                                        stepSize: o.stepSize, step: step)
                            }
                        }
                    }
                    if !stepped {
                        outcome.skippedLinears += 1
                        for g in sum {
                            if g.isFinite { outcome.largestSkippedGradient = max(outcome.largestSkippedGradient, abs(g)) }
                            else { outcome.nonFiniteSkippedGradients += 1 }
                        }
                    }
                    return layer.followBuffer(buffers[j]!, hessian: hessian, options: o, seed: layerSeed)
                }
            }
        }
    }
}
