import CBLAS
import Checkpoint
import Finetune
import Foundation
import Kernels
import Llama
import PackedFormat
import Quantizer
import XCTest

/// Block-wise fine-tuning of block 0 of the default model: a benchmark, not a test (skipped
/// unless AQLM_FT_PACKED names a packed checkpoint whose block 0 is quantized, e.g. the output
/// of `aqlm quantize --blocks 1 --finetune-epochs 0`). Settings to compare come from
/// AQLM_FT_RUNS, ";"-separated "epochs,lr,sequencesPerStep[,transform[,sequencesPerEpoch]]"
/// (default "1,1e-3,2").
/// Reports the reference's block output error (mean ‖Y_q − Y*‖²/‖Y_q‖²) before and after, and
/// the wall time of the fine-tuning call.
final class FinetuneBenchmarks: XCTestCase {
    func testBlockZeroOfTheDefaultModel() throws {
        let env = ProcessInfo.processInfo.environment
        guard let packedPath = env["AQLM_FT_PACKED"] else { throw XCTSkip("set AQLM_FT_PACKED to run") }
        let calibration = env["AQLM_FT_CALIBRATION"] ?? "/work/shared/data/wikitext-2/wiki.valid.tokens"
        let samples = Int(env["AQLM_FT_SAMPLES"] ?? "") ?? 128
        let weights = try loadCheckpoint(ModelPaths.resolve("smollm2-135m"))
        let model = try LlamaModel(weights: weights)
        let packed = try PackedCheckpoint.read(directory: packedPath)
        var codes: [LlamaLinear: AdditiveCode] = [:]
        for linear in LlamaLinear.allCases { codes[linear] = packed.linears["model.layers.0.\(linear.rawValue)"] }
        XCTAssertEqual(codes.count, 7)

        var clock = Date()
        let sequences = try loadCalibrationSequences(calibration, tokenizer: weights.tokenizer, samples: samples, length: 512, seed: 0)
        let inputs = sequences.map { model.embed($0) }
        let state = model.makeState(maxPositions: 512)
        let targets = inputs.map { x -> [Float] in
            var y = x
            model.forwardBlock(layer: 0, hidden: &y, state: state)
            return y
        }
        print(String(format: "calibration and targets: %.1f s", Date().timeIntervalSince(clock)))

        func outputError(_ block: TrainableBlock) -> Double {
            let prepared = PreparedBlock(block)
            let activations = BlockActivations(config: model.config, capacity: 512)
            var total = 0.0
            for s in inputs.indices {
                var y = inputs[s]
                y.withUnsafeMutableBufferPointer { prepared.forward($0.baseAddress!, tokens: 512, saving: activations) }
                let difference = zip(y, targets[s]).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
                total += difference / y.reduce(0.0) { $0 + Double($1 * $1) }
            }
            return total / Double(inputs.count)
        }
        let block = TrainableBlock(block: model.layers[0], codes: codes)
        clock = Date()
        let before = outputError(block)
        print(String(format: "block 0 output error before: %.5f (%.1f s for one pass)", before, Date().timeIntervalSince(clock)))

        for run in (env["AQLM_FT_RUNS"] ?? "1,1e-3,2").split(separator: ";") {
            let fields = run.split(separator: ",").map(String.init)
            var options = BlockFinetuneOptions()
            options.epochs = Int(fields[0])!
            options.adam.learningRate = Float(fields[1])!
            options.sequencesPerStep = Int(fields[2])!
            if fields.count > 3 { options.codebookTransform = CodebookTransform(rawValue: fields[3])! }
            if fields.count > 4 { options.sequencesPerEpoch = Int(fields[4])! }
            if let v = env["AQLM_FT_VAL"] { options.validationSamples = Int(v)! }
            clock = Date()
            let result = try finetuneBlock(block, config: model.config, inputs: inputs, targets: targets, options: options) { print($0) }
            let seconds = Date().timeIntervalSince(clock)
            print(String(format: "run %@: output error %.5f -> %.5f, best epoch %d, %d steps, %.1f s (%.1f CPU s)",
                         String(run), before, outputError(result.block), result.bestEpoch, result.steps, seconds, result.cpuSeconds))
        }
    }
}

