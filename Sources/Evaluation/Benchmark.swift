import Kernels
import Llama

/// Forward-pass speed next to the machine's sgemm at a shape the model runs (for `aqlm bench`).
public struct ForwardBenchmark: Codable, Sendable {
    public var threads: Int
    public var prefillTokens: Int
    public var prefillTokensPerSecond: Double
    /// FLOPs of the prefill (block linears, attention scores and mixing, one head row) per second.
    public var prefillGFLOPS: Double
    public var decodeTokens: Int
    public var decodeTokensPerSecond: Double
    /// Weight bytes streamed per decoded token times the decode rate.
    public var decodeWeightGBPerSecond: Double
    /// cblas_sgemm at m × n × k = sgemmShape, measured in the same run.
    public var sgemmShape: [Int]
    public var sgemmGFLOPS: Double

    enum CodingKeys: String, CodingKey {
        case threads, prefillTokens = "prefill_tokens", prefillTokensPerSecond = "prefill_tokens_per_second"
        case prefillGFLOPS = "prefill_gflops", decodeTokens = "decode_tokens"
        case decodeTokensPerSecond = "decode_tokens_per_second", decodeWeightGBPerSecond = "decode_weight_gb_per_second"
        case sgemmShape = "sgemm_shape", sgemmGFLOPS = "sgemm_gflops"
    }
}

/// Prefill of `prefillTokens` seeded random tokens (logits for the last only, as llama-bench's
/// pp test), then `decodeTokens` single-token steps; each timed `repetitions` times, best kept
/// (the machine is shared, so the minimum is the least disturbed run).
public func benchmarkForward(model: LlamaModel, prefillTokens: Int = 128, decodeTokens: Int = 64,
                             repetitions: Int = 3, sgemmShape: (m: Int, n: Int, k: Int) = (512, 1536, 576)) -> ForwardBenchmark {
    let c = model.config
    var random = SeededRandom(seed: 1)
    let prompt = (0..<prefillTokens).map { _ in Int(random.next() % UInt64(c.vocabSize)) }
    let state = model.makeState(maxPositions: prefillTokens + decodeTokens, maxBatch: prefillTokens, maxLogitRows: 1)
    let clock = ContinuousClock()

    var bestPrefill = Double.infinity, bestDecode = Double.infinity
    for _ in 0..<max(1, repetitions) {
        var started = clock.now
        model.forward(prompt, startPosition: 0, state: state, logits: .last)
        bestPrefill = min(bestPrefill, seconds(clock.now - started))
        var token = argmax(state.logits(row: 0).baseAddress!, count: c.vocabSize)
        started = clock.now
        for _ in 0..<decodeTokens {
            model.forward([token], state: state, logits: .last)
            token = argmax(state.logits(row: 0).baseAddress!, count: c.vocabSize)
        }
        bestDecode = min(bestDecode, seconds(clock.now - started))
    }
    let headFLOPs = 2 * model.head.inputSize * model.head.outputSize
    let blockFLOPs = model.linearFLOPsPerToken - headFLOPs
    // Causal attention: row t scores and mixes t + 1 positions, 2·headDim FLOPs each, per head.
    let attentionFLOPs = c.numLayers * c.numHeads * 4 * c.headDim * (prefillTokens * (prefillTokens + 1) / 2)
    let prefillFLOPs = Double(blockFLOPs * prefillTokens + headFLOPs + attentionFLOPs)
    // A decoding step streams every block weight and the head, but one row of the embedding.
    let weightBytes = model.weightBytes - 4 * model.embedding.count + (c.tiedEmbeddings ? model.head.weightBytes : 0)
    return ForwardBenchmark(
        threads: Threads.count, prefillTokens: prefillTokens,
        prefillTokensPerSecond: Double(prefillTokens) / bestPrefill, prefillGFLOPS: prefillFLOPs / bestPrefill / 1e9,
        decodeTokens: decodeTokens, decodeTokensPerSecond: Double(decodeTokens) / bestDecode,
        decodeWeightGBPerSecond: Double(weightBytes) * Double(decodeTokens) / bestDecode / 1e9,
        sgemmShape: [sgemmShape.m, sgemmShape.n, sgemmShape.k],
        sgemmGFLOPS: sgemmGFLOPS(m: sgemmShape.m, n: sgemmShape.n, k: sgemmShape.k, repetitions: max(3, repetitions)))
}

/// GFLOP/s of cblas_sgemm computing Y[m×n] = X[m×k]·Wᵀ (W [n×k]), through DenseLinear (the
/// layout the model's prefill uses), best of `repetitions`.
public func sgemmGFLOPS(m: Int, n: Int, k: Int, repetitions: Int = 5) -> Double {
    var random = SeededRandom(seed: 2)
    let x = (0..<(m * k)).map { _ in random.nextFloat() - 0.5 }
    let layer = DenseLinear(weights: (0..<(n * k)).map { _ in random.nextFloat() - 0.5 }, outputSize: n, inputSize: k)
    var y = [Float](repeating: 0, count: m * n)
    let clock = ContinuousClock()
    var best = Double.infinity
    for _ in 0..<max(1, repetitions) {
        let started = clock.now
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { layer.apply(xp.baseAddress!, $0.baseAddress!, tokens: m) }
        }
        best = min(best, seconds(clock.now - started))
    }
    return 2 * Double(m) * Double(n) * Double(k) / best / 1e9
}
