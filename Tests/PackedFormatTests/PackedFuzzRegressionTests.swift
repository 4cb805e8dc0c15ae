import XCTest
import Foundation
import Checkpoint
import PackedFormat
import Quantizer

/// Packed checkpoints with one file corrupted as the fuzzer (tools/fuzz.sh, FuzzPackedCheckpoint)
/// corrupts them: each must be refused quickly, with one line naming the file and the field.
final class PackedFuzzRegressionTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "packed-fuzz-tests-\(UUID().uuidString)"
        let model = try PackedCheckpointTests.packedTinyModel(scheme: .preset1x8)
        try PackedCheckpoint.write(model, to: directory)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func editConfig(_ key: String, _ value: JSONValue) throws {
        let path = directory + "/config.json"
        try writeJSONFile(try readJSONFile(path).setting(key, value), to: path)
    }

    /// Both readers: codes into memory, and straight into the kernels.
    func assertBothReadersRefuse(naming parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        for (name, read) in [("read", { _ = try PackedCheckpoint.read(directory: self.directory) }),
                             ("openModel", { _ = try openModel(self.directory) })] as [(String, () throws -> Void)] {
            XCTAssertThrowsError(try read(), name, file: file, line: line) { error in
                for part in parts { XCTAssertTrue("\(error)".contains(part), "\(name): \(error)", file: file, line: line) }
            }
        }
    }

    /// A vocab_size of 2^24 had both readers make 16 million padding tokens (tens of seconds,
    /// 0.7 GB) before any tensor shape was compared: the embedding is now checked first.
    func testHugeVocabularyIsRefusedBeforePadding() throws {
        try editConfig("vocab_size", .int(1 << 24))
        let start = Date()
        assertBothReadersRefuse(naming: ["model.safetensors", "model.embed_tokens.weight", "\(1 << 24)"])
        XCTAssertLessThan(Date().timeIntervalSince(start), 2)
    }

    /// `inspect` counted a linear's weights as d_out · d_in/g · in_group_size and its bits as
    /// codes · nbits_per_codebook straight from quantization_config: huge values overflowed (a trap).
    func testHugeQuantizationFieldsAreRefusedByInspect() throws {
        let original = try readJSONFile(directory + "/config.json")
        for key in ["in_group_size", "nbits_per_codebook", "num_codebooks", "out_group_size"] {
            let q = original["quantization_config"]!.setting(key, .number("4611686018427387904"))
            try writeJSONFile(original.setting("quantization_config", q), to: directory + "/config.json")
            XCTAssertThrowsError(try summarizeCheckpoint(directory), key) { error in
                XCTAssertTrue("\(error)".contains("config.json: quantization_config.\(key)"), "\(error)")
            }
            XCTAssertThrowsError(try openModel(directory), key)
        }
    }

    /// A tokenizer with more tokens than the embedding has rows was accepted (ids past the
    /// embedding at run time); the Hugging Face reader already refused it.
    func testTokenizerLargerThanVocabularyIsRefused() throws {
        var spec = try HuggingFaceTokenizer.read(directory: directory)
        spec.tokens.append("extra")
        spec.tokenTypes.append(1)
        try HuggingFaceTokenizer.write(spec, toDirectory: directory)
        assertBothReadersRefuse(naming: ["tokenizer.json", "more than config.json's vocab_size"])
    }
}
