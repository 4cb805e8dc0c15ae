import Foundation
import XCTest
import Checkpoint

/// The ecosystem contract, checked against the real client (tools/pyenv-hf.sh: torch, transformers
/// 4.x and 5.x, the aqlm package) on tiny models:
/// - what `aqlm quantize` writes (tied head, 2x8 and 1x16 with int16 codes; untied head with
///   q/k/v biases, 1x8; `--blocks 1`, so one block's linears stay dense and must be declared so)
///   loads in both transformers generations
///   with nothing missing or newly initialised, and tools/hf_crosscheck.py finds its perplexity
///   within 1e-4 relative of ours and the same greedy tokens;
/// - what transformers' `save_pretrained` writes for a model of aqlm `QuantizedLinear`s
///   (tools/hf_write_aqlm.py, 1x16 random int16 codes over the whole range, bf16) runs in `aqlm`
///   with the same agreement.
/// Skipped, saying why, only when pip cannot reach the package index to build the venvs.
final class CLIEcosystemTests: CLITestCase {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static func tool(_ name: String) -> String { (packageRoot as NSString).appendingPathComponent("tools/" + name) }

    /// Runs a non-aqlm command (python, bash) to completion: (status, stdout, stderr).
    func external(_ arguments: [String]) throws -> (Int32, String, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let out = path("ext-out-\(UUID().uuidString)"), err = path("ext-err-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out, contents: nil)
        FileManager.default.createFile(atPath: err, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: out)
        process.standardError = FileHandle(forWritingAtPath: err)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return (process.terminationStatus, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    }

    /// The venv's python for transformers `generation` (4 or 5), built on first use.
    func python(generation: Int) throws -> String {
        let (status, out, err) = try external(["bash", Self.tool("pyenv-hf.sh"), String(generation)])
        if status != 0 {
            let (indexStatus, _, indexErr) = try external(["python3", "-m", "pip", "index", "versions", "aqlm"])
            if indexStatus != 0 {
                throw XCTSkip("pip cannot reach the package index to build the transformers venv: \(indexErr.suffix(300))")
            }
            XCTFail("tools/pyenv-hf.sh \(generation) failed although pip reaches the index:\n\(err.suffix(3000))")
        }
        let py = try XCTUnwrap(out.split(separator: "\n").last.map(String.init), "tools/pyenv-hf.sh printed nothing")
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: py), py)
        return py
    }

    /// tools/hf_crosscheck.py on `checkpoint`: must pass, and its JSON report is returned.
    @discardableResult
    func crossCheck(_ py: String, _ checkpoint: String, text: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let (status, out, err) = try external([py, Self.tool("hf_crosscheck.py"), checkpoint, "--aqlm", try aqlmExecutable(),
                                               "--text", text, "--ctx", "64", "--chunks", "4", "--tokens", "16",
                                               "--prompt", "the cat sat"])
        XCTAssertEqual(status, 0, "hf_crosscheck.py \(checkpoint):\n\(out)\n\(err.suffix(3000))", file: file, line: line)
        let report = try jsonObject(out.split(separator: "\n").last.map(String.init) ?? "", file: file, line: line)
        XCTAssertEqual(report["pass"] as? Bool, true, "\(report)", file: file, line: line)
        XCTAssertEqual(report["chunks"] as? Int, 4, file: file, line: line)
        XCTAssertGreaterThan(report["quantized_linears"] as? Int ?? 0, 0, file: file, line: line)
        return report
    }

    func testTransformersAndAQLMPackageAgreeWithUsBothWays() throws {
        continueAfterFailure = false
        let text = try writeText("text.txt", words: 3000)
        let untied = LlamaConfig(architecture: "qwen2", vocabSize: TinyModel.config.vocabSize, hiddenSize: 64,
                                 intermediateSize: 128, numLayers: 2, numHeads: 4, numKVHeads: 2, contextLength: 128,
                                 ropeTheta: 10000, rmsNormEps: 1e-6, tiedEmbeddings: false, attentionBias: true)
        let tied = try tinyGGUF("tied.gguf", seed: 3)
        let biased = try tinyGGUF("untied.gguf", seed: 4, config: untied)
        var ours: [String] = []
        for (model, scheme) in [(tied, "2x8"), (biased, "1x8"), (tied, "1x16")] {
            let out = path("packed-\(scheme)-" + ((model as NSString).lastPathComponent as NSString).deletingPathExtension)
            try succeed(["quantize", "--model", model, "--out", out, "--calibration", text, "--scheme", scheme,
                         "--samples", "8", "--seqlen", "32", "--blocks", "1", "--finetune-epochs", "0"], timeout: 120)
            ours.append(out)
        }
        // 1x16 codes are int16 (0..<65536 stored as their two's-complement bit pattern). A tiny
        // model has fewer groups than codewords, so its codes stay below 2^15; the upper half is
        // exercised below by the ecosystem-written random codes, and on SmolLM2 in BENCHMARKS.md.
        let ours1x16 = try SafeTensorsFile(path: ours[2] + "/model.safetensors")
        XCTAssertEqual(ours1x16.tensor("model.layers.0.mlp.down_proj.codes")?.dtype, .i16, "1x16 codes as int16")
        for generation in [4, 5] {
            let py = try python(generation: generation)
            for checkpoint in ours {
                let report = try crossCheck(py, checkpoint, text: text)
                XCTAssertEqual(report["quantized_linears"] as? Int, 7, "one block of 7 linears quantized: \(report)")
                XCTAssertEqual(report["tied_head"] as? Bool, checkpoint != ours[1], "only the qwen2 model's head is untied: \(report)")
            }
            // The other direction: converted to a Hugging Face directory by third-party code, then
            // quantized into aqlm QuantizedLinear modules and saved by transformers itself.
            let hf = path("hf-\(generation)"), written = path("ecosystem-\(generation)")
            var (status, _, err) = try external([py, Self.tool("gguf_to_hf.py"), biased, hf])
            XCTAssertEqual(status, 0, err)
            (status, _, err) = try external([py, Self.tool("hf_write_aqlm.py"), hf, written, "--scheme", "1x16",
                                             "--codes", "random", "--dtype", "bfloat16"])
            XCTAssertEqual(status, 0, err)
            let writtenFile = try SafeTensorsFile(path: written + "/model.safetensors")
            XCTAssertEqual(writtenFile.tensor("model.layers.1.mlp.down_proj.codes")?.dtype, .i16, "1x16 codes as int16")
            XCTAssertTrue(try writtenFile.integers("model.layers.1.mlp.down_proj.codes", as: Int16.self).contains { $0 < 0 },
                          "random codes >= 2^15, stored negative by aqlm's pack_int_data")
            let report = try crossCheck(py, written, text: text)
            XCTAssertEqual(report["quantized_linears"] as? Int, 14)
        }
    }
}
