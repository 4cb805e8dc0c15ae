import ArgumentParser
import Checkpoint
import Evaluation
import Foundation
import Kernels
import Llama
import Tokenizer

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue a prompt, streaming the text to stdout as it is produced.",
        discussion: """
            Greedy with --temp 0; otherwise seeded sampling (same --seed, same text). Stops at EOS (or <|im_end|>) \
            or after -n tokens. With --chat the prompt is the user's message in the model's ChatML chat template \
            (GGUF tokenizer.chat_template or tokenizer_config.json's chat_template), and only the reply is printed.
            """
    )

    @Option(help: "Model: the alias smollm2-135m or qwen2.5-coder-0.5b, a GGUF file, a Hugging Face directory or a packed AQLM directory.")
    var model = "smollm2-135m"

    @Option(help: "Storage of the embedding table and tied head: f32, f16, q8 (default: q8 for a packed model, f32 otherwise).")
    var head: EmbeddingPrecision?

    @Option(help: "Storage of the key/value cache: f32 (exact) or f16 (half the bytes decode attention reads, llama.cpp's default).")
    var kvCache: KVCachePrecision = .f32

    @Option(help: "Prompt text (tokenized as is; BOS only if the model adds it). With --chat: the user's message.")
    var prompt: String

    @Flag(help: "Wrap the prompt in the model's chat template (ChatML: system, user, then an open assistant turn).")
    var chat = false

    @Option(help: "With --chat: the system message (default: the one the chat template writes when none is given).")
    var system: String?

    @Option(name: .short, help: "Maximum number of new tokens.")
    var n = 64

    @Option(help: "Sampling temperature; 0 = greedy.")
    var temp: Float = 0.8

    @Option(help: "Nucleus sampling: keep the most likely tokens up to this probability mass (1 = all).")
    var topP: Float = 0.95

    @Option(help: "Seed of the sampler.")
    var seed: UInt64 = 0

    @Option(help: threadsHelp)
    var threads: Int?

    @Option(help: denseMemoryHelp)
    var denseMemory: Double?

    @Flag(help: "Print one JSON object at the end instead of streaming text (with peak_rss_bytes, dense_linears, dense_linear_float32_bytes).")
    var json = false

    @Flag(help: .hidden)
    var bench = false

    func validate() throws {
        if temp < 0 { throw ValidationError("--temp \(temp): must be 0 (greedy) or positive") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p \(topP): must be in (0, 1]") }
        if n < 0 { throw ValidationError("-n \(n): must be at least 0") }
        if system != nil && !chat { throw ValidationError("--system is a chat turn: add --chat") }
    }

    func run() throws {
        applyThreadsOption(threads)
        // The template is checked before the weights are read: a refusal should not cost a model load.
        let chatFormat = try chat ? chatTemplate(model) : nil
        var (llama, spec) = try loadModel(model, head: head, denseMemory: denseMemory)
        llama.kvCache = kvCache
        if bench {
            let result = benchmarkForward(model: llama)
            print(try jsonLine(result, extra: [:]))
            return
        }
        let tokenizer = try makeTokenizer(spec)
        let promptIds = try chatFormat.map { format in
            try namingModel(model) { try format.encode(system: system, user: prompt, with: tokenizer) }
        } ?? tokenizer.encode(prompt)
        var stopTokens = tokenizer.endOfGenerationIds
        if let eos = spec.eosId { stopTokens.insert(eos) }
        let options = GenerationOptions(maxNewTokens: n, sampling: SamplingOptions(temperature: temp, topP: topP, seed: seed),
                                        stopTokens: stopTokens)

        var decoder = StreamingDecoder(tokenizer: tokenizer)
        if !json && !chat { writeStdout(prompt) }
        let result = try generate(model: llama, prompt: promptIds, options: options) { id in
            let piece = decoder.append(id)
            if !json && !piece.isEmpty { writeStdout(piece) }
        }
        let tail = decoder.finish()
        logDenseLinears(llama)
        if json {
            let text = tokenizer.decode(result.ids)
            print(try jsonLine(result, extra: denseLinearFields(llama).merging(
                ["text": .string(text), "peak_rss_bytes": peakResidentBytes().map { .int($0) } ?? .null]) { $1 }))
        } else {
            writeStdout(tail + "\n")
            printError(String(format: "%d prompt tokens at %.1f tokens/s, %d generated at %.1f tokens/s (%@)",
                              result.promptTokens, result.prefillTokensPerSecond, result.ids.count,
                              result.tokensPerSecond, result.stopReason))
        }
    }
}

/// The model's chat template as ChatML, or one line naming the model when it has none or another.
private func chatTemplate(_ model: String) throws -> ChatML {
    try namingModel(model) { try ChatML(template: openTokenizer(model).chatTemplate) }
}

/// A tokenizer error (no ChatML template, no `<|im_start|>` token) as one line naming the model's file.
private func namingModel<T>(_ model: String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as TokenizerError {
        throw CLIError("\(ModelPaths.resolve(model)): \(error)")
    }
}

/// Unbuffered, so streamed text appears as it is produced.
private func writeStdout(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}
