import Checkpoint
import Finetune
import Kernels
import Llama
import PackedFormat
import Quantizer
import XCTest

/// Block-wise fine-tuning on block 0 of the tiny model, quantized with AQLM 2x4.
final class BlockFinetuningTests: XCTestCase {
    let config = TinyModel.config
    let tokens = 24

    struct Problem {
        let block: TrainableBlock
        let inputs: [[Float]]
        let targets: [[Float]]
    }

    func problem(sequences: Int = 24) throws -> Problem {
        let model = try LlamaModel(weights: TinyModel.weights(seed: 11))
        var rng = SeededRandom(seed: 12)
        let state = model.makeState(maxPositions: tokens)
        var inputs: [[Float]] = [], targets: [[Float]] = []
        var hessian = [Float](repeating: 0, count: config.hiddenSize * config.hiddenSize)
        for _ in 0..<sequences {
            let x = model.embed((0..<tokens).map { _ in Int(rng.next() % UInt64(config.vocabSize)) }).map { $0 * 10 }
            var y = x
            model.forwardBlock(layer: 0, hidden: &y, state: state)
            inputs.append(x)
            targets.append(y)
        }
        for i in 0..<config.hiddenSize { hessian[i * config.hiddenSize + i] = 1 }
        var options = AQLMOptions()
        options.beamSize = 1
        options.maxIterations = 2
        var codes: [LlamaLinear: AdditiveCode] = [:]
        for linear in LlamaLinear.allCases {
            let dense = model.layers[0][linear] as! DenseLinear
            var h = [Float](repeating: 0, count: dense.inputSize * dense.inputSize)
            for i in 0..<dense.inputSize { h[i * dense.inputSize + i] = 1 }
            let q = try quantizeLinear(weight: dense.weights, dOut: dense.outputSize, dIn: dense.inputSize, hessian: h,
                                       scheme: AQLMScheme(codebookCount: 2, codeBits: 4, groupSize: 8), options: options)
            codes[linear] = q.additiveCode!.roundedToFloat16()
        }
        return Problem(block: TrainableBlock(block: model.layers[0], codes: codes), inputs: inputs, targets: targets)
    }

    /// Mean over `sequences` of ‖Y − Y*‖²/‖Y*‖².
    func error(_ block: TrainableBlock, _ p: Problem, sequences: Range<Int>) -> Double {
        let prepared = PreparedBlock(block)
        let activations = BlockActivations(config: config, capacity: tokens)
        var total = 0.0
        for s in sequences {
            var y = p.inputs[s]
            y.withUnsafeMutableBufferPointer { prepared.forward($0.baseAddress!, tokens: tokens, saving: activations) }
            total += zip(y, p.targets[s]).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
                / p.targets[s].reduce(0.0) { $0 + Double($1 * $1) }
        }
        return total / Double(sequences.count)
    }

    func options() -> BlockFinetuneOptions {
        var o = BlockFinetuneOptions()
        o.epochs = 12
        o.adam.learningRate = 3e-3
        o.sequencesPerStep = 1
        o.validationSamples = 4
        return o
    }

    func testFinetuningLowersTheBlockOutputError() throws {
        let p = try problem()
        let result = try finetuneBlock(p.block, config: config, inputs: p.inputs, targets: p.targets, options: options())
        let training = 0..<20, validation = 20..<24
        let before = (error(p.block, p, sequences: training), error(p.block, p, sequences: validation))
        let after = (error(result.block, p, sequences: training), error(result.block, p, sequences: validation))
        XCTAssertLessThan(after.0, 0.9 * before.0, "training sequences: \(before.0) -> \(after.0)")
        XCTAssertLessThan(after.1, before.1, "held-out sequences: \(before.1) -> \(after.1)")
        XCTAssertGreaterThan(result.bestEpoch, 0)
        XCTAssertEqual(result.validationLoss.count, result.trainingLoss.count + 1)
        XCTAssertEqual(result.validationLoss.min(), result.validationLoss[result.bestEpoch])
        XCTAssertEqual(result.steps, result.trainingLoss.count * 20)
        // What is returned is what the packed file will hold.
        for layer in result.block.quantized.values {
            XCTAssertEqual(layer.codebooks, layer.codebooks.map { halfToFloat(floatToHalf($0)) })
            XCTAssertEqual(layer.scales, layer.scales.map { halfToFloat(floatToHalf($0)) })
        }
        XCTAssertNotEqual(result.block.inputNorm, p.block.inputNorm)
        XCTAssertEqual(result.block.quantized[.q]!.codes, p.block.quantized[.q]!.codes)
    }

    func testOnlyTheChosenParametersChange() throws {
        let p = try problem(sequences: 4)
        var o = options()
        o.epochs = 1
        o.validationSamples = 0
        o.trained = .scales
        let result = try finetuneBlock(p.block, config: config, inputs: p.inputs, targets: p.targets, options: o)
        XCTAssertEqual(result.block.inputNorm, p.block.inputNorm)
        XCTAssertEqual(result.block.quantized[.up]!.codebooks, p.block.quantized[.up]!.codebooks)
        XCTAssertNotEqual(result.block.quantized[.up]!.scales, p.block.quantized[.up]!.scales)
    }

    func testSameSeedSameResult() throws {
        let p = try problem(sequences: 6)
        var o = options()
        o.epochs = 2
        let a = try finetuneBlock(p.block, config: config, inputs: p.inputs, targets: p.targets, options: o)
        let b = try finetuneBlock(p.block, config: config, inputs: p.inputs, targets: p.targets, options: o)
        XCTAssertEqual(a.block.quantized[.down]!.codebooks, b.block.quantized[.down]!.codebooks)
        XCTAssertEqual(a.validationLoss, b.validationLoss)
    }

    func testCodebookTransformTrainsAndFoldsIntoPlainCodebooks() throws {
        let p = try problem()
        var o = options()
        o.codebookTransform = .linear
        let result = try finetuneBlock(p.block, config: config, inputs: p.inputs, targets: p.targets, options: o)
        XCTAssertLessThan(error(result.block, p, sequences: 0..<20), 0.9 * error(p.block, p, sequences: 0..<20))
        for layer in result.block.quantized.values {
            // Folded: the stored codewords are the effective ones.
            XCTAssertEqual(layer.effectiveCodebooks, layer.codebooks)
        }
    }

    func testHoldsOutAtMostAQuarterOfTheSequences() throws {
        let p = try problem(sequences: 4)
        var o = options()
        o.epochs = 1
        o.validationSamples = 8
        let result = try finetuneBlock(p.block, config: config, inputs: p.inputs, targets: p.targets, options: o)
        XCTAssertEqual(result.steps, 3, "3 training sequences, one per step")
    }

    func testCosineScheduleIsAppliedAndStillTrains() throws {
        let p = try problem()
        var o = options()
        o.epochs = 3
        o.validationSamples = 0
        let constant = try finetuneBlock(p.block, config: config, inputs: p.inputs, targets: p.targets, options: o)
        o.schedule = .cosine
        let cosine = try finetuneBlock(p.block, config: config, inputs: p.inputs, targets: p.targets, options: o)
        // The first step has the same rate either way, the later ones smaller: different results.
        XCTAssertNotEqual(cosine.block.quantized[.down]!.codebooks, constant.block.quantized[.down]!.codebooks)
        XCTAssertLessThan(error(cosine.block, p, sequences: 0..<20), 0.9 * error(p.block, p, sequences: 0..<20))
    }
}
