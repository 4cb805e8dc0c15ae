import ArgumentParser
import Kernels

/// `aqlm`: one subcommand type per job; each lives in its own file and only parses options
/// before calling into the library targets.
struct AQLM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aqlm",
        abstract: "2-bit additive quantization (AQLM) of Llama-family models on the CPU.",
        subcommands: [
            Inspect.self, Tokenize.self, Perplexity.self, Generate.self, Quantize.self, SweepCommand.self, Finetune.self, Bench.self,
        ]
    )
}

/// The process entry: OpenBLAS's kernel set is chosen once for every subcommand, before any BLAS
/// call (quantize and finetune lean on sgemm as much as perplexity does), then `aqlm` runs.
@main
enum Entry {
    static func main() {
        BLASCore.applyRequestedCore()
        BLASThreads.useCallingThreadOnly()
        AQLM.main()
    }
}
