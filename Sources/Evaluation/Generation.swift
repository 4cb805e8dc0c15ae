import Kernels
import Llama

public struct GenerationOptions: Sendable {
    public var maxNewTokens: Int
    public var sampling: SamplingOptions
    /// Generation ends when one of these is produced (it is not part of the output).
    public var stopTokens: Set<Int>

    public init(maxNewTokens: Int, sampling: SamplingOptions = SamplingOptions(), stopTokens: Set<Int> = []) {
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.stopTokens = stopTokens
    }
}

public struct GenerationResult: Codable, Sendable {
    /// The generated ids (without the prompt and without a final stop token).
    public var ids: [Int]
    public var promptTokens: Int
    /// "eos" when a stop token ended generation, "length" when maxNewTokens did.
    public var stopReason: String
    public var prefillSeconds: Double
    public var prefillTokensPerSecond: Double
    /// Single-token decode steps (every generated token but the first, which the prompt's
    /// logits give) and their rate.
    public var decodeSteps: Int
    public var decodeSeconds: Double
    public var tokensPerSecond: Double

    enum CodingKeys: String, CodingKey {
        case ids, promptTokens = "prompt_tokens", stopReason = "stop_reason", prefillSeconds = "prefill_seconds"
        case prefillTokensPerSecond = "prefill_tokens_per_second", decodeSteps = "decode_steps"
        case decodeSeconds = "decode_seconds", tokensPerSecond = "tokens_per_second"
    }
}

/// Autoregressive generation: one batched prefill of the prompt, then one forward step per
/// token through the KV cache. `onToken` sees each id as it is chosen (for streaming).
public func generate(model: LlamaModel, prompt: [Int], options: GenerationOptions,
                     onToken: (Int) -> Void = { _ in }) throws -> GenerationResult {
    let c = model.config
    guard !prompt.isEmpty else { throw EvaluationError.invalidArgument("the prompt tokenizes to no tokens") }
    guard options.maxNewTokens >= 0 else { throw EvaluationError.invalidArgument("-n \(options.maxNewTokens): must be at least 0") }
    guard prompt.count + options.maxNewTokens <= c.contextLength else {
        throw EvaluationError.invalidArgument(
            "\(prompt.count) prompt tokens + \(options.maxNewTokens) new ones exceed the model's context of \(c.contextLength)")
    }
    if let bad = prompt.first(where: { $0 < 0 || $0 >= c.vocabSize }) {
        throw EvaluationError.invalidArgument("prompt token id \(bad) outside the vocabulary of \(c.vocabSize)")
    }
    let state = model.makeState(maxPositions: prompt.count + max(options.maxNewTokens, 1),
                                maxBatch: min(prompt.count, 512), maxLogitRows: 1)
    var sampler = TokenSampler(options: options.sampling)
    let clock = ContinuousClock()

    Threads.adjustToLoad()
    var started = clock.now
    model.forward(prompt, startPosition: 0, state: state, logits: .last)
    let prefillSeconds = seconds(clock.now - started)

    var ids: [Int] = [], stopReason = "length", decodeSteps = 0
    started = clock.now
    while ids.count < options.maxNewTokens {
        let next = sampler.sample(state.logits(row: 0))
        if options.stopTokens.contains(next) {
            stopReason = "eos"
            break
        }
        ids.append(next)
        onToken(next)
        if ids.count == options.maxNewTokens { break }
        Threads.adjustToLoad()
        model.forward([next], state: state, logits: .last)
        decodeSteps += 1
    }
    let decodeSeconds = seconds(clock.now - started)
    return GenerationResult(ids: ids, promptTokens: prompt.count, stopReason: stopReason,
                            prefillSeconds: prefillSeconds, prefillTokensPerSecond: Double(prompt.count) / prefillSeconds,
                            decodeSteps: decodeSteps, decodeSeconds: decodeSeconds,
                            tokensPerSecond: decodeSteps > 0 ? Double(decodeSteps) / decodeSeconds : 0)
}
