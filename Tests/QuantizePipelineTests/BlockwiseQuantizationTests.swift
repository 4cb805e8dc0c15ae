import XCTest
import Foundation
import Calibration
import Checkpoint
import Kernels
import PackedFormat
import Quantizer
import QuantizePipeline
import Llama
import Tokenizer

/// The whole-model pipeline on the tiny random Llama (2 blocks, hidden 64) with a small text.
final class BlockwiseQuantizationTests: XCTestCase {
    var directory = ""
    var modelPath: String { directory + "/tiny.gguf" }
    var textPath: String { directory + "/calibration.txt" }

    override func setUpWithError() throws {
        // The kernels `aqlm` itself runs with (BLASCore replaces OpenBLAS's generic fallback).
        BLASCore.applyRequestedCore()
        directory = NSTemporaryDirectory() + "pipeline-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try TinyModel.writeGGUF(to: modelPath, seed: 3)
        let sentence = "The weather in the north is cold and the rain falls on the green hills every morning. "
        try String(repeating: sentence, count: 40).write(toFile: textPath, atomically: true, encoding: .utf8)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func options(_ scheme: String) throws -> QuantizeOptions {
        var o = QuantizeOptions.preset(.fast)
        o.choice = try QuantizationChoice(parsing: scheme)
        o.calibration = textPath
        o.samples = 6
        o.sequenceLength = 32
        o.aqlm.maxIterations = 2
        return o
    }

    func testQuantizesEveryBlockAndWritesAReadableCheckpoint() throws {
        let out = directory + "/out"
        let report = try BlockwiseQuantization(modelPath: modelPath, outputPath: out, options: try options("1x8")).run()
        XCTAssertEqual(report.blocks.map(\.index), [0, 1])
        XCTAssertEqual(report.blocks.flatMap(\.layers).count, 14)
        for block in report.blocks {
            XCTAssertTrue(block.outputError.isFinite && block.outputError > 0 && block.outputError < 1, "\(block.outputError)")
        }
        for layer in report.blocks.flatMap(\.layers) {
            // "after" is measured on the stored fp16 codebooks and scales, so it may exceed a
            // near-zero "before" (tiny layers with more codes than groups) by fp16 rounding only.
            XCTAssertLessThanOrEqual(layer.relativeErrorAfter, layer.relativeErrorBefore * 1.01 + 1e-4, layer.name)
            XCTAssertEqual(layer.usageEntropyBits.count, 1)
        }
        // Honest accounting from first principles: 8-bit code per group of 8 = 1 bit per weight,
        // plus one fp16 codebook of 256×8 and one fp16 scale per row, per layer.
        let shapes = [[64, 64], [32, 64], [32, 64], [64, 64], [128, 64], [128, 64], [64, 128]]
        let params = 2 * shapes.reduce(0) { $0 + $1[0] * $1[1] }
        let bits = 2 * shapes.reduce(0) { $0 + $1[0] * $1[1] * 1 + 256 * 8 * 16 + $1[0] * 16 }
        XCTAssertEqual(report.bitsPerWeight, Double(bits) / Double(params), accuracy: 1e-12)
        XCTAssertEqual(report.quantizedParameters, params)

        let packed = try PackedCheckpoint.read(directory: out)
        XCTAssertEqual(packed.linears.count, 14)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/report.json"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".work"), "work directory left behind")
        let json = try readJSONFile(out + "/report.json")
        XCTAssertEqual(json["blocks"]?.array?.count, 2)
        XCTAssertNotNil(json["blocks"]?.array?.first?["output_error"]?.double)
        // file_bytes states the checkpoint's own files (everything but the report itself).
        let files = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0 != "report.json" }
        let bytes = try files.reduce(0) { sum, name in
            sum + ((try FileManager.default.attributesOfItem(atPath: out + "/" + name)[.size] as? NSNumber)?.intValue ?? 0)
        }
        XCTAssertGreaterThan(bytes, 0)
        XCTAssertEqual(json["file_bytes"]?.int, bytes)
        XCTAssertEqual(report.fileBytes, bytes)
    }

    func testSameSeedGivesIdenticalFiles() throws {
        let a = directory + "/a", b = directory + "/b"
        _ = try BlockwiseQuantization(modelPath: modelPath, outputPath: a, options: try options("2x4")).run()
        _ = try BlockwiseQuantization(modelPath: modelPath, outputPath: b, options: try options("2x4")).run()
        XCTAssertEqual(FileManager.default.contents(atPath: a + "/model.safetensors"),
                       FileManager.default.contents(atPath: b + "/model.safetensors"))
    }

