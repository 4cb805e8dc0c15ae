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
}