extension FinetuneBenchmarks {
    /// Where a training step's time goes at SmolLM2-135M's shapes (512 tokens), on random
    /// weights: forward, backward, and the attention kernels alone. Skipped unless AQLM_FT_PROFILE is set.
    func testBlockPassProfile() throws {
        guard ProcessInfo.processInfo.environment["AQLM_FT_PROFILE"] != nil else { throw XCTSkip("set AQLM_FT_PROFILE to run") }
        let config = LlamaConfig(architecture: "llama", vocabSize: TinyModel.config.vocabSize, hiddenSize: 576, intermediateSize: 1536,
                                 numLayers: 1, numHeads: 9, numKVHeads: 3, contextLength: 512, ropeTheta: 100_000,
                                 rmsNormEps: 1e-5, tiedEmbeddings: true)
        let block = try randomTrainableBlock(config: config, seed: 1, scheme: .preset2x8, frozen: [])
        let t = 512, d = config.hiddenSize
        var rng = SeededRandom(seed: 2)
        var x = (0..<(t * d)).map { _ in rng.nextGaussian() }
        let activations = BlockActivations(config: config, capacity: t)
        let workspace = BackwardWorkspace(config: config, capacity: t)
        var gradients = BlockGradients(block)
        func time(_ label: String, repeats: Int = 4, _ body: () -> Void) {
            body()
            let clock = Date(), cpu = processCPUSeconds()
            for _ in 0..<repeats { body() }
            print(String(format: "%@: %.1f ms (%.1f CPU ms)", label, Date().timeIntervalSince(clock) * 1000 / Double(repeats),
                         (processCPUSeconds() - cpu) * 1000 / Double(repeats)))
        }
        var prepared = PreparedBlock(block)
        time("prepare (dequantize 7 linears)") { prepared = PreparedBlock(block) }
        let input = x
        time("forward") {
            x = input
            x.withUnsafeMutableBufferPointer { prepared.forward($0.baseAddress!, tokens: t, saving: activations) }
        }
        var g = x
        time("backward") {
            g = x
            g.withUnsafeMutableBufferPointer { prepared.backward($0.baseAddress!, activations: activations, gradients: &gradients, workspace: workspace) }
        }
        let q = config.numHeads * config.headDim, kv = config.numKVHeads * config.headDim
        var qs = (0..<(t * q)).map { _ in rng.nextGaussian() }, ks = (0..<(t * kv)).map { _ in rng.nextGaussian() }
        let vs = (0..<(t * kv)).map { _ in rng.nextGaussian() }
        var out = [Float](repeating: 0, count: t * q), dq = out, dk = ks, dv = vs
        var scratch = [Float](repeating: 0, count: 2 * t * t)
        time("causalAttention forward kernel") {
            causalAttention(queries: qs, keys: ks, values: vs, into: &out, tokens: t, startPosition: 0, heads: 9, kvHeads: 3, headDim: 64)
        }
        time("causalAttentionBackward kernel") {
            causalAttentionBackward(queries: qs, keys: ks, values: vs, gradOutput: out, gradQueries: &dq, gradKeys: &dk, gradValues: &dv,
                                    tokens: t, heads: 9, kvHeads: 3, headDim: 64, scratch: &scratch)
        }
        _ = (qs.count, ks.count)
        qs[0] = 0
        ks[0] = 0
        let w = (0..<(1536 * 576)).map { _ in rng.nextGaussian() }
        var y = [Float](repeating: 0, count: t * 1536)
        let dense = DenseLinear(weights: w, outputSize: 1536, inputSize: 576)
        time("one 512×576×1536 sgemm") { dense.apply(input, &y, tokens: t) }
        var dx = input, dw = w
        time("dX = dY·W (512×1536 · 1536×576)") {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 512, 576, 1536, 1, y, 1536, w, 576, 0, &dx, 576)
        }
        time("dW = dYᵀ·X (1536×512 · 512×576)") {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 1536, 576, 512, 1, y, 1536, input, 576, 0, &dw, 576)
        }
        let up = block.quantized[.up]!
        var gradient = LinearGradient(up)
        let codewords = up.effectiveCodebooks
        time("route dW to codebooks and scales (1536×576)") {
            up.accumulateGradient(weightGrad: dw, codewords: codewords, into: &gradient)
        }
        var gate = y, hidden = y
        time("swiGLU backward (512×1536)") {
            swiGLUBackward(gate: y, up: y, gradOutput: y, gradGate: &gate, gradUp: &hidden, count: y.count)
        }
    }
}