    /// Calibration activations kept in files of the work directory (a limit of 0 bytes) give the
    /// same files as in memory, with fine-tuning on full-precision-chain targets (all three
    /// sets, the chain a copy of the inputs that then diverges).
    func testActivationsInFilesGiveTheSameFiles() throws {
        var inMemory = try options("2x4")
        inMemory.finetune.epochs = 2
        inMemory.finetune.validationSamples = 1
        inMemory.finetuneTargets = .fullPrecisionChain
        var inFiles = inMemory
        inFiles.activationMemoryLimit = 0
        let a = directory + "/memory", b = directory + "/files"
        var lines: [String] = []
        var first = BlockwiseQuantization(modelPath: modelPath, outputPath: a, options: inMemory)
        first.log = { lines.append($0) }
        let reportA = try first.run()
        XCTAssertFalse(lines.contains { $0.contains("kept in files") })
        var second = BlockwiseQuantization(modelPath: modelPath, outputPath: b, options: inFiles)
        second.log = { lines.append($0) }
        let reportB = try second.run()
        XCTAssertTrue(lines.contains { $0.contains("kept in files") })
        XCTAssertNotNil(reportA.blocks[1].outputErrorFinetuned)
        XCTAssertEqual(reportA.blocks.map(\.outputErrorFinetuned), reportB.blocks.map(\.outputErrorFinetuned))
        XCTAssertEqual(FileManager.default.contents(atPath: a + "/model.safetensors"),
                       FileManager.default.contents(atPath: b + "/model.safetensors"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: b + ".work"))
    }

    func testBaselinesRun() throws {
        for scheme in ["rtn2", "rvq1x8", "pq2x4"] {
            let out = directory + "/" + scheme
            let report = try BlockwiseQuantization(modelPath: modelPath, outputPath: out, options: try options(scheme)).run()
            XCTAssertEqual(report.scheme, scheme)
            XCTAssertEqual(report.blocks.count, 2)
            let opened = try openModel(out)
            XCTAssertEqual(opened.packed == nil, scheme == "rtn2", "rtn is written dense, the others packed")
        }
    }

    /// Fine-tuning toward the full-precision model's own activations: block 0 sees the same
    /// inputs either way (the embeddings), so it ends identical; block 1 is then trained to
    /// also undo block 0's error, so the quantized model's last hidden states land closer to
    /// the full-precision model's than with block-local targets.
    func testFullPrecisionChainTargetsPullTheLastHiddenStatesTowardTheOriginal() throws {
        var local = try options("1x8")
        local.finetuneTargets = .local
        local.finetune.epochs = 3
        local.finetune.validationSamples = 0
        var chain = local
        chain.finetuneTargets = .fullPrecisionChain
        let a = try BlockwiseQuantization(modelPath: modelPath, outputPath: directory + "/local", options: local).run()
        let b = try BlockwiseQuantization(modelPath: modelPath, outputPath: directory + "/chain", options: chain).run()
        XCTAssertEqual(a.blocks[0].outputErrorFinetuned, b.blocks[0].outputErrorFinetuned)
        XCTAssertNotEqual(a.blocks[1].outputErrorFinetuned, b.blocks[1].outputErrorFinetuned)

        let original = try openModel(modelPath)
        let text = "The weather in the north is cold and the rain falls on the green hills every morning. The weather"
        let tokens = try BPETokenizer(spec: original.tokenizer).encode(Array(text.utf8))
        func lastHidden(_ model: LlamaModel) -> [Float] {
            let state = model.makeState(maxPositions: tokens.count, maxBatch: tokens.count, maxLogitRows: 1)
            var h = model.embed(tokens)
            for l in 0..<model.config.numLayers { model.forwardBlock(layer: l, hidden: &h, state: state) }
            return h
        }
        let target = lastHidden(original.model)
        func error(_ path: String) throws -> Double {
            let h = lastHidden(try openModel(path, dequantize: true).model)
            let num = zip(h, target).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
            return num / target.reduce(0.0) { $0 + Double($1 * $1) }
        }
        let localError = try error(directory + "/local"), chainError = try error(directory + "/chain")
        XCTAssertLessThan(chainError, localError, "fp-chain \(chainError) vs local \(localError)")
    }

