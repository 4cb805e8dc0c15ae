import ArgumentParser
import Checkpoint
import Foundation
import Tokenizer

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of a text file (llama.cpp-compatible byte-level BPE).",
        discussion: "The file is read as raw bytes (CRLF kept); no BOS is added unless the model asks for it."
    )

    @Option(help: "Model: the alias smollm2-135m or qwen2.5-coder-0.5b, a GGUF file, a Hugging Face directory or a packed AQLM directory.")
    var model = "smollm2-135m"

    @Option(help: "Text file to tokenize.")
    var text: String

    @Flag(help: "Print only the number of tokens.")
    var count = false

    @Flag(help: "Print one JSON object: {\"tokens\": N, \"ids\": [...], \"tokens_per_second\": R} (no ids with --count).")
    var json = false

    @Flag(help: "Turn control-token texts such as <|im_start|> into those tokens instead of plain text.")
    var parseSpecial = false

    func run() throws {
        let tokenizer = try loadTokenizer(model)
        let bytes = try readText(text)
        let clock = ContinuousClock()
        let started = clock.now
        let ids = tokenizer.encode(bytes, parseSpecial: parseSpecial)
        let elapsed = clock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        let tokensPerSecond = Double(ids.count) / max(seconds, 1e-9)
        print(report(ids, tokensPerSecond: tokensPerSecond))
    }

    private func report(_ ids: [Int], tokensPerSecond: Double) -> String {
        guard json else {
            return count ? String(ids.count) : ids.map(String.init).joined(separator: "\n")
        }
        var fields = ["\"tokens\": \(ids.count)"]
        if !count { fields.append("\"ids\": [" + ids.map(String.init).joined(separator: ", ") + "]") }
        fields.append("\"tokens_per_second\": \((tokensPerSecond * 10).rounded() / 10)")
        return "{" + fields.joined(separator: ", ") + "}"
    }
}

/// The tokenizer stored with a model (any format `openModel` reads); errors name the path.
private func loadTokenizer(_ name: String) throws -> BPETokenizer {
    let spec = try openTokenizer(name)
    do {
        return try BPETokenizer(spec: spec)
    } catch let error as TokenizerError {
        throw TokenizeError("\(ModelPaths.resolve(name)): \(error)")
    }
}

private func readText(_ path: String) throws -> [UInt8] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw TokenizeError("\(path): no such file or directory")
    }
    guard !isDirectory.boolValue, let data = FileManager.default.contents(atPath: path) else {
        throw TokenizeError("\(path): cannot read text file")
    }
    guard !data.isEmpty else { throw TokenizeError("\(path): text file is empty") }
    return [UInt8](data)
}

private struct TokenizeError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
