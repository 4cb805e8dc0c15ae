import ArgumentParser
import Checkpoint
import Evaluation
import Foundation
import Kernels
import Llama
import PackedFormat
import Tokenizer

extension PerplexityProtocol: ExpressibleByArgument {}

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of a model on a text file, optionally KL divergence against saved reference log-probs.",
        discussion: """
        --protocol llama (default) reproduces llama.cpp's perplexity tool: chunks of --ctx tokens, the \
        second half of each scored. --protocol gptq scores every next token of non-overlapping windows \
        (the GPTQ/AQLM papers' figure). Progress goes to stderr; the result to stdout.
        """
    )

    @Option(help: "Model: the alias smollm2-135m or qwen2.5-coder-0.5b, a GGUF file, a Hugging Face directory or a packed AQLM directory.")
    var model = "smollm2-135m"

    @Option(help: "Storage of the embedding table and tied head: f32, f16, q8 (default: q8 for a packed model, f32 otherwise).")
    var head: EmbeddingPrecision?

    @Option(help: "Text file, tokenized whole as raw bytes.")
    var text: String?

    @Option(help: "Pre-tokenized ids (one per line) instead of --text.")
    var ids: String?

    @Option(help: "Tokens per chunk.")
    var ctx = 512

    @Option(help: "Evaluate at most this many chunks (default: the whole text).")
    var chunks: Int?

    @Option(name: .customLong("protocol"), help: "llama | gptq.")
    var method: PerplexityProtocol = .llama

    @Option(help: "Save this run's top-k log-probs per scored position to FILE (the KL reference).")
    var saveLogits: String?

    @Option(help: "Log-probs kept per position by --save-logits.")
    var topK = 32

    @Option(help: "Compare against a file saved with --save-logits: mean KL(base ‖ this) and top-1 agreement.")
    var klBase: String?

    @Option(help: threadsHelp)
    var threads: Int?

    @Option(help: denseMemoryHelp)
    var denseMemory: Double?

    @Flag(help: """
        Print one JSON object instead of text: ppl, ppl_stderr, mean_nll, chunks, ctx, scored_tokens, wall_seconds, \
        tokens_per_second, peak_rss_bytes, protocol, dense_linears, dense_linear_float32_bytes (and kld_mean, kld_stderr, top1_agreement with --kl-base).
        """)
    var json = false

    func run() throws {
        applyThreadsOption(threads)
        let (llama, spec) = try loadModel(model, head: head, denseMemory: denseMemory)
        let (tokens, textName) = try loadTokens(spec: spec)
        let options = PerplexityOptions(context: ctx, maxChunks: chunks, method: method, topK: topK,
                                        saveLogitsPath: saveLogits, klBasePath: klBase)
        try validatePerplexityInputs(tokenCount: tokens.count, textName: textName, options: options,
                                     modelContext: llama.config.contextLength, vocabSize: llama.config.vocabSize)
        let plan = ChunkPlan(tokenCount: tokens.count, context: ctx, maxChunks: chunks, method: method)
        logDenseLinears(llama)
        printError("perplexity: \(tokens.count) tokens, \(plan.chunks) chunks of \(ctx), "
                   + "\(plan.scoredPositions.count) scored per chunk (\(method.rawValue) protocol), \(Threads.count) threads")
        let result = try evaluatePerplexity(
            model: llama, tokens: tokens, bos: spec.addBOS ? spec.bosId : nil, textName: textName, options: options
        ) { p in
            printError("[\(p.chunk)]\(String(format: "%.4f", p.runningPPL)),", terminator: p.chunk == p.chunks ? "\n" : "")
        }
        let peak = peakResidentBytes()
        if json {
            print(try jsonLine(result, extra: denseLinearFields(llama).merging(
                ["peak_rss_bytes": peak.map { .int($0) } ?? .null, "protocol": .string(method.rawValue)]) { $1 }))
        } else {
            print(String(format: "Final estimate: PPL = %.4f +/- %.5f", result.ppl, result.pplStderr))
            if let kl = result.kldMean, let klError = result.kldStderr, let top1 = result.top1Agreement {
                print(String(format: "Mean KLD: %.6f ± %.6f, same top-1: %.3f %%", kl, klError, 100 * top1))
            }
            print(String(format: "%d chunks × %d tokens, %d scored, %.1f s, %.1f tokens/s, peak RSS %@",
                         result.chunks, result.ctx, result.scoredTokens, result.wallSeconds, result.tokensPerSecond,
                         peak.map { String(format: "%.0f MiB", Double($0) / 1_048_576) } ?? "n/a"))
        }
    }

    /// The token stream: --ids as given, or --text through the model's tokenizer.
    private func loadTokens(spec: TokenizerSpec) throws -> ([Int], String) {
        switch (text, ids) {
        case (let path?, nil):
            return (try makeTokenizer(spec).encode(try readTextFile(path)), path)
        case (nil, let path?):
            return (try readTokenIds(path), path)
        default:
            throw ValidationError("give exactly one of --text FILE or --ids FILE")
        }
    }
}
