import ArgumentParser

/// `aqlm`: one subcommand type per job; each lives in its own file and only parses options
/// before calling into the library targets.
@main
struct AQLM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aqlm",
        abstract: "2-bit additive quantization (AQLM) of Llama-family models on the CPU.",
        subcommands: [
            Inspect.self, Tokenize.self, Perplexity.self, Generate.self, Quantize.self, SweepCommand.self, Finetune.self, Bench.self,
        ]
    )
}
