import Foundation
import XCTest
import Checkpoint

/// `--json` prints one JSON object with the keys each command's help documents, and every
/// reader command accepts a GGUF file, a Hugging Face directory and a packed AQLM directory.
final class CLIJSONTests: CLITestCase {
    let inspectKeys = ["path", "format", "architecture", "config", "metadata", "tensors", "parameters", "total_bytes",
                       "bits_per_weight", "block_linear_bits_per_weight", "quantization", "report"]
    let tensorKeys = ["name", "shape", "type", "bytes", "bits", "parameters", "role"]
    let perplexityKeys = ["ppl", "ppl_stderr", "mean_nll", "chunks", "ctx", "scored_tokens", "wall_seconds",
                          "tokens_per_second", "peak_rss_bytes", "protocol", "dense_linears", "dense_linear_float32_bytes"]
    let quantizeKeys = ["scheme", "model", "output", "calibration", "samples", "seqlen", "seed", "beam", "bits_per_weight",
                        "model_bits_per_weight", "quantized_parameters", "other_parameters", "other_bytes", "file_bytes",
                        "wall_seconds", "peak_rss_bytes", "block_output_errors"]

    /// Each of `keys` is in the output and in the command's `--help`, and every key the output
    /// has is documented there too (a key added without documentation fails).
    func assertDocumentedKeys(_ object: [String: Any], _ keys: [String], command: String,
                              file: StaticString = #filePath, line: UInt = #line) throws {
        let help = try succeed([command, "--help"]).split(whereSeparator: \.isWhitespace).joined(separator: " ")
        for key in keys {
            XCTAssertNotNil(object[key], "aqlm \(command) --json lacks '\(key)'", file: file, line: line)
        }
        for key in Set(keys).union(object.keys) {
            XCTAssertTrue(help.contains(key), "aqlm \(command) --help does not document '\(key)'", file: file, line: line)
        }
    }

    /// AQLM storage of one [dOut, dIn] linear, counted from the scheme's definition: M·B bits
    /// per group of G weights, M fp16 codebooks of 2^B codewords of G values, one fp16 scale per row.
    func aqlmBits(dOut: Int, dIn: Int, m: Int, b: Int, g: Int) -> Int {
        dOut * (dIn / g) * m * b + m * (1 << b) * g * 16 + dOut * 16
    }

