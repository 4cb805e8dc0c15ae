import ArgumentParser
import Checkpoint

/// `aqlm inspect PATH`: what a checkpoint holds (hyper-parameters, metadata, tensors, parameter
/// counts, bits per weight), as text or as one JSON object.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Describe a GGUF checkpoint: hyper-parameters, metadata, tensors, bits per weight.")

    @Argument(help: "A GGUF file, or a model alias (smollm2-135m).")
    var model: String = "smollm2-135m"

    @Flag(name: .long, help: "Print one JSON object (snake_case keys) instead of the text report.")
    var json = false

    func run() throws {
        let summary = try GGUFFile(path: ModelPaths.resolve(model)).summary()
        print(json ? try summary.json() : summary.text())
    }
}
