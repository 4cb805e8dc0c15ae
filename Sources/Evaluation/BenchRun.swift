import Foundation
import Kernels
import Llama

/// What `aqlm bench` measures of one model in one process.
public struct BenchOptions: Sendable {
    public var promptTokens: Int
    public var decodeTokens: Int
    /// Prefill + decode passes inside the process; the fastest counts.
    public var passes: Int
    /// Also time the model's kernels one by one (after the memory figures are taken).
    public var kernels: Bool
    /// Seconds each kernel figure is measured for.
    public var kernelSeconds: Double

    public init(promptTokens: Int = 128, decodeTokens: Int = 64, passes: Int = 3, kernels: Bool = true,
                kernelSeconds: Double = 0.2) {
        self.promptTokens = promptTokens
        self.decodeTokens = decodeTokens
        self.passes = passes
        self.kernels = kernels
        self.kernelSeconds = kernelSeconds
    }
}

/// One model's figures from one process (one round of `aqlm bench`).
public struct ModelBenchResult: Codable, Sendable, Equatable {
    /// The path or alias as given.
    public var model: String
    /// How its weights are stored, e.g. "aqlm 2x8 g8 linears, head embedding q8".
    public var label: String
    public var threads: Int
    public var parallel: String
    public var prefillTokens: Int
    public var decodeTokens: Int
    public var prefillTokensPerSecond: Double
    public var decodeTokensPerSecond: Double
    /// Tokens per second of CPU time the process used (all threads, spinning included): on a
    /// shared machine the wall-clock rates fall with the share of the cores the process gets,
    /// these much less. With one thread, the rate an idle core would reach.
    public var prefillTokensPerCPUSecond: Double
    public var decodeTokensPerCPUSecond: Double
    /// Prefill FLOPs (block linears, attention, one head row) per second.
    public var prefillGFLOPS: Double
    /// Weight bytes a decode step reads: every block linear and the head.
    public var decodeBytesPerToken: Int
    public var decodeGBPerSecond: Double
    /// All weights as held in memory.
    public var weightBytes: Int
    public var loadSeconds: Double
    /// Resident memory once the model is loaded, and the peak while loading.
    public var rssAfterLoadBytes: Int?
    public var loadPeakRSSBytes: Int?
    /// Peak resident memory of the whole process: loading, prefill and decoding.
    public var peakRSSBytes: Int?
    /// Peak resident memory from the end of loading through prefill and decoding.
    public var generationPeakRSSBytes: Int?
    public var kernels: [KernelResult]
    /// How the dense block linears were held ("float32", "streamed"; nil for packed kernels)
    /// and their resident Float32 bytes (`LlamaModel.denseLinears`).
    public var denseLinears: String?
    public var denseLinearFloat32Bytes: Int?

    public init(model: String, label: String, threads: Int, parallel: String, prefillTokens: Int, decodeTokens: Int,
                prefillTokensPerSecond: Double, decodeTokensPerSecond: Double, prefillTokensPerCPUSecond: Double,
                decodeTokensPerCPUSecond: Double, prefillGFLOPS: Double, decodeBytesPerToken: Int, decodeGBPerSecond: Double,
                weightBytes: Int, loadSeconds: Double, rssAfterLoadBytes: Int?, loadPeakRSSBytes: Int?, peakRSSBytes: Int?,
                generationPeakRSSBytes: Int?, kernels: [KernelResult]) {
        self.model = model
        self.label = label
        self.threads = threads
        self.parallel = parallel
        self.prefillTokens = prefillTokens
        self.decodeTokens = decodeTokens
        self.prefillTokensPerSecond = prefillTokensPerSecond
        self.decodeTokensPerSecond = decodeTokensPerSecond
        self.prefillTokensPerCPUSecond = prefillTokensPerCPUSecond
        self.decodeTokensPerCPUSecond = decodeTokensPerCPUSecond
        self.prefillGFLOPS = prefillGFLOPS
        self.decodeBytesPerToken = decodeBytesPerToken
        self.decodeGBPerSecond = decodeGBPerSecond
        self.weightBytes = weightBytes
        self.loadSeconds = loadSeconds
        self.rssAfterLoadBytes = rssAfterLoadBytes
        self.loadPeakRSSBytes = loadPeakRSSBytes
        self.peakRSSBytes = peakRSSBytes
        self.generationPeakRSSBytes = generationPeakRSSBytes
        self.kernels = kernels
    }

    enum CodingKeys: String, CodingKey {
        case model, label, threads, parallel, prefillTokens = "prefill_tokens", decodeTokens = "decode_tokens"
        case prefillTokensPerSecond = "prefill_tokens_per_second", decodeTokensPerSecond = "decode_tokens_per_second"
        case prefillTokensPerCPUSecond = "prefill_tokens_per_cpu_second", decodeTokensPerCPUSecond = "decode_tokens_per_cpu_second"
        case prefillGFLOPS = "prefill_gflops", decodeBytesPerToken = "decode_bytes_per_token"
        case decodeGBPerSecond = "decode_gb_per_second", weightBytes = "weight_bytes", loadSeconds = "load_seconds"
        case rssAfterLoadBytes = "rss_after_load_bytes", loadPeakRSSBytes = "load_peak_rss_bytes"
        case peakRSSBytes = "peak_rss_bytes", generationPeakRSSBytes = "generation_peak_rss_bytes", kernels
        case denseLinears = "dense_linears", denseLinearFloat32Bytes = "dense_linear_float32_bytes"
    }
}

