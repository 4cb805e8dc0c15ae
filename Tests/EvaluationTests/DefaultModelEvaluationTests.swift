import Checkpoint
import Evaluation
import Foundation
import Kernels
import Llama
import XCTest

/// The real SmolLM2-135M against llama.cpp's reference figures (../shared/data/reference).
/// Skipped when the model (tools/setup.sh) or the shared data is absent.
final class DefaultModelEvaluationTests: XCTestCase {
    static let idsPath = "../shared/data/reference/wiki.test.raw.smollm2.ids"
    nonisolated(unsafe) static var loaded: LlamaModel?

    func defaultModel() throws -> LlamaModel {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: ModelPaths.defaultModel), "run tools/setup.sh first")
        if let model = Self.loaded { return model }
        BLASCore.applyRequestedCore()
        let model = try LlamaModel(weights: GGUFFile(path: ModelPaths.defaultModel).modelWeights())
        Self.loaded = model
        return model
    }

    /// The first 8 chunks (ctx 512, llama protocol) of wiki.test.raw, from llama.cpp's own ids.
    /// The band: our 100-chunk run gives 22.3681 against llama.cpp f16's 22.3697 (-0.007 %),
    /// and its running estimate after chunk 8 is 23.6172; this test allows ±0.1 % around that
    /// (23.593 ... 23.641), several times the run-to-run spread of Float32 summation order
    /// and far below what a wrong RoPE, norm or scoring index moves it (whole percents).
    func testFirstEightChunksPerplexity() throws {
        let model = try defaultModel()
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Self.idsPath), "shared reference ids absent")
        let tokens = Array(try readTokenIds(Self.idsPath)[0..<(8 * 512)])
        let result = try evaluatePerplexity(model: model, tokens: tokens, bos: nil, textName: Self.idsPath,
                                            options: PerplexityOptions(context: 512, maxChunks: 8, method: .llama))
        XCTAssertEqual(result.scoredTokens, 8 * 255)
        XCTAssertEqual(result.ppl, 23.6172, accuracy: 23.6172 * 0.001)
    }

    /// llama.cpp's f16 greedy continuation of the story prompt (llama-simple, no BOS).
    func testGreedyContinuationMatchesLlamaCpp() throws {
        let model = try defaultModel()
        let prompt = [6403, 1980, 253, 655, 28, 665, 436, 253, 1838, 8180, 3365]
        let reference = [20391, 617, 5732, 288, 1238, 281, 260, 2388, 30, 2306, 736]
        let result = try generate(model: model, prompt: prompt, options: GenerationOptions(maxNewTokens: 11))
        XCTAssertEqual(result.ids, reference)
    }
}