    func testBadInputsAreOneClearError() throws {
        let out = directory + "/exists"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        XCTAssertThrowsError(try BlockwiseQuantization(modelPath: modelPath, outputPath: out, options: try options("1x8")).run()) {
            XCTAssertTrue("\($0)".contains("already exists"), "\($0)")
        }
        XCTAssertThrowsError(try QuantizationChoice(parsing: "3x99")) { XCTAssertTrue("\($0)".contains("3x99"), "\($0)") }
        XCTAssertThrowsError(try QuantizationChoice(parsing: "banana")) { XCTAssertTrue("\($0)".contains("banana"), "\($0)") }

        let short = directory + "/short.txt"
        try "too short".write(toFile: short, atomically: true, encoding: .utf8)
        var o = try options("1x8")
        o.calibration = short
        XCTAssertThrowsError(try BlockwiseQuantization(modelPath: modelPath, outputPath: directory + "/o2", options: o).run()) {
            XCTAssertTrue("\($0)".contains(short), "\($0)")
        }

        var weights = TinyModel.weights(seed: 3)
        weights.tensors["model.layers.1.mlp.up_proj.weight"]!.values[5] = .nan
        let nanModel = directory + "/nan.gguf"
        try weights.writeGGUF(to: nanModel)
        XCTAssertThrowsError(try BlockwiseQuantization(modelPath: nanModel, outputPath: directory + "/o3", options: try options("1x8")).run()) {
            XCTAssertTrue("\($0)".contains("model.layers.1.mlp.up_proj.weight"), "\($0)")
        }
    }
}

/// Residual-norm weighting of the o_proj and down_proj objectives (`--residual-weighting`).
final class ResidualNormWeightingTests: XCTestCase {
    func testWeightedAccumulationIsTheWeightedSumOfOuterProducts() {
        let dim = 5, rows = 7
        let x = (0..<(rows * dim)).map { Float(($0 * 37) % 11) - 5 }
        let weights: [Float] = [1, 0.5, 2, 0, 3, 0.25, 1.5]
        var accumulator = HessianAccumulator(dim: dim)
        accumulator.add(x, rows: rows, rowWeights: weights)
        let h = accumulator.hessian()
        for i in 0..<dim {
            for j in 0..<dim {
                let expected = (0..<rows).reduce(0.0) { $0 + Double(weights[$1]) * Double(x[$1 * dim + i]) * Double(x[$1 * dim + j]) }
                XCTAssertEqual(h[i * dim + j], expected, accuracy: 1e-4 * max(1, abs(expected)))
            }
        }
    }

    /// On the tiny model: the codes of the linears that read normalised inputs (q, k, v, gate,
    /// up) are the same with and without the weighting, those of o_proj and down_proj are not.
    func testOnlyTheResidualWritersObjectivesChange() throws {
        let directory = NSTemporaryDirectory() + "residual-weighting-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let model = directory + "/tiny.gguf", text = directory + "/calibration.txt"
        try TinyModel.writeGGUF(to: model, seed: 3)
        try String(repeating: "Rain falls on the green hills in the north, and the boats sail out at dawn. ", count: 40)
            .write(toFile: text, atomically: true, encoding: .utf8)
        var o = QuantizeOptions.preset(.fast)
        o.choice = try QuantizationChoice(parsing: "2x4")
        o.calibration = text
        o.samples = 6
        o.sequenceLength = 32
        o.aqlm.maxIterations = 2
        o.blockLimit = 1
        _ = try BlockwiseQuantization(modelPath: model, outputPath: directory + "/plain", options: o).run()
        o.residualNormWeighting = true
        _ = try BlockwiseQuantization(modelPath: model, outputPath: directory + "/weighted", options: o).run()
        let plain = try PackedCheckpoint.read(directory: directory + "/plain")
        let weighted = try PackedCheckpoint.read(directory: directory + "/weighted")
        for linear in LlamaLinear.allCases {
            let name = "model.layers.0.\(linear.rawValue)"
            let same = try XCTUnwrap(plain.linears[name]).codes == (try XCTUnwrap(weighted.linears[name]).codes)
            XCTAssertEqual(same, linear.input != .attentionOutput && linear.input != .mlpHidden, name)
        }
    }
}
