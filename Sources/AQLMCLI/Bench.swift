import ArgumentParser
import Checkpoint
import Evaluation
import Foundation
import Llama
import Kernels
import PackedFormat

extension EmbeddingPrecision: ExpressibleByArgument {}
extension ParallelBackend: ExpressibleByArgument {}
extension KVCachePrecision: ExpressibleByArgument {}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Prefill and decode speed, resident memory and kernel throughput of a model, against the machine's limits.",
        discussion: """
        Each round runs every model once in its own process (this executable again), alternating \
        their order, so each model's peak resident memory is its own and the pairs of a round ran \
        under similar load; speeds are the best round's, ratios best against best and per round. \
        Prefill: a prompt of --prompt-tokens random tokens, logits for the last; decode: \
        --decode-tokens single-token steps after it. Streaming bandwidth and cblas_sgemm GFLOP/s \
        are measured in the same run.
        """
    )

    @Option(help: "Model: the alias smollm2-135m or qwen2.5-coder-0.5b, a GGUF file, a Hugging Face directory or a packed AQLM directory.")
    var model = "smollm2-135m"

    @Option(help: "A second model run the same way in the same rounds.")
    var compare: String?

    @Flag(help: "Compare with --model's own weights dequantized to dense Float32 (for a packed model).")
    var dense = false

    @Option(help: "Prompt tokens of the prefill.")
    var promptTokens = 128

    @Option(help: "Single-token decode steps after the prompt.")
    var decodeTokens = 64

    @Option(help: "Cores to use.")
    var threads: Int?

    @Option(name: .customLong("repeat"), help: "Rounds.")
    var rounds = 3

    @Option(help: "Storage of --model's embedding table and tied head: f32, f16, q8 (default: q8 for a packed model, f32 otherwise).")
    var head: EmbeddingPrecision?

    @Option(help: "Storage of the key/value cache: f32 (exact) or f16 (half the bytes decode attention reads, llama.cpp's default).")
    var kvCache: KVCachePrecision = .f32

    @Option(help: denseMemoryHelp)
    var denseMemory: Double?

    @Option(help: "What runs our parallel loops: pool (persistent workers) or dispatch (concurrentPerform).")
    var parallel: ParallelBackend = .pool

    @Flag(inversion: .prefixedNo, help: "Time each kernel (block 0's linears, all block linears, the head).")
    var kernels = true

    @Flag(help: """
        Print one JSON object: the model's prefill_tokens_per_second, decode_tokens_per_second, peak_rss_bytes, \
        generation_peak_rss_bytes, dense_linears, dense_linear_float32_bytes, kernels, ... (best round), rounds, compare (the same keys), ratios, machine.
        """)
    var json = false

    /// A measurement process: one model, one result line on stdout.
    @Flag(help: .hidden)
    var child = false

    @Flag(help: .hidden)
    var dequantize = false

    @Option(help: .hidden)
    var passes = 3

    func validate() throws {
        if promptTokens < 1 { throw ValidationError("--prompt-tokens \(promptTokens): must be at least 1") }
        if decodeTokens < 1 { throw ValidationError("--decode-tokens \(decodeTokens): must be at least 1") }
        if rounds < 1 { throw ValidationError("--repeat \(rounds): must be at least 1") }
        if passes < 1 { throw ValidationError("--passes \(passes): must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads \(threads): must be at least 1") }
        if dense && compare != nil { throw ValidationError("give --dense or --compare, not both") }
    }

    func run() throws {
        if let threads { Threads.set(threads) }
        Threads.backend = parallel
        if child {
            try runChild()
            return
        }
        // Both models are checked before anything is measured: a bad --compare would otherwise
        // surface only after the first model's round.
        for path in [model] + (compare.map { [$0] } ?? []) { try checkModelPath(path) }
        if dense && !PackedCheckpoint.isPacked(directory: ModelPaths.resolve(model)) {
            throw CLIError("--dense: \(model) is not a packed AQLM checkpoint (it already runs dense)")
        }
        let machine = measureMachineLimits()
        var mine: [ModelBenchResult] = [], theirs: [ModelBenchResult] = []
        for round in 0..<rounds {
            // Alternate which model goes first, so neither always runs after the other.
            let order = round % 2 == 0 ? [false, true] : [true, false]
            for isComparison in order {
                guard let arguments = childArguments(comparison: isComparison) else { continue }
                let result: ModelBenchResult
                do {
                    result = try runBenchChild(arguments: arguments)
                } catch let failed as BenchChildFailed {
                    throw ExitCode(failed.status)
                }
                printError(String(format: "round %d/%d %@: prefill %.1f tokens/s, decode %.1f tokens/s, peak RSS %.1f MB%@",
                                  round + 1, rounds, result.model, result.prefillTokensPerSecond, result.decodeTokensPerSecond,
                                  Double(result.peakRSSBytes ?? 0) / 1e6, result.denseLinears.map { ", dense linears " + $0 } ?? ""))
                if isComparison { theirs.append(result) } else { mine.append(result) }
            }
        }
        let report = BenchReport(machine: machine, rounds: mine, compareRounds: theirs)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
    }

    /// The measurement process's command line for --model or its comparison; nil if there is no comparison.
    private func childArguments(comparison: Bool) -> [String]? {
        var arguments = ["bench", "--child", "--prompt-tokens", String(promptTokens), "--decode-tokens", String(decodeTokens),
                         "--threads", String(Threads.count), "--parallel", parallel.rawValue, "--passes", String(passes),
                         "--kv-cache", kvCache.rawValue]
        if !kernels { arguments.append("--no-kernels") }
        if let denseMemory { arguments += ["--dense-memory", String(denseMemory)] }
        if !comparison {
            arguments += ["--model", model]
            if let head { arguments += ["--head", head.rawValue] }
        } else if let compare {
            arguments += ["--model", compare]
        } else if dense {
            arguments += ["--model", model, "--dequantize"]
        } else {
            return nil
        }
        return arguments
    }

    private func runChild() throws {
        let options = BenchOptions(promptTokens: promptTokens, decodeTokens: decodeTokens, passes: passes, kernels: kernels)
        let result = try benchmarkModel(model, options: options) {
            var opened = try openModel(model, dequantize: dequantize, embedding: head,
                                       denseMemoryBudget: denseMemoryBudget(denseMemory)).model
            opened.kvCache = kvCache
            return opened
        }
        print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
    }
}
