import Foundation
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
    /// Tokens per second of CPU time the process used (all threads, BLAS spin-waits included).
    /// On a machine shared with other work the wall-clock rates fall with the share of the
    /// cores this process gets; these much less. On an idle machine the wall rate approaches
    /// threads × this (less, where a thread waits).
    public var prefillTokensPerCPUSecond: Double
    public var decodeTokensPerCPUSecond: Double
    /// cblas_sgemm at m × n × k = sgemmShape, measured in the same run.
    public var sgemmShape: [Int]
    public var sgemmGFLOPS: Double

    enum CodingKeys: String, CodingKey {
        case threads, prefillTokens = "prefill_tokens", prefillTokensPerSecond = "prefill_tokens_per_second"
        case prefillGFLOPS = "prefill_gflops", decodeTokens = "decode_tokens"
        case decodeTokensPerSecond = "decode_tokens_per_second", decodeWeightGBPerSecond = "decode_weight_gb_per_second"
        case prefillTokensPerCPUSecond = "prefill_tokens_per_cpu_second"
        case decodeTokensPerCPUSecond = "decode_tokens_per_cpu_second"
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
    var prefillCPU = Double.infinity, decodeCPU = Double.infinity
    for _ in 0..<max(1, repetitions) {
        var started = clock.now, cpuStarted = processCPUSeconds()
        model.forward(prompt, startPosition: 0, state: state, logits: .last)
        bestPrefill = min(bestPrefill, seconds(clock.now - started))
        prefillCPU = min(prefillCPU, processCPUSeconds() - cpuStarted)
        var token = argmax(state.logits(row: 0).baseAddress!, count: c.vocabSize)
        started = clock.now
        cpuStarted = processCPUSeconds()
        for _ in 0..<decodeTokens {
            model.forward([token], state: state, logits: .last)
            token = argmax(state.logits(row: 0).baseAddress!, count: c.vocabSize)
        }
        bestDecode = min(bestDecode, seconds(clock.now - started))
        decodeCPU = min(decodeCPU, processCPUSeconds() - cpuStarted)
    }
    let headFLOPs = 2 * model.head.inputSize * model.head.outputSize
    let blockFLOPs = model.linearFLOPsPerToken - headFLOPs
    // Causal attention: row t scores and mixes t + 1 positions, 2·headDim FLOPs each, per head.
    let attentionFLOPs = c.numLayers * c.numHeads * 4 * c.headDim * (prefillTokens * (prefillTokens + 1) / 2)
    let prefillFLOPs = Double(blockFLOPs * prefillTokens + headFLOPs + attentionFLOPs)
    // A decoding step streams every block linear and the head (and one embedding row).
    let weightBytes = model.head.weightBytes + model.layers.reduce(0) { sum, block in
        sum + LlamaLinear.allCases.reduce(0) { $0 + block[$1].weightBytes }
    }
    return ForwardBenchmark(
        threads: Threads.count, prefillTokens: prefillTokens,
        prefillTokensPerSecond: Double(prefillTokens) / bestPrefill, prefillGFLOPS: prefillFLOPs / bestPrefill / 1e9,
        decodeTokens: decodeTokens, decodeTokensPerSecond: Double(decodeTokens) / bestDecode,
        decodeWeightGBPerSecond: Double(weightBytes) * Double(decodeTokens) / bestDecode / 1e9,
        prefillTokensPerCPUSecond: Double(prefillTokens) / prefillCPU,
        decodeTokensPerCPUSecond: Double(decodeTokens) / decodeCPU,
        sgemmShape: [sgemmShape.m, sgemmShape.n, sgemmShape.k],
        sgemmGFLOPS: sgemmGFLOPS(m: sgemmShape.m, n: sgemmShape.n, k: sgemmShape.k, repetitions: max(3, repetitions)))
}

/// GFLOP/s of sgemm (panels on our workers) computing Y[m×n] = X[m×k]·Wᵀ (W [n×k]), through DenseLinear (the
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

/// User plus system CPU time of the whole process so far.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
