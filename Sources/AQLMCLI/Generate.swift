import ArgumentParser
import Evaluation
import Foundation
import Kernels
import Llama
import Tokenizer

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue a prompt, streaming the text to stdout as it is produced.",
        discussion: "Greedy with --temp 0; otherwise seeded sampling (same --seed, same text). Stops at EOS or after -n tokens."
    )

    @Option(help: "Model: the alias smollm2-135m, a GGUF file, a Hugging Face directory or a packed AQLM directory.")
    var model = "smollm2-135m"

    @Option(help: "Storage of the embedding table and tied head: f32, f16, q8 (default: q8 for a packed model, f32 otherwise).")
    var head: EmbeddingPrecision?

    @Option(help: "Prompt text (tokenized as is; BOS only if the model adds it).")
    var prompt: String

    @Option(name: .short, help: "Maximum number of new tokens.")
    var n = 64

    @Option(help: "Sampling temperature; 0 = greedy.")
    var temp: Float = 0.8

    @Option(help: "Nucleus sampling: keep the most likely tokens up to this probability mass (1 = all).")
    var topP: Float = 0.95

    @Option(help: "Seed of the sampler.")
    var seed: UInt64 = 0

    @Option(help: "Cores to use (our loops and OpenBLAS).")
    var threads: Int?

    @Flag(help: "Print one JSON object at the end instead of streaming text.")
    var json = false

    @Flag(help: .hidden)
    var bench = false

    func validate() throws {
        if temp < 0 { throw ValidationError("--temp \(temp): must be 0 (greedy) or positive") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p \(topP): must be in (0, 1]") }
        if n < 0 { throw ValidationError("-n \(n): must be at least 0") }
    }

    func run() throws {
        if let threads { Threads.set(threads) }
        let (llama, spec) = try loadModel(model, head: head)
        if bench {
            let result = benchmarkForward(model: llama)
            print(try jsonLine(result, extra: [:]))
            return
        }
        let tokenizer = try makeTokenizer(spec)
        let promptIds = tokenizer.encode(prompt)
        var stopTokens = tokenizer.endOfGenerationIds
        if let eos = spec.eosId { stopTokens.insert(eos) }
        let options = GenerationOptions(maxNewTokens: n, sampling: SamplingOptions(temperature: temp, topP: topP, seed: seed),
                                        stopTokens: stopTokens)

        var decoder = StreamingDecoder(tokenizer: tokenizer)
        if !json { writeStdout(prompt) }
        let result = try generate(model: llama, prompt: promptIds, options: options) { id in
            let piece = decoder.append(id)
            if !json && !piece.isEmpty { writeStdout(piece) }
        }
        let tail = decoder.finish()
        if json {
            let text = tokenizer.decode(result.ids)
            print(try jsonLine(result, extra: ["text": .string(text), "peak_rss_bytes": peakResidentBytes().map { .int($0) } ?? .null]))
        } else {
            writeStdout(tail + "\n")
            printError(String(format: "%d prompt tokens at %.1f tokens/s, %d generated at %.1f tokens/s (%@)",
                              result.promptTokens, result.prefillTokensPerSecond, result.ids.count,
                              result.tokensPerSecond, result.stopReason))
        }
    }
}

/// Unbuffered, so streamed text appears as it is produced.
private func writeStdout(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}
