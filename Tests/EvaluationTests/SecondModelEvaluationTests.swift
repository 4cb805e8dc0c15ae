import Checkpoint
import Evaluation
import Foundation
import Kernels
import Llama
import XCTest

/// Qwen2.5-Coder-0.5B-Instruct (alias qwen2.5-coder-0.5b: untied Q8_0 head, 151,936-token
/// vocabulary, q/k/v biases) against llama.cpp's F16 figures (../shared/data/reference, Qwen section).
/// Skipped when the model (tools/setup.sh) or the shared data is absent.
final class SecondModelEvaluationTests: XCTestCase {
    static let idsPath = "../shared/data/reference/wiki.test.raw.qwen2.5-coder-0.5b.ids"

    /// The first 4 chunks (ctx 512, llama protocol) of wiki.test.raw from llama.cpp's own ids.
    /// The band is llama.cpp F16's running value after chunk 4, 31.5044, ±0.1 % (31.473 ... 31.536):
    /// well above Float32-versus-F16 summation differences (SmolLM2's 100-chunk figure is off by
    /// 0.007 %), far below what a wrong bias, RoPE base or head moves it (whole percents).
    /// Four chunks rather than two because 4 is the running value llama.cpp's log gives.
    func testFirstFourChunksPerplexityMatchesLlamaCppF16() throws {
        let path = ModelPaths.secondModel
        try XCTSkipUnless(FileManager.default.fileExists(atPath: path), "run tools/setup.sh first")
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Self.idsPath), "shared reference ids absent")
        BLASCore.applyRequestedCore()
        let model = try LlamaModel(weights: GGUFFile(path: path).modelWeights())
        XCTAssertFalse(model.headSharesEmbedding, "Qwen2.5's head is untied")
        let tokens = Array(try readTokenIds(Self.idsPath)[0..<(4 * 512)])
        let result = try evaluatePerplexity(model: model, tokens: tokens, bos: nil, textName: Self.idsPath,
                                            options: PerplexityOptions(context: 512, maxChunks: 4, method: .llama))
        XCTAssertEqual(result.scoredTokens, 4 * 255)
        XCTAssertEqual(result.ppl, 31.5044, accuracy: 31.5044 * 0.001)
    }
}
