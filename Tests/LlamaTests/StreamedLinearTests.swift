import Foundation
import Checkpoint
import Kernels
import Llama
import XCTest

/// Block linears streamed from a checkpoint's map (`DenseLinearStorage.streamed`) against the
/// same checkpoint converted to Float32 up front: the logits must be the same bits, prefill and
/// decode, whatever the stored type and the row order.
final class StreamedLinearTests: XCTestCase {
    /// Wide enough that conversions run in several row chunks and the products in panels.
    static let wide = LlamaConfig(
        architecture: "llama", vocabSize: TinyModel.config.vocabSize, hiddenSize: 256, intermediateSize: 1024,
        numLayers: 2, numHeads: 4, numKVHeads: 2, contextLength: 64, ropeTheta: 10000,
        rmsNormEps: 1e-5, tiedEmbeddings: true)
    /// qwen2-style: biases, untied head, rows stored as is (no RoPE row permutation).
    static let biased = LlamaConfig(
        architecture: "qwen2", vocabSize: TinyModel.config.vocabSize, hiddenSize: 48, intermediateSize: 80,
        numLayers: 2, numHeads: 4, numKVHeads: 2, headDim: 12, contextLength: 64, ropeTheta: 1_000_000,
        rmsNormEps: 1e-6, tiedEmbeddings: false, attentionBias: true)

    let tokens = [5, 101, 266, 32, 7, 7, 200, 13, 0, 99, 150, 31, 64, 250, 3, 18, 77]
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "streamed-linear-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The checkpoint written as GGUF with `type` matrices and read back (tensors left in the map).
    func mappedWeights(_ config: LlamaConfig, _ type: GGMLType, seed: UInt64) throws -> ModelWeights {
        let path = directory + "/\(type.name)-\(seed).gguf"
        try TinyModel.writeGGUF(to: path, seed: seed, weightType: type, config: config)
        return try GGUFFile(path: path).modelWeights()
    }

    /// Every row of a prefill's logits, then the logits of single-token decode steps.
    func logits(_ model: LlamaModel) -> [[Float]] {
        let prefill = model.makeState(maxPositions: tokens.count, maxLogitRows: tokens.count)
        let rows = model.forward(Array(tokens.prefix(12)), state: prefill, logits: .all)
        var out = rows.indices.map { Array(prefill.logits(row: $0)) }
        for token in tokens.dropFirst(12) {
            model.forward([token], state: prefill, logits: .last)
            out.append(Array(prefill.logits(row: 0)))
        }
        return out
    }

    func testStreamedLogitsAreTheFloat32ModelsBits() throws {
        let saved = Threads.count
        defer { Threads.set(saved) }
        for threads in [1, 2] {
            Threads.set(threads)
            for (config, type, seed) in [(Self.wide, GGMLType.q8_0, UInt64(1)), (Self.wide, .bf16, 2), (Self.biased, .f16, 3)] {
                let weights = try mappedWeights(config, type, seed: seed)
                XCTAssertTrue(weights["model.layers.0.mlp.up_proj.weight"].isMapped)
                let float32 = try LlamaModel(weights: weights, denseLinears: .float32)
                let streamed = try LlamaModel(weights: weights, denseLinears: .streamed)
                XCTAssertTrue(streamed.layers[1].down is StreamedLinear)
                let a = logits(float32), b = logits(streamed)
                XCTAssertEqual(a.count, tokens.count)
                XCTAssertTrue(a == b, "\(type.name) \(config.architecture), \(threads) threads: logits differ")
                // Run twice: the shared scratch holds whichever linear ran last, never stale values.
                XCTAssertTrue(logits(streamed) == b)
            }
        }
    }

    func testBudgetChoosesFloat32UntilTheLinearsDoNotFit() throws {
        let weights = try mappedWeights(Self.biased, .f16, seed: 4)
        let c = Self.biased
        let qDim = c.numHeads * c.headDim, kvDim = c.numKVHeads * c.headDim
        let perLayer = qDim * c.hiddenSize + 2 * kvDim * c.hiddenSize + c.hiddenSize * qDim + 3 * c.hiddenSize * c.intermediateSize
        let float32Bytes = 4 * c.numLayers * perLayer
        XCTAssertEqual(LlamaModel.blockLinearElements(c) * 4, float32Bytes)

        let fits = try LlamaModel(weights: weights, denseMemoryBudget: float32Bytes).denseLinears
        XCTAssertEqual(fits, DenseLinearSummary(storage: .float32, float32Bytes: float32Bytes))
        let over = try LlamaModel(weights: weights, denseMemoryBudget: float32Bytes - 1).denseLinears
        // Streamed: one scratch of the largest linear (gate/up/down, 80 × 48) for all of them.
        XCTAssertEqual(over, DenseLinearSummary(storage: .streamed, float32Bytes: 4 * c.intermediateSize * c.hiddenSize))
        XCTAssertEqual(try LlamaModel(weights: weights, denseMemoryBudget: 0).denseLinears.storage, .streamed)
        XCTAssertGreaterThan(DenseLinearStorage.defaultBudgetBytes, 0)
    }
}