    func testInspectSameShapeForEveryFormatAndHonestPackedBits() throws {
        let gguf = try tinyGGUF()
        let hf = path("tiny-hf")
        try HuggingFaceCheckpoint.write(TinyModel.weights(seed: 1), toDirectory: hf, dtype: .f16)
        let calibration = try writeText("calibration.txt", words: 1500)
        // 4-bit codes in int8 cells: the honest count must see 4 bits, not the container's 8.
        let packed = path("tiny-2x4")
        try succeed(["quantize", "--model", gguf, "--out", packed, "--scheme", "2x4", "--calibration", calibration,
                     "--samples", "16", "--seqlen", "32", "--max-iters", "2", "--threads", "1"], timeout: 60)

        let c = TinyModel.config
        var summaries: [String: [String: Any]] = [:]
        for (name, model) in [("gguf", gguf), ("hf", hf), ("packed", packed)] {
            let object = try jsonObject(try succeed(["inspect", model, "--json"]))
            try assertDocumentedKeys(object, inspectKeys, command: "inspect")
            for row in object["tensors"] as? [[String: Any]] ?? [] {
                XCTAssertEqual(Set(row.keys), Set(tensorKeys), "\(name): tensor row keys")
            }
            let config = try XCTUnwrap(object["config"] as? [String: Any], name)
            XCTAssertEqual(config["num_layers"] as? Int, c.numLayers, name)
            XCTAssertEqual(config["hidden_size"] as? Int, c.hiddenSize, name)
            XCTAssertEqual(object["architecture"] as? String, "llama", name)
            summaries[name] = object
            // The text report reads the same files, named by the argument or by --model.
            XCTAssertTrue(try succeed(["inspect", model]).contains("over block linears"), name)
            XCTAssertEqual(try succeed(["inspect", "--model", model]), try succeed(["inspect", model]), name)
        }
        let linearParameters = c.numLayers * (2 * c.hiddenSize * c.numHeads * c.headDim + 2 * c.hiddenSize * c.numKVHeads * c.headDim
            + 3 * c.hiddenSize * c.intermediateSize)
        for (name, s) in summaries {
            let parameters = try XCTUnwrap(s["parameters"] as? [String: Int], name)
            XCTAssertEqual(parameters["block_linears"], linearParameters, "\(name): parameters of the block linears")
        }
        XCTAssertEqual(summaries["gguf"]?["block_linear_bits_per_weight"] as? Double, 32)
        XCTAssertEqual(summaries["hf"]?["block_linear_bits_per_weight"] as? Double, 16)
        XCTAssertTrue(summaries["gguf"]?["quantization"] is NSNull && summaries["hf"]?["report"] is NSNull, "null, not absent")

        // Packed: codes at 4 bits, fp16 codebooks and scales, all counted toward the linear.
        let p = try XCTUnwrap(summaries["packed"])
        var bits = 0
        for layer in 0..<c.numLayers {
            for name in LlamaConfig.linearNames(layer: layer) {
                let shape = c.expectedShapes.first { $0.0 == name + ".weight" }!.1
                bits += aqlmBits(dOut: shape[0], dIn: shape[1], m: 2, b: 4, g: 8)
            }
        }
        XCTAssertEqual(try XCTUnwrap(p["block_linear_bits_per_weight"] as? Double), Double(bits) / Double(linearParameters),
                       accuracy: 1e-12)
        let quantization = try XCTUnwrap(p["quantization"] as? [String: Any])
        XCTAssertEqual(quantization["scheme"] as? String, "2x4")
        XCTAssertEqual(quantization["method"] as? String, "aqlm")
        XCTAssertEqual(quantization["nbits_per_codebook"] as? Int, 4)
        XCTAssertEqual(quantization["num_codebooks"] as? Int, 2)
        let report = try XCTUnwrap(p["report"] as? [String: Any], "report.json totals")
        XCTAssertEqual(report["scheme"] as? String, "2x4")
        XCTAssertEqual(try XCTUnwrap(report["bits_per_weight"] as? Double), Double(bits) / Double(linearParameters), accuracy: 1e-9,
                       "inspect and quantize agree on bits per weight")
        XCTAssertNil(report["layers"], "totals only")
        let rows = try XCTUnwrap(p["tensors"] as? [[String: Any]])
        let codes = try XCTUnwrap(rows.first { $0["name"] as? String == "model.layers.0.mlp.down_proj.codes" })
        XCTAssertEqual(codes["parameters"] as? Int, c.hiddenSize * c.intermediateSize)
        XCTAssertEqual(codes["role"] as? String, "block_linear")
        XCTAssertEqual(codes["type"] as? String, "I8")
        XCTAssertEqual(codes["bits"] as? Int, 4 * c.hiddenSize * (c.intermediateSize / 8) * 2, "4 of each int8's 8 bits")
        XCTAssertEqual(codes["bytes"] as? Int, c.hiddenSize * (c.intermediateSize / 8) * 2, "bytes as stored")
        let codebooks = try XCTUnwrap(rows.first { $0["name"] as? String == "model.layers.0.mlp.down_proj.codebooks" })
        XCTAssertEqual(codebooks["parameters"] as? Int, 0)
        XCTAssertEqual(codebooks["bits"] as? Int, 2 * 16 * 8 * 16)
    }

    func testTokenizeJSONAndEveryModelFormat() throws {
        let gguf = try tinyGGUF()
        let hf = path("tiny-hf")
        try HuggingFaceCheckpoint.write(TinyModel.weights(seed: 1), toDirectory: hf, dtype: .f32)
        let text = try writeText("text.txt", words: 200)

        let plain = try succeed(["tokenize", "--model", gguf, "--text", text])
        let ids = plain.split(separator: "\n").map { Int($0)! }
        XCTAssertGreaterThan(ids.count, 200)
        let object = try jsonObject(try succeed(["tokenize", "--model", gguf, "--text", text, "--json"]))
        try assertDocumentedKeys(object, ["tokens", "ids", "tokens_per_second"], command: "tokenize")
        XCTAssertEqual(object["ids"] as? [Int], ids)
        XCTAssertEqual(object["tokens"] as? Int, ids.count)
        let counted = try jsonObject(try succeed(["tokenize", "--model", gguf, "--text", text, "--json", "--count"]))
        XCTAssertEqual(Set(counted.keys), ["tokens", "tokens_per_second"])
        XCTAssertEqual(try succeed(["tokenize", "--model", hf, "--text", text]), plain, "a Hugging Face directory tokenizes the same")
    }

