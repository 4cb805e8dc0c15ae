import XCTest
import Foundation
import Checkpoint

/// Reads the real default model (tools/setup.sh puts it in the cache).
final class DefaultModelTests: XCTestCase {
    func testReadsSmolLM2() throws {
        let path = ModelPaths.defaultModel
        try XCTSkipUnless(FileManager.default.fileExists(atPath: path), "run tools/setup.sh first")
        let g = try GGUFFile(path: path)
        XCTAssertEqual(g.version, 3)
        XCTAssertEqual(g.tensors.count, 272)
        let c = try g.llamaConfig()
        XCTAssertEqual(c.numLayers, 30)
        XCTAssertEqual(c.hiddenSize, 576)
        XCTAssertEqual(c.numKVHeads, 3)
        XCTAssertTrue(c.tiedEmbeddings)
        let w = try g.modelWeights()
        XCTAssertEqual(w.tensors.count, c.expectedShapes.count)
        let q = w["model.layers.0.self_attn.q_proj.weight"]
        XCTAssertEqual(q.shape, [576, 576])
        XCTAssertTrue(q.values.allSatisfy { $0.isFinite })
    }

    /// Inspect figures for the real model: counts from the architecture, and 5.00 bits per
    /// weight over the 210 block linears (Q4_1: 20 bytes per 32 weights), as in the reference README.
    func testSummaryOfSmolLM2() throws {
        let path = ModelPaths.defaultModel
        try XCTSkipUnless(FileManager.default.fileExists(atPath: path), "run tools/setup.sh first")
        let s = try GGUFFile(path: path).summary()
        let c = try XCTUnwrap(s.config)
        let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim
        let linears = c.numLayers * (2 * c.hiddenSize * q + 2 * c.hiddenSize * kv + 3 * c.hiddenSize * c.intermediateSize)
        XCTAssertEqual(s.parameters.blockLinears, linears)
        XCTAssertEqual(s.parameters.embeddings, c.vocabSize * c.hiddenSize)
        XCTAssertEqual(s.parameters.total, linears + c.vocabSize * c.hiddenSize + (2 * c.numLayers + 1) * c.hiddenSize)
        XCTAssertEqual(s.tensors.filter { $0.role == .blockLinear }.count, 210)
        XCTAssertEqual(s.blockLinearBitsPerWeight, 5.0)
        XCTAssertEqual(s.tensors.first { $0.name == "token_embd.weight" }?.type, "Q8_0")
    }
}
