import Foundation
import XCTest
import Checkpoint

/// Every bad input gives one clear line naming the file, tensor or argument, and a non-zero
/// exit: never a crash, a hang, a usage dump or a stack trace.
final class CLIBadInputTests: CLITestCase {
    func testMissingModelFile() throws {
        let text = try writeText("text.txt", words: 50)
        let missing = path("no-such-model.gguf")
        for arguments in [
            ["inspect", missing], ["inspect", missing, "--json"], ["inspect", "--model", missing],
            ["tokenize", "--model", missing, "--text", text],
            ["perplexity", "--model", missing, "--text", text],
            ["generate", "--model", missing, "--prompt", "the"],
            ["quantize", "--model", missing, "--out", path("out"), "--calibration", text],
            ["bench", "--model", missing],
            ["bench", "--model", try tinyGGUF(), "--compare", missing],
            ["sweep", "--model", missing, "--schemes", "2x8", "--text", text, "--out", path("sweep")],
        ] {
            try assertOneLineError(arguments, mentions: [missing])
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("sweep")), "a sweep with a bad --model creates nothing")
        // A directory without config.json is not a model directory.
        let empty = path("empty-dir")
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        try assertOneLineError(["inspect", empty], mentions: [empty, "config.json"])
        try assertOneLineError(["perplexity", "--model", empty, "--text", text], mentions: [empty, "config.json"])
    }

    func testWrongMagic() throws {
        let text = try writeText("text.txt", words: 50)
        let notModel = path("not-a-model.gguf")
        try Data("this is plain text, not a GGUF file\n".utf8).write(to: URL(fileURLWithPath: notModel))
        for arguments in [
            ["inspect", notModel],
            ["tokenize", "--model", notModel, "--text", text],
            ["perplexity", "--model", notModel, "--text", text],
            ["generate", "--model", notModel, "--prompt", "the"],
            ["bench", "--model", notModel],
        ] {
            try assertOneLineError(arguments, mentions: [notModel, "magic"])
        }
    }

    func testTruncatedGGUF() throws {
        let text = try writeText("text.txt", words: 50)
        let full = try Data(contentsOf: URL(fileURLWithPath: try tinyGGUF()))
        // Cut inside the tensor data (header intact) and inside the header.
        for (name, length) in [("cut-data.gguf", full.count - 1000), ("cut-header.gguf", 300)] {
            let p = path(name)
            try full.prefix(length).write(to: URL(fileURLWithPath: p))
            try assertOneLineError(["inspect", p], mentions: [p])
            try assertOneLineError(["perplexity", "--model", p, "--text", text], mentions: [p])
            try assertOneLineError(["tokenize", "--model", p, "--text", text], mentions: [p])
        }
    }

    func testMissingOrEmptyText() throws {
        let model = try tinyGGUF()
        let missing = path("missing.txt")
        let empty = path("empty.txt")
        FileManager.default.createFile(atPath: empty, contents: Data())
        for text in [missing, empty] {
            try assertOneLineError(["tokenize", "--model", model, "--text", text], mentions: [text])
            try assertOneLineError(["perplexity", "--model", model, "--text", text], mentions: [text])
            try assertOneLineError(["perplexity", "--model", model, "--ids", text], mentions: [text])
        }
        try assertOneLineError(["perplexity", "--model", model], mentions: ["--text", "--ids"])
    }

    func testContextLargerThanTheModels() throws {
        let model = try tinyGGUF()
        let text = try writeText("text.txt", words: 400)
        let limit = TinyModel.config.contextLength
        try assertOneLineError(["perplexity", "--model", model, "--text", text, "--ctx", String(2 * limit)],
                               mentions: ["--ctx \(2 * limit)", "\(limit)"])
        // ... and a text shorter than one chunk names the file.
        let short = try writeText("short.txt", words: 5)
        try assertOneLineError(["perplexity", "--model", model, "--text", short, "--ctx", String(limit)], mentions: [short])
    }

    func testUnknownSchemeAndBadQuantizeArguments() throws {
        let model = try tinyGGUF()
        let text = try writeText("calibration.txt", words: 400)
        let out = path("out")
        try assertOneLineError(["quantize", "--model", model, "--out", out, "--calibration", text, "--scheme", "5y5"],
                               mentions: ["--scheme", "5y5"])
        try assertOneLineError(["quantize", "--model", model, "--out", out, "--calibration", text, "--scheme", "2x8g5"],
                               mentions: ["--scheme", "2x8g5"])
        try assertOneLineError(["quantize", "--model", model, "--out", out, "--calibration", text, "--samples", "0"],
                               mentions: ["--samples"])
        try assertOneLineError(["quantize", "--model", model, "--out", out, "--calibration", text, "--preset", "fastest"],
                               mentions: ["--preset", "fastest"])
        try assertOneLineError(["quantize", "--model", model, "--out", out, "--calibration", text, "--activation-memory=-1"],
                               mentions: ["--activation-memory", "-1"])
        try assertOneLineError(["quantize", "--model", model, "--out", out, "--calibration", path("no-calibration.txt")],
                               mentions: [path("no-calibration.txt")])
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "nothing written on bad arguments")
    }

    /// The default calibration text lives in the cache (tools/setup.sh builds it from the perl
    /// manuals); without it quantize and finetune say where it should be and how to build it.
    func testDefaultCalibrationTextNotBuiltNamesItsPathAndSetup() throws {
        let model = try tinyGGUF()
        let cache = path("empty-cache")
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        let expected = cache + "/aqlm/calibration/wikitext2-manuals.txt"
        try assertOneLineError(["quantize", "--model", model, "--out", path("out")],
                               mentions: ["wikitext2-manuals", expected, "tools/setup.sh"], environment: ["XDG_CACHE_HOME": cache])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("out")), "nothing written without calibration text")
        // Once built, the registry name finds it in the cache.
        try FileManager.default.createDirectory(atPath: cache + "/aqlm/calibration", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: try writeText("calibration.txt", words: 400), toPath: expected)
        let r = try run(["quantize", "--model", model, "--out", path("out"), "--scheme", "2x4", "--samples", "4", "--seqlen", "16",
                         "--blocks", "1", "--preset", "fast", "--finetune-epochs", "0"], timeout: 60, environment: ["XDG_CACHE_HOME": cache])
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    func testOutputPathThatExists() throws {
        let model = try tinyGGUF()
        let text = try writeText("calibration.txt", words: 400)
        let out = path("existing")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: URL(fileURLWithPath: out + "/file.txt"))
        try assertOneLineError(["quantize", "--model", model, "--out", out, "--calibration", text, "--scheme", "1x8",
                                "--samples", "16", "--seqlen", "16"], mentions: [out, "exists"])
        XCTAssertEqual(try String(contentsOfFile: out + "/file.txt", encoding: .utf8), "keep", "existing output untouched")
    }

    func testCalibrationShorterThanOneSequence() throws {
        let model = try tinyGGUF()
        let short = try writeText("short-calibration.txt", words: 3)
        try assertOneLineError(["quantize", "--model", model, "--out", path("out"), "--calibration", short, "--scheme", "1x8",
                                "--samples", "16", "--seqlen", "64"], mentions: [short])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("out")))
    }

    func testNaNInAWeight() throws {
        let tensor = "model.layers.1.mlp.up_proj.weight"
        let model = try tinyGGUF("nan.gguf") { w in w.tensors[tensor]!.values[17] = .nan }
        let infinite = try tinyGGUF("inf.gguf") { w in w.tensors["model.layers.0.input_layernorm.weight"]!.values[3] = .infinity }
        let text = try writeText("text.txt", words: 400)
        try assertOneLineError(["perplexity", "--model", model, "--text", text, "--ctx", "64"], mentions: [model, tensor])
        try assertOneLineError(["generate", "--model", model, "--prompt", "the cat", "-n", "4"], mentions: [model, tensor])
        // Streamed linears are checked from the file too, without a Float32 copy.
        try assertOneLineError(["perplexity", "--model", model, "--text", text, "--ctx", "64", "--dense-memory", "0"],
                               mentions: [model, tensor])
        try assertOneLineError(["quantize", "--model", model, "--out", path("out"), "--calibration", text, "--scheme", "1x8",
                                "--samples", "16", "--seqlen", "16"], mentions: [model, tensor])
        try assertOneLineError(["perplexity", "--model", infinite, "--text", text, "--ctx", "64"],
                               mentions: [infinite, "model.layers.0.input_layernorm.weight"])
    }

    func testUnknownOptionAndBadValues() throws {
        let model = try tinyGGUF()
        let text = try writeText("text.txt", words: 50)
        // Otherwise complete command lines, so the unknown option is the only thing wrong.
        for arguments in [
            ["inspect", model], ["tokenize", "--model", model, "--text", text], ["perplexity", "--model", model, "--text", text],
            ["generate", "--model", model, "--prompt", "the"], ["quantize", "--model", model, "--out", path("out")],
            ["sweep", "--model", model, "--schemes", "2x8", "--out", path("sweep")],
        ] {
            try assertOneLineError(arguments + ["--no-such-option"], mentions: ["--no-such-option"])
        }
        try assertOneLineError(["no-such-command"], mentions: ["no-such-command"])
        try assertOneLineError(["perplexity", "--model", model, "--text", text, "--ctx", "many"], mentions: ["many", "--ctx"])
        try assertOneLineError(["perplexity", "--model", model, "--text", text, "--protocol", "bogus"], mentions: ["bogus", "--protocol"])
        try assertOneLineError(["generate", "--model", model, "--prompt", "the", "--temp=-1"], mentions: ["--temp"])
        try assertOneLineError(["generate", "--model", model], mentions: ["--prompt"])
        try assertOneLineError(["tokenize", "--model", model], mentions: ["--text"])
    }
}
