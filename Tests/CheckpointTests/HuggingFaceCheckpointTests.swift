import XCTest
import Foundation
import Checkpoint

extension TemporaryDirectoryTestCase {
    /// A fresh empty subdirectory, for tests that write several model directories.
    func newDirectory() throws -> String {
        let dir = path(UUID().uuidString)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        return dir
    }
}

/// TinyModel's weights with `architecture` (qwen2 gets its q/k/v biases) and tied or separate output head.
func tinyWeights(architecture: String = "llama", tied: Bool = true, seed: UInt64 = 1) -> ModelWeights {
    var config = TinyModel.config
    config.architecture = architecture
    config.tiedEmbeddings = tied
    config.attentionBias = architecture == "qwen2"
    return TinyModel.weights(config: config, seed: seed)
}

final class HuggingFaceCheckpointTests: TemporaryDirectoryTestCase {
    func path(_ dir: String, _ name: String) -> String { (dir as NSString).appendingPathComponent(name) }

    func assertSameWeights(_ a: ModelWeights, _ b: ModelWeights, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.config, b.config, file: file, line: line)
        XCTAssertEqual(a.tokenizer, b.tokenizer, file: file, line: line)
        XCTAssertEqual(Set(a.tensors.keys), Set(b.tensors.keys), file: file, line: line)
        for (name, t) in a.tensors {
            XCTAssertEqual(b.tensors[name]?.shape, t.shape, name, file: file, line: line)
            XCTAssertEqual(b.tensors[name]?.values.map(\.bitPattern), t.values.map(\.bitPattern), name, file: file, line: line)
        }
    }

    func testWriteThenLoadIsExact() throws {
        for (arch, tied) in [("llama", false), ("llama", true), ("mistral", false), ("qwen2", true)] {
            let dir = try newDirectory()
            let weights = tinyWeights(architecture: arch, tied: tied)
            try HuggingFaceCheckpoint.write(weights, toDirectory: dir)
            XCTAssertTrue(HuggingFaceCheckpoint.isCheckpoint(directory: dir))
            let back = try loadCheckpoint(dir)
            XCTAssertEqual(back.source, dir)
            assertSameWeights(weights, back)
        }
    }

    func testHalfPrecisionStorage() throws {
        let weights = tinyWeights()
        for dtype in [SafeTensorsDType.f16, .bf16] {
            let dir = try newDirectory()
            try HuggingFaceCheckpoint.write(weights, toDirectory: dir, dtype: dtype)
            let back = try loadCheckpoint(dir)
            XCTAssertEqual(try SafeTensorsFile(path: path(dir, "model.safetensors")).tensor("model.norm.weight")?.dtype, dtype)
            let round: (Float) -> Float = dtype == .f16 ? { halfToFloat(floatToHalf($0)) } : { bf16ToFloat(floatToBF16($0)) }
            for (name, t) in weights.tensors {
                XCTAssertEqual(back[name].values, t.values.map(round), name)
            }
        }
    }

    func testShardedDirectoryAndIgnoredExtras() throws {
        let weights = tinyWeights(tied: true)
        let dir = try newDirectory()
        try HuggingFaceCheckpoint.write(weights, toDirectory: dir)
        // Re-store the tensors in two shards, plus an lm_head that a tied model must ignore.
        try FileManager.default.removeItem(atPath: path(dir, "model.safetensors"))
        var shards = [SafeTensorsWriter(), SafeTensorsWriter()]
        var map: [(String, JSONValue)] = []
        for (i, (name, shape)) in weights.config.expectedShapes.enumerated() {
            try shards[i % 2].add(name, shape: shape, floats: weights[name].values)
            map.append((name, .string("model-0000\(i % 2 + 1)-of-00002.safetensors")))
        }
        try shards[0].add("lm_head.weight", shape: [1], floats: [0])
        map.append(("lm_head.weight", .string("model-00001-of-00002.safetensors")))
        try shards[0].write(to: path(dir, "model-00001-of-00002.safetensors"))
        try shards[1].write(to: path(dir, "model-00002-of-00002.safetensors"))
        try writeJSONFile(.object([("metadata", .object([])), ("weight_map", .object(map))]), to: path(dir, "model.safetensors.index.json"))
        assertSameWeights(weights, try loadCheckpoint(dir))
    }

    func testMissingAndMisshapenTensors() throws {
        let weights = tinyWeights()
        let dir = try newDirectory()
        try HuggingFaceCheckpoint.write(weights, toDirectory: dir)
        let file = path(dir, "model.safetensors")

        var w = SafeTensorsWriter()
        for (name, shape) in weights.config.expectedShapes where name != "model.layers.1.mlp.up_proj.weight" {
            try w.add(name, shape: shape, floats: weights[name].values)
        }
        try w.write(to: file)
        XCTAssertThrowsError(try loadCheckpoint(dir)) {
            XCTAssertEqual($0 as? CheckpointError, .missingTensor(file, tensor: "model.layers.1.mlp.up_proj.weight"))
        }

        try w.add("model.layers.1.mlp.up_proj.weight", shape: [64, 128], floats: weights["model.layers.1.mlp.up_proj.weight"].values)
        try w.write(to: file)
        XCTAssertThrowsError(try loadCheckpoint(dir)) {
            XCTAssertEqual($0 as? CheckpointError, .shapeMismatch(file, tensor: "model.layers.1.mlp.up_proj.weight", expected: [128, 64], found: [64, 128]))
        }
    }

    func testTokenizerLargerThanVocabulary() throws {
        var weights = tinyWeights()
        let dir = try newDirectory()
        try HuggingFaceCheckpoint.write(weights, toDirectory: dir)
        weights.tokenizer.tokens.append("extra")
        weights.tokenizer.tokenTypes.append(1)
        try HuggingFaceTokenizer.write(weights.tokenizer, toDirectory: dir)
        XCTAssertThrowsError(try loadCheckpoint(dir)) { error in
            XCTAssertTrue("\(error)".contains("268 tokens, more than config.json's vocab_size 267"), "\(error)")
        }
    }

    func testSmallerTokenizerIsPaddedLikeLlamaCpp() throws {
        // The last token becomes llama.cpp's padding: not written, restored from config.json's vocab_size.
        var weights = tinyWeights()
        let last = weights.tokenizer.tokens.count - 1
        weights.tokenizer.tokens[last] = "[PAD\(last)]"
        weights.tokenizer.tokenTypes[last] = 5
        (weights.tokenizer.bosId, weights.tokenizer.eosId) = (nil, nil)
        let dir = try newDirectory()
        try HuggingFaceCheckpoint.write(weights, toDirectory: dir)
        let tokenizer = try readJSONFile(path(dir, "tokenizer.json"))
        XCTAssertEqual(tokenizer["model"]?["vocab"]?.members?.count, last)
        XCTAssertEqual(try loadCheckpoint(dir).tokenizer, weights.tokenizer)
    }

    func testPackedAQLMCheckpointIsReferredToPackedFormat() throws {
        let dir = try newDirectory()
        try HuggingFaceCheckpoint.write(tinyWeights(), toDirectory: dir,
                                        extraConfig: [("quantization_config", .object([("quant_method", .string("aqlm"))]))])
        XCTAssertThrowsError(try loadCheckpoint(dir)) {
            XCTAssertEqual("\($0)", "\(dir): packed AQLM checkpoint: open it with PackedFormat")
        }
        try HuggingFaceCheckpoint.write(tinyWeights(), toDirectory: dir,
                                        extraConfig: [("quantization_config", .object([("quant_method", .string("gptq"))]))])
        XCTAssertThrowsError(try loadCheckpoint(dir)) { XCTAssertTrue("\($0)".contains("'gptq' is not supported")) }
    }

    func testLoaderDispatchAndErrors() throws {
        let dir = try newDirectory()
        let missing = path(dir, "nothing-here")
        XCTAssertThrowsError(try loadCheckpoint(missing)) { XCTAssertEqual($0 as? CheckpointError, .missingFile(missing)) }
        XCTAssertThrowsError(try loadCheckpoint(dir)) { XCTAssertEqual($0 as? CheckpointError, .missingFile(path(dir, "config.json"))) }

        let text = path(dir, "notes.txt")
        try "hello world".write(toFile: text, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try loadCheckpoint(text)) { error in
            XCTAssertEqual("\(error)", "\(text): not a recognised checkpoint (magic 'hell', expected a GGUF file or a Hugging Face model directory)")
        }
        try HuggingFaceCheckpoint.write(tinyWeights(), toDirectory: dir)
        let st = path(dir, "model.safetensors")
        XCTAssertThrowsError(try loadCheckpoint(st)) { XCTAssertTrue("\($0)".hasSuffix("pass the Hugging Face model directory that holds it)")) }

        // A file with the GGUF magic goes to the GGUF reader, whose own error names the file.
        let fake = path(dir, "fake.gguf")
        try Data("GGUF".utf8 + [9, 0, 0, 0]).write(to: URL(fileURLWithPath: fake))
        XCTAssertThrowsError(try loadCheckpoint(fake)) { XCTAssertEqual($0 as? CheckpointError, .unsupportedVersion(fake, 9)) }
    }

    func testDefaultModelAliasLoadsTheGGUF() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: ModelPaths.defaultModel), "run tools/setup.sh first")
        let w = try loadCheckpoint("smollm2-135m")
        XCTAssertEqual(w.source, ModelPaths.defaultModel)
        XCTAssertEqual(w.config.numLayers, 30)
        XCTAssertEqual(w.tokenizer.preTokenizer, "smollm")
    }
}