/// Loads a model with `load`, then measures it: resident memory after loading, prefill and
/// decode speed (`timeGeneration`), the peak resident memory of loading and of running, and last
/// (so their buffers are not counted) the kernel figures. Run it in a fresh process per model so
/// the peaks are that model's alone.
public func benchmarkModel(_ path: String, options: BenchOptions, load: () throws -> LlamaModel) rethrows -> ModelBenchResult {
    let clock = ContinuousClock(), started = clock.now
    let model = try load()
    let loadSeconds = benchSeconds(clock.now - started)
    let rssAfterLoad = currentResidentBytes(), loadPeak = peakResidentBytes()
    let canResetPeak = resetPeakResidentBytes()

    let timing = timeGeneration(model, promptTokens: options.promptTokens, decodeTokens: options.decodeTokens,
                                passes: options.passes)
    let peak = peakResidentBytes()
    let c = model.config
    let headFLOPs = 2 * model.head.inputSize * model.head.outputSize
    // Causal attention: row t scores and mixes t + 1 positions, 2·headDim FLOPs each, per head.
    let attentionFLOPs = c.numLayers * c.numHeads * 4 * c.headDim * (options.promptTokens * (options.promptTokens + 1) / 2)
    let prefillFLOPs = Double((model.linearFLOPsPerToken - headFLOPs) * options.promptTokens + headFLOPs + attentionFLOPs)
    let bytesPerToken = model.layers.reduce(0) { sum, block in
        sum + LlamaLinear.allCases.reduce(0) { $0 + block[$1].weightBytes }
    } + model.head.weightBytes
    var result = ModelBenchResult(
        model: path, label: describeStorage(model), threads: Threads.count, parallel: Threads.backend.rawValue,
        prefillTokens: options.promptTokens, decodeTokens: options.decodeTokens,
        prefillTokensPerSecond: Double(options.promptTokens) / timing.prefillSeconds,
        decodeTokensPerSecond: Double(options.decodeTokens) / timing.decodeSeconds,
        prefillTokensPerCPUSecond: Double(options.promptTokens) / timing.prefillCPUSeconds,
        decodeTokensPerCPUSecond: Double(options.decodeTokens) / timing.decodeCPUSeconds,
        prefillGFLOPS: prefillFLOPs / timing.prefillSeconds / 1e9, decodeBytesPerToken: bytesPerToken,
        decodeGBPerSecond: Double(bytesPerToken) * Double(options.decodeTokens) / timing.decodeSeconds / 1e9,
        weightBytes: model.weightBytes, loadSeconds: loadSeconds, rssAfterLoadBytes: rssAfterLoad,
        loadPeakRSSBytes: loadPeak, peakRSSBytes: max(loadPeak ?? 0, peak ?? 0),
        generationPeakRSSBytes: canResetPeak ? peak : nil, kernels: [])
    let dense = model.denseLinears
    result.denseLinears = dense.storage?.rawValue
    result.denseLinearFloat32Bytes = dense.float32Bytes
    if options.kernels {
        result.kernels = benchmarkKernels(model: model, prefillTokens: options.promptTokens, minSeconds: options.kernelSeconds)
    }
    return result
}

/// Fastest of `passes` runs of: a prefill of `promptTokens` seeded random tokens (logits for
/// the last only, as llama-bench's pp test), then `decodeTokens` greedy single-token steps
/// after it. Wall-clock and process CPU seconds (all threads) of each phase, each the minimum
/// over the passes: on a shared machine the wall time falls with the share of the cores the
/// process gets, the CPU time much less.
public func timeGeneration(_ model: LlamaModel, promptTokens: Int, decodeTokens: Int, passes: Int)
    -> (prefillSeconds: Double, decodeSeconds: Double, prefillCPUSeconds: Double, decodeCPUSeconds: Double) {
    let vocab = model.config.vocabSize
    var random = SeededRandom(seed: 1)
    let prompt = (0..<promptTokens).map { _ in Int(random.next() % UInt64(vocab)) }
    let state = model.makeState(maxPositions: promptTokens + decodeTokens, maxBatch: promptTokens, maxLogitRows: 1)
    let clock = ContinuousClock()
    var best = (prefillSeconds: Double.infinity, decodeSeconds: Double.infinity,
                prefillCPUSeconds: Double.infinity, decodeCPUSeconds: Double.infinity)
    for _ in 0..<max(1, passes) {
        var started = clock.now, cpu = processCPUTime()
        model.forward(prompt, startPosition: 0, state: state, logits: .last)
        best.prefillSeconds = min(best.prefillSeconds, benchSeconds(clock.now - started))
        best.prefillCPUSeconds = min(best.prefillCPUSeconds, processCPUTime() - cpu)
        var token = argmax(state.logits(row: 0).baseAddress!, count: vocab)
        started = clock.now
        cpu = processCPUTime()
        for _ in 0..<decodeTokens {
            model.forward([token], state: state, logits: .last)
            token = argmax(state.logits(row: 0).baseAddress!, count: vocab)
        }
        best.decodeSeconds = min(best.decodeSeconds, benchSeconds(clock.now - started))
        best.decodeCPUSeconds = min(best.decodeCPUSeconds, processCPUTime() - cpu)
    }
    return best
}

/// CPU seconds this process has used, all threads.
private func processCPUTime() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
}

/// "aqlm 2x8 g8 linears, head embedding q8": the storage of the block linears (each kind
/// present) and of the head.
public func describeStorage(_ model: LlamaModel) -> String {
    var kinds: [String] = []
    for block in model.layers {
        for linear in LlamaLinear.allCases {
            let kind = storageDescription(block[linear])
            if !kinds.contains(kind) { kinds.append(kind) }
        }
    }
    return kinds.joined(separator: " + ") + " linears, head " + storageDescription(model.head)
}
