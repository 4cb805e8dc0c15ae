import Foundation
import Kernels

/// Adam's settings. The defaults are the usual β₁ 0.9 and ε 1e-8 with β₂ 0.95, the AQLM
/// reference's choice for fine-tuning (short runs: the second moment should forget the
/// initial large gradients quickly).
public struct AdamOptions: Sendable, Equatable {
    public var learningRate: Float
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    public var epsilon: Float = 1e-8

    public init(learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.95, epsilon: Float = 1e-8) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
    }
}

/// How the learning rate changes over a run of `total` optimizer steps.
public enum LearningRateSchedule: String, Sendable, CaseIterable {
    /// The base rate throughout.
    case constant
    /// Half a cosine from the base rate at the first step down to zero after the last
    /// (Loshchilov & Hutter 2017, without restarts): large steps while the parameters are far
    /// from a minimum, small ones at the end so the last updates do not add noise.
    case cosine

    /// The rate of step `step` (1-based, as `Adam.step` after `beginStep`) of `total`.
    public func rate(base: Float, step: Int, total: Int) -> Float {
        switch self {
        case .constant: return base
        case .cosine:
            guard total > 1 else { return base }
            let progress = Double(min(max(step - 1, 0), total)) / Double(total)
            return base * Float(0.5 * (1 + cos(Double.pi * progress)))
        }
    }
}

/// Adam with bias correction (Kingma & Ba 2015) over named parameter tensors. Call `beginStep`
/// once per optimizer step, then `update` for each parameter with its gradient; the moments of
/// a name are created at its first update. The state is plain data so it can be saved and
/// restored for resuming (`moments`, `step`); the rate of a step is a function of its number
/// (`schedule` over `totalSteps`), so a resumed run gets the same rates.
public struct Adam: Sendable {
    /// `learningRate` is the base rate that `schedule` scales.
    public var options: AdamOptions
    public var schedule: LearningRateSchedule
    /// The run's planned steps, what `schedule` spreads over.
    public var totalSteps: Int
    /// Steps begun so far (t in the bias corrections).
    public internal(set) var step = 0
    /// name -> (first moment, second moment).
    public internal(set) var moments: [String: (first: [Float], second: [Float])] = [:]

    public init(options: AdamOptions, schedule: LearningRateSchedule = .constant, totalSteps: Int = 1) {
        self.options = options
        self.schedule = schedule
        self.totalSteps = totalSteps
    }

    /// The learning rate of the current step.
    public var learningRate: Float { schedule.rate(base: options.learningRate, step: step, total: totalSteps) }

    public mutating func beginStep() { step += 1 }

    public mutating func update(_ parameters: inout [Float], gradient: [Float], name: String) {
        precondition(step > 0, "Adam.update before beginStep")
        precondition(parameters.count == gradient.count, "\(name): \(parameters.count) parameters, \(gradient.count) gradients")
        var (m, v) = moments.removeValue(forKey: name)
            ?? ([Float](repeating: 0, count: parameters.count), [Float](repeating: 0, count: parameters.count))
        let o = options, rate = learningRate
        let c1 = Float(1 / (1 - pow(Double(o.beta1), Double(step))))
        let c2 = Float(1 / (1 - pow(Double(o.beta2), Double(step))))
        parameters.withUnsafeMutableBufferPointer { p in
            gradient.withUnsafeBufferPointer { g in
                m.withUnsafeMutableBufferPointer { m in
                    v.withUnsafeMutableBufferPointer { v in
                        adamUpdate(p.baseAddress!, gradients: g.baseAddress!, firstMoment: m.baseAddress!, secondMoment: v.baseAddress!,
                                   count: p.count, learningRate: rate, beta1: o.beta1, beta2: o.beta2,
                                   epsilon: o.epsilon, firstMomentCorrection: c1, secondMomentCorrection: c2)
                    }
                }
            }
        }
        moments[name] = (m, v)
    }
}
