import Kernels

public struct SamplingOptions: Sendable, Equatable {
    /// 0 (or less): greedy, the most likely token every step.
    public var temperature: Float
    /// Nucleus sampling (Holtzman et al. 2019): sample among the most likely tokens whose
    /// probabilities first add up to at least topP. 1 disables it.
    public var topP: Float
    public var seed: UInt64

    public init(temperature: Float = 0, topP: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topP = topP
        self.seed = seed
    }
}

/// Picks the next token from a row of logits: argmax at temperature 0, otherwise a draw from
/// softmax(logits / T) restricted to the top-p nucleus, with a seeded generator so a fixed
/// seed gives the same text on every run.
public struct TokenSampler {
    public let options: SamplingOptions
    private var random: SeededRandom
    private var probabilities: [Float] = []

    public init(options: SamplingOptions) {
        self.options = options
        self.random = SeededRandom(seed: options.seed)
    }

    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        guard options.temperature > 0 else { return argmax(logits.baseAddress!, count: logits.count) }
        if probabilities.count != logits.count { probabilities = Array(repeating: 0, count: logits.count) }
        let inverseTemperature = 1 / options.temperature
        probabilities.withUnsafeMutableBufferPointer { p in
            for i in 0..<logits.count { p[i] = logits[i] * inverseTemperature }
            softmax(p.baseAddress!, count: p.count)
        }
        let u = random.nextFloat()
        return options.topP < 1 ? drawFromNucleus(u) : drawFromAll(u)
    }

    /// Inverse-CDF draw over the whole distribution, in token order.
    private func drawFromAll(_ u: Float) -> Int {
        var cumulative: Float = 0
        for (i, p) in probabilities.enumerated() {
            cumulative += p
            if u < cumulative { return i }
        }
        return probabilities.lastIndex(where: { $0 > 0 }) ?? 0
    }

    /// The nucleus is a prefix of the tokens sorted by probability. Tokens at or above a
    /// threshold also form such a prefix, so once their mass reaches topP the nucleus lies
    /// within them and only they need sorting (usually a few dozen of the vocabulary).
    private func drawFromNucleus(_ u: Float) -> Int {
        var candidates: [Int] = []
        for threshold: Float in [1e-3, 1e-5, 1e-7, 0] {
            candidates = probabilities.indices.filter { probabilities[$0] >= threshold && probabilities[$0] > 0 }
            if candidates.reduce(0, { $0 + probabilities[$1] }) >= options.topP { break }
        }
        candidates.sort { probabilities[$0] > probabilities[$1] || (probabilities[$0] == probabilities[$1] && $0 < $1) }
        var nucleusMass: Float = 0, size = 0
        while size < candidates.count && (size == 0 || nucleusMass < options.topP) {
            nucleusMass += probabilities[candidates[size]]
            size += 1
        }
        let target = u * nucleusMass
        var cumulative: Float = 0
        for i in candidates[0..<size] {
            cumulative += probabilities[i]
            if target < cumulative { return i }
        }
        return candidates[size - 1]
    }
}