    func testPerplexityJSONOnTheTinyModelAndAcrossFormats() throws {
        let gguf = try tinyGGUF()
        let hf = path("tiny-hf")
        try HuggingFaceCheckpoint.write(TinyModel.weights(seed: 1), toDirectory: hf, dtype: .f32)
        let text = try writeText("text.txt", words: 400)
        let arguments = ["--text", text, "--ctx", "64", "--chunks", "3", "--json"]
        let object = try jsonObject(try succeed(["perplexity", "--model", gguf] + arguments))
        try assertDocumentedKeys(object, perplexityKeys, command: "perplexity")
        let ppl = try XCTUnwrap(object["ppl"] as? Double)
        XCTAssertTrue(ppl.isFinite && ppl > 1, "ppl \(ppl)")
        XCTAssertEqual(object["chunks"] as? Int, 3)
        XCTAssertEqual(object["ctx"] as? Int, 64)
        let scored = try XCTUnwrap(object["scored_tokens"] as? Int)
        XCTAssertTrue(scored > 0 && scored <= 3 * 32, "llama protocol scores at most the second half of each chunk: \(scored)")
        XCTAssertEqual(object["protocol"] as? String, "llama")
        // The same F32 weights from a Hugging Face directory give the same perplexity.
        let fromHF = try jsonObject(try succeed(["perplexity", "--model", hf] + arguments))
        XCTAssertEqual(try XCTUnwrap(fromHF["ppl"] as? Double), ppl, accuracy: 1e-4 * ppl)

        XCTAssertEqual(object["dense_linears"] as? String, "float32", "the default budget holds a tiny model as Float32")
        // --dense-memory 0 streams the linears from the file: the same perplexity, bit for bit.
        let streamedRun = try run(["perplexity", "--model", gguf, "--dense-memory", "0"] + arguments)
        XCTAssertEqual(streamedRun.status, 0, streamedRun.stderr)
        let streamed = try jsonObject(streamedRun.stdout)
        XCTAssertEqual(streamed["dense_linears"] as? String, "streamed")
        XCTAssertEqual(try XCTUnwrap(streamed["ppl"] as? Double), ppl)
        XCTAssertLessThan(try XCTUnwrap(streamed["dense_linear_float32_bytes"] as? Int),
                          try XCTUnwrap(object["dense_linear_float32_bytes"] as? Int))
        XCTAssertEqual(streamedRun.stderrLines.filter { $0.hasPrefix("dense linears: streamed") }.count, 1, streamedRun.stderr)
        let generated = ["generate", "--model", gguf, "--prompt", "the cat", "-n", "6", "--temp", "0", "--json"]
        let float32Text = try jsonObject(try succeed(generated))
        let streamedText = try jsonObject(try succeed(generated + ["--dense-memory", "0"]))
        XCTAssertEqual(streamedText["dense_linears"] as? String, "streamed")
        XCTAssertEqual(streamedText["text"] as? String, float32Text["text"] as? String)
        try assertOneLineError(["perplexity", "--model", gguf, "--text", text, "--dense-memory", "-1"], mentions: ["--dense-memory"])

        let text2 = try succeed(["perplexity", "--model", gguf, "--text", text, "--ctx", "64", "--chunks", "3"])
        XCTAssertTrue(text2.contains("Final estimate: PPL = "), text2)
    }

    func testQuantizeJSONAndThePackedModelRunsEverywhere() throws {
        let gguf = try tinyGGUF()
        let calibration = try writeText("calibration.txt", words: 1500)
        let packed = path("tiny-2x5g4")
        let object = try jsonObject(try succeed(["quantize", "--model", gguf, "--out", packed, "--scheme", "2x5g4", "--json",
                                                 "--calibration", calibration, "--samples", "16", "--seqlen", "32",
                                                 "--max-iters", "2", "--beam", "2", "--threads", "1"], timeout: 60))
        try assertDocumentedKeys(object, quantizeKeys, command: "quantize")
        XCTAssertEqual(object["scheme"] as? String, "2x5g4")
        XCTAssertEqual(object["calibration"] as? String, calibration)
        XCTAssertEqual((object["block_output_errors"] as? [Double])?.count, TinyModel.config.numLayers)
        let c = TinyModel.config
        var bits = 0, parameters = 0
        for layer in 0..<c.numLayers {
            for name in LlamaConfig.linearNames(layer: layer) {
                let shape = c.expectedShapes.first { $0.0 == name + ".weight" }!.1
                bits += aqlmBits(dOut: shape[0], dIn: shape[1], m: 2, b: 5, g: 4)
                parameters += shape[0] * shape[1]
            }
        }
        XCTAssertEqual(try XCTUnwrap(object["bits_per_weight"] as? Double), Double(bits) / Double(parameters), accuracy: 1e-9)
        let inspected = try jsonObject(try succeed(["inspect", packed, "--json"]))
        XCTAssertEqual(try XCTUnwrap(inspected["block_linear_bits_per_weight"] as? Double), Double(bits) / Double(parameters),
                       accuracy: 1e-12)

        // Every reader command opens the packed directory.
        let text = try writeText("text.txt", words: 400)
        let ppl = try jsonObject(try succeed(["perplexity", "--model", packed, "--text", text, "--ctx", "64", "--chunks", "2", "--json"]))
        XCTAssertTrue((ppl["ppl"] as? Double)?.isFinite == true)
        let generated = try jsonObject(try succeed(["generate", "--model", packed, "--prompt", "the cat", "-n", "5", "--temp", "0", "--json"]))
        XCTAssertNotNil(generated["text"] as? String)
        XCTAssertEqual(try succeed(["tokenize", "--model", packed, "--text", text]),
                       try succeed(["tokenize", "--model", gguf, "--text", text]))
    }
}
