import ArgumentParser
import Checkpoint
import PackedFormat

/// `aqlm inspect PATH`: what a checkpoint holds (hyper-parameters, metadata, tensors, parameter
/// counts, bits per weight), as text or as one JSON object, for every format the tool reads.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Describe a checkpoint: hyper-parameters, metadata, tensors, parameter counts, bits per weight.",
        discussion: """
        Reads headers only. For a packed AQLM directory, each linear's codes, codebooks and scales \
        count toward that linear: codes at B bits each (whatever their int8/int16 container), codebooks \
        and scales at 16 bits, so bits per weight over block linears is the scheme's honest figure; \
        the scheme comes from quantization_config and the run's totals from report.json, if present.
        """)

    @Argument(help: "A GGUF file, a Hugging Face model directory, a packed AQLM directory, or the alias smollm2-135m or qwen2.5-coder-0.5b (default: smollm2-135m).")
    var path: String?

    @Option(name: .customLong("model"), help: "The same as the argument, spelled as every other command spells it.")
    var modelOption: String?

    @Flag(name: .long, help: """
        Print one JSON object instead of the text report, with the same keys for every format: path, format, \
        architecture, config, metadata, tensors (name, shape, type, bytes, bits, parameters, role), parameters, \
        total_bytes, bits_per_weight, block_linear_bits_per_weight, quantization, report (null when absent).
        """)
    var json = false

    /// The model named by the argument or --model (default smollm2-135m).
    var model: String { path ?? modelOption ?? "smollm2-135m" }

    func validate() throws {
        if path != nil && modelOption != nil { throw ValidationError("give the model as the argument or as --model, not both") }
    }

    func run() throws {
        let summary = try summarizeCheckpoint(model)
        print(json ? try summary.json() : summary.text())
    }
}
