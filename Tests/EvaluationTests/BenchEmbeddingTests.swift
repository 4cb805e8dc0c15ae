import Checkpoint
import Evaluation
import Foundation
import Kernels
import Llama
import XCTest

/// LlamaModel's embedding storage on the tiny random model (tied and untied heads): which
/// operator the head is, what `weightBytes` counts, and that reduced-precision tables run the
/// same model as their dequantized Float32 values.
final class BenchEmbeddingTests: XCTestCase {
    private func logits(_ model: LlamaModel, _ tokens: [Int]) -> [Float] {
        let state = model.makeState(maxPositions: tokens.count, maxLogitRows: tokens.count)
        model.forward(tokens, state: state, logits: .all)
        return (0..<tokens.count).flatMap { Array(state.logits(row: $0)) }
    }

    func testDenseModelKeepsOneFloat32TableForEmbeddingAndTiedHead() throws {
        let weights = TinyModel.weights(seed: 51)
        let model = try LlamaModel(weights: weights)
        XCTAssertEqual(model.embeddingTable.precision, .f32)
        XCTAssertTrue(model.head is DenseLinear, "a Float32 tied head stays the dense sgemv/sgemm operator")
        XCTAssertTrue(model.headSharesEmbedding)
        let c = weights.config
        let blockBytes = model.layers.reduce(0) { sum, b in sum + LlamaLinear.allCases.reduce(0) { $0 + b[$1].weightBytes } }
        let normBytes = 4 * (c.numLayers * 2 * c.hiddenSize + c.hiddenSize)
        XCTAssertEqual(model.weightBytes, blockBytes + normBytes + 4 * c.vocabSize * c.hiddenSize)
    }

    func testReducedTablesRunTheModelOfTheirDequantizedValues() throws {
        let model = try LlamaModel(weights: TinyModel.weights(seed: 52))
        let tokens = [5, 70, 200, 3, 9, 77, 120, 31]
        for precision in [EmbeddingPrecision.f16, .q8] {
            let reduced = try model.withEmbedding(precision)
            XCTAssertTrue(reduced.head is EmbeddingTable && reduced.headSharesEmbedding, "\(precision)")
            let c = model.config
            XCTAssertEqual(model.weightBytes - reduced.weightBytes,
                           c.vocabSize * c.hiddenSize * 4 - reduced.embeddingTable.weightBytes, "\(precision)")
            // The same values in Float32: the reduced model must compute exactly that model.
            var widened = reduced
            widened.embeddingTable = EmbeddingTable(float32: reduced.embeddingTable.dequantized(), rows: c.vocabSize,
                                                    width: c.hiddenSize)
            widened.head = widened.embeddingTable.headLinear
            let a = logits(reduced, tokens), b = logits(widened, tokens)
            let scale = b.map(abs).max()!
            XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()!, 1e-5 * scale, "\(precision)")
            // And not the original model exactly (the reduction is real), though close to it.
            let original = logits(model, tokens)
            XCTAssertNotEqual(a, original, "\(precision)")
            XCTAssertLessThan(zip(a, original).map { abs($0 - $1) }.max()!, 0.05 * scale, "\(precision)")
            // Back to Float32: a dense head over the widened table again.
            let back = try reduced.withEmbedding(.f32)
            XCTAssertTrue(back.head is DenseLinear && back.headSharesEmbedding)
            XCTAssertEqual(back.embeddingTable.dequantized(), reduced.embeddingTable.dequantized())
        }
    }

    func testUntiedHeadIsConvertedOnItsOwn() throws {
        var config = TinyModel.config
        config.tiedEmbeddings = false
        let model = try LlamaModel(weights: TinyModel.weights(config: config, seed: 53))
        XCTAssertFalse(model.headSharesEmbedding)
        let reduced = try model.withEmbedding(.q8)
        let head = try XCTUnwrap(reduced.head as? EmbeddingTable)
        XCTAssertEqual(head.precision, .q8)
        XCTAssertFalse(reduced.headSharesEmbedding)
        XCTAssertEqual(reduced.weightBytes, model.weightBytes - 2 * (4 * config.vocabSize * config.hiddenSize - head.weightBytes))
    }
}
