import Checkpoint
import Foundation
import Kernels
import Llama
import PackedFormat
import Quantizer
import XCTest

/// `openModel` on a packed checkpoint reads it one tensor at a time straight into the kernels'
/// layout (`PackedCheckpoint.readLlamaModel`): it must run exactly the model that reading the
/// whole checkpoint (`PackedCheckpoint.read`) and building it (`llamaModel`) runs, and name what
/// is wrong with a damaged file. On the tiny random model with random 2x8 codes.
final class BenchPackedLoadingTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("aqlm-bench-loading-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Every block linear as seeded random 2x8 codes (codebooks and scales at fp16, as stored).
    private func writeTinyCheckpoint(to path: String) throws -> PackedModel {
        let weights = TinyModel.weights(seed: 71)
        var random = SeededRandom(seed: 72)
        var linears: [String: AdditiveCode] = [:]
        var dense = weights.tensors
        for l in 0..<weights.config.numLayers {
            for name in LlamaConfig.linearNames(layer: l) {
                let shape = weights[name + ".weight"].shape
                let codes = (0..<(shape[0] * shape[1] / 8 * 2)).map { _ in UInt16(random.next() % 256) }
                let codebooks = (0..<(2 * 256 * 8)).map { _ in random.nextGaussian() * 0.25 }
                let scales = (0..<shape[0]).map { _ in 0.5 + random.nextFloat() }
                linears[name] = AdditiveCode(scheme: .preset2x8, dOut: shape[0], dIn: shape[1], codes: codes,
                                             codebooks: codebooks, scales: scales).roundedToFloat16()
                dense[name + ".weight"] = nil
            }
        }
        let model = PackedModel(config: weights.config, tokenizer: weights.tokenizer, scheme: .preset2x8, linears: linears,
                                dense: dense.mapValues { $0.roundedForPacking() })
        try PackedCheckpoint.write(model, to: path)
        return model
    }

    /// Logits of a prefill of `tokens` (all rows) and then of three single-token steps.
    private func logits(_ model: LlamaModel, _ tokens: [Int]) -> [Float] {
        let state = model.makeState(maxPositions: tokens.count + 3, maxLogitRows: tokens.count)
        model.forward(tokens, state: state, logits: .all)
        var out = (0..<tokens.count).flatMap { Array(state.logits(row: $0)) }
        for token in [7, 99, 200] {
            model.forward([token], state: state, logits: .last)
            out += Array(state.logits(row: 0))
        }
        return out
    }

    func testStreamedLoadRunsTheSameModelAsAWholeRead() throws {
        let path = directory + "/packed"
        let written = try writeTinyCheckpoint(to: path)
        let tokens = [3, 17, 250, 41, 9, 128, 66, 5]
        let whole = try PackedCheckpoint.read(directory: path)
        for precision in [EmbeddingPrecision.q8, .f16, .f32] {
            let opened = try openModel(path, embedding: precision)
            XCTAssertEqual(opened.scheme, .preset2x8)
            XCTAssertTrue(opened.model.layers[1].down is AQLMLinear)
            XCTAssertEqual(opened.model.embeddingTable.precision, precision)
            XCTAssertEqual(logits(opened.model, tokens), logits(try whole.llamaModel(embedding: precision), tokens),
                           "\(precision)")
        }
        XCTAssertEqual(try openModel(path).model.embeddingTable.precision, .q8, "Q8_0 is the packed default")
        XCTAssertEqual(try XCTUnwrap(try openModel(path).packed).linears, written.linears)
        XCTAssertNil(try openModel(path, dequantize: true).model.layers[0].q as? AQLMLinear)
    }

    /// The same checkpoint without one linear's codes: the error names the file and the tensor.
    func testMissingCodesAreNamed() throws {
        let path = directory + "/packed"
        _ = try writeTinyCheckpoint(to: path)
        let damaged = directory + "/damaged"
        try FileManager.default.createDirectory(atPath: damaged, withIntermediateDirectories: true)
        for file in try FileManager.default.contentsOfDirectory(atPath: path) where file != SafeTensorsCheckpoint.singleFileName {
            try FileManager.default.copyItem(atPath: path + "/" + file, toPath: damaged + "/" + file)
        }
        let source = try SafeTensorsFile(path: path + "/" + SafeTensorsCheckpoint.singleFileName)
        var writer = SafeTensorsWriter()
        let missing = "model.layers.1.mlp.up_proj.codes"
        for info in source.tensors where info.name != missing {
            try writer.add(info.name, dtype: info.dtype, shape: info.shape, bytes: Array(source.rawBytes(info)))
        }
        try writer.write(to: damaged + "/" + SafeTensorsCheckpoint.singleFileName)
        XCTAssertThrowsError(try openModel(damaged)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains(missing) && message.contains(damaged), message)
            XCTAssertFalse(message.contains("\n"), message)
        }
    }
}
