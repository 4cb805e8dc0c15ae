import Checkpoint
import Finetune
import Kernels
import Llama
import Quantizer
import XCTest

/// Random AQLM codes for every linear of a tiny block but `v` (left dense, so the frozen path
/// runs too): weights of about the model's scale, codes uniform.
func randomTrainableBlock(config: LlamaConfig, seed: UInt64, scheme: AQLMScheme = AQLMScheme(codebookCount: 2, codeBits: 4, groupSize: 8),
                          frozen: Set<LlamaLinear> = [.v]) throws -> TrainableBlock {
    let model = try LlamaModel(weights: TinyModel.weights(config: config, seed: seed))
    let block = model.layers[0]
    var rng = SeededRandom(seed: seed &+ 100)
    var codes: [LlamaLinear: AdditiveCode] = [:]
    for linear in LlamaLinear.allCases where !frozen.contains(linear) {
        let dOut = block[linear].outputSize, dIn = block[linear].inputSize
        let std = 0.7 / Float(dIn).squareRoot()
        codes[linear] = AdditiveCode(
            scheme: scheme, dOut: dOut, dIn: dIn,
            // The last codeword of each codebook stays unused.
            codes: (0..<(dOut * dIn / scheme.groupSize * scheme.codebookCount)).map { _ in UInt16(rng.next() % UInt64(scheme.codebookSize - 1)) },
            codebooks: (0..<(scheme.codebookCount * scheme.codebookSize * scheme.groupSize)).map { _ in std * rng.nextGaussian() },
            scales: (0..<dOut).map { _ in 0.5 + rng.nextFloat() })
    }
    return TrainableBlock(block: block, codes: codes)
}

/// The backward pass of a block against central finite differences of a plain Float64 block
/// (ReferenceBlock), for every parameter kind and for the block input.
final class BlockGradientTests: XCTestCase {
    /// qwen2-style: q/k/v biases, head dimension 10 (odd RoPE halves: every SIMD tail runs),
    /// query width 40 ≠ hidden 48, groups of 2 query heads per key/value head.
    static let biased = LlamaConfig(
        architecture: "qwen2", vocabSize: TinyModel.config.vocabSize, hiddenSize: 48, intermediateSize: 80,
        numLayers: 1, numHeads: 4, numKVHeads: 2, headDim: 10, contextLength: 64, ropeTheta: 1_000_000,
        rmsNormEps: 1e-6, tiedEmbeddings: false, attentionBias: true)

    /// Past `PreparedBlock.gemmAttentionRows`, so the forward runs sgemm attention in row blocks.
    let tokens = 18

    func randomRows(_ rows: Int, _ width: Int, std: Float, rng: inout SeededRandom) -> [Float] {
        (0..<(rows * width)).map { _ in std * rng.nextGaussian() }
    }

    func testTrainingForwardMatchesForwardBlock() throws {
        // 18 tokens: one row block of sgemm attention; 150: several; 7: dot-product attention.
        for (config, tokens) in [(TinyModel.config, tokens), (Self.biased, tokens), (TinyModel.config, 150), (Self.biased, 7)] {
            let block = try randomTrainableBlock(config: config, seed: 4)
            let prepared = PreparedBlock(block)
            var rng = SeededRandom(seed: 5)
            let input = randomRows(tokens, config.hiddenSize, std: 1, rng: &rng)

            var model = try LlamaModel(weights: TinyModel.weights(config: config, seed: 4))
            model.layers[0] = prepared.dense
            var expected = input
            model.forwardBlock(layer: 0, hidden: &expected, state: model.makeState(maxPositions: tokens))

            var actual = input
            let activations = BlockActivations(config: config, capacity: tokens)
            actual.withUnsafeMutableBufferPointer { prepared.forward($0.baseAddress!, tokens: tokens, saving: activations) }
            XCTAssertEqual(actual, expected, "\(config.architecture), \(tokens) tokens")
            XCTAssertNotEqual(actual, input)
        }
    }

    /// Analytic gradients of ‖Y − Y*‖²/‖Y*‖² from the Float32 backward pass.
    func analytic(_ block: TrainableBlock, config: LlamaConfig, input: [Float], target: [Float], tokens: Int? = nil)
        -> (gradients: BlockGradients, input: [Float]) {
        let tokens = tokens ?? self.tokens
        let prepared = PreparedBlock(block)
        let activations = BlockActivations(config: config, capacity: tokens)
        var y = input
        y.withUnsafeMutableBufferPointer { prepared.forward($0.baseAddress!, tokens: tokens, saving: activations) }
        let reference = target.reduce(0) { $0 + $1 * $1 }
        var gradient = zip(y, target).map { 2 * ($0 - $1) / reference }
        var gradients = BlockGradients(block)
        gradient.withUnsafeMutableBufferPointer {
            prepared.backward($0.baseAddress!, activations: activations, gradients: &gradients,
                              workspace: BackwardWorkspace(config: config, capacity: tokens))
        }
        return (gradients, gradient)
    }

    /// Compares `analytic[i]` with (L(θ + h·eᵢ) − L(θ − h·eᵢ))/2h for the six largest entries
    /// and six random ones, and checks entries the loss cannot depend on are exactly zero.
    func checkEntries(_ name: String, analytic: [Float], rng: inout SeededRandom,
                      loss: (_ index: Int, _ step: Double) -> Double, file: StaticString = #filePath, line: UInt = #line) {
        let largest = analytic.map(abs).max() ?? 0
        XCTAssertGreaterThan(largest, 0, "\(name): gradient is all zero", file: file, line: line)
        let byMagnitude = analytic.indices.sorted { abs(analytic[$0]) > abs(analytic[$1]) }
        let randomPicks = (0..<6).map { _ in Int(rng.next() % UInt64(analytic.count)) }
        var worst = 0.0
        for i in Array(byMagnitude.prefix(6)) + randomPicks {
            let h = 1e-5
            let fd = (loss(i, h) - loss(i, -h)) / (2 * h)
            let error = abs(Double(analytic[i]) - fd)
            // Float32 analytic against a Double difference: 0.1 % of the entry, plus 1e-5 of the
            // largest entry for small ones (whose Float32 sums lose more relative precision).
            let tolerance = 1e-3 * abs(fd) + 1e-5 * Double(largest)
            worst = max(worst, error / tolerance)
            XCTAssertLessThanOrEqual(error, tolerance,
                                     "\(name)[\(i)]: analytic \(analytic[i]), finite difference \(fd)", file: file, line: line)
        }
        // The same bound over the entries checked (the worst as a fraction of its tolerance).
        XCTAssertLessThanOrEqual(worst, 1, name, file: file, line: line)
    }

    func checkBlock(_ block: TrainableBlock, config: LlamaConfig, seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        let d = config.hiddenSize
        let input = randomRows(tokens, d, std: 1, rng: &rng)
        let target = zip(input, randomRows(tokens, d, std: 1, rng: &rng)).map { $0 + $1 }
        let (gradients, inputGradient) = analytic(block, config: config, input: input, target: target)

        let reference = ReferenceBlock(block, config: config)
        let rows = { (flat: [Float]) in (0..<self.tokens).map { t in flat[(t * d)..<((t + 1) * d)].map(Double.init) } }
        let x = rows(input), y = rows(target)
        func loss(_ modify: (inout ReferenceBlock) -> Void) -> Double {
            var r = reference
            modify(&r)
            return r.loss(x, target: y)
        }

        checkEntries("input_layernorm", analytic: gradients.inputNorm, rng: &rng) { i, h in loss { $0.inputNorm[i] += h } }
        checkEntries("post_attention_layernorm", analytic: gradients.postAttentionNorm, rng: &rng) { i, h in
            loss { $0.postAttentionNorm[i] += h }
        }
        for linear in LlamaLinear.allCases {
            guard let layer = block.quantized[linear], let gradient = gradients.linears[linear] else { continue }
            let (books, transform) = layer.parameterGradients(gradient)
            checkEntries("\(linear.rawValue).codebooks", analytic: books, rng: &rng) { i, h in
                loss { $0.quantized[linear]!.codebooks[i] += h }
            }
            checkEntries("\(linear.rawValue).scales", analytic: gradient.scales, rng: &rng) { i, h in
                loss { $0.quantized[linear]!.scales[i] += h }
            }
            if let transform {
                checkEntries("\(linear.rawValue).codebook_transform", analytic: transform, rng: &rng) { i, h in
                    loss { $0.quantized[linear]!.transform![i] += h }
                }
            }
            // A codeword no group uses cannot change the loss.
            let used = Set(layer.codes.enumerated().map { $0.offset % layer.scheme.codebookCount * layer.scheme.codebookSize + Int($0.element) })
            for c in 0..<(layer.scheme.codebookCount * layer.scheme.codebookSize) where !used.contains(c) {
                let g = layer.scheme.groupSize
                XCTAssertEqual(gradient.codewords[(c * g)..<((c + 1) * g)].map(abs).max(), 0, "\(linear.rawValue) unused codeword \(c)")
            }
        }
        let flatInput = x.flatMap { $0 }
        checkEntries("block input", analytic: inputGradient, rng: &rng) { i, h in
            var shifted = flatInput
            shifted[i] += h
            return reference.loss((0..<self.tokens).map { Array(shifted[($0 * d)..<(($0 + 1) * d)]) }, target: y)
        }
    }

    /// The backward pass gives the same bits at any worker count (what makes a fine-tuning run
    /// reproducible on a loaded machine, where the count follows the free cores).
    func testBackwardIsBitIdenticalAtAnyWorkerCount() throws {
        let threads = Threads.count
        defer { Threads.set(threads) }
        for (config, count) in [(TinyModel.config, tokens), (TinyModel.config, 150), (Self.biased, 150), (Self.biased, 7)] {
            let block = try randomTrainableBlock(config: config, seed: 9)
            var rng = SeededRandom(seed: 10)
            let input = randomRows(count, config.hiddenSize, std: 1, rng: &rng)
            let target = zip(input, randomRows(count, config.hiddenSize, std: 1, rng: &rng)).map { $0 + $1 }
            var runs: [[UInt32]] = []
            for workers in [1, 2, 3, 1] {
                Threads.set(workers)
                let (gradients, inputGradient) = analytic(block, config: config, input: input, target: target, tokens: count)
                var bits = inputGradient + gradients.inputNorm + gradients.postAttentionNorm
                for linear in LlamaLinear.allCases {
                    guard let g = gradients.linears[linear] else { continue }
                    bits += g.codewords + g.scales
                }
                runs.append(bits.map(\.bitPattern))
            }
            for r in 1..<runs.count { XCTAssertEqual(runs[r], runs[0], "\(config.architecture), \(count) tokens, run \(r)") }
        }
    }

    func testGradientsMatchFiniteDifferences() throws {
        checkBlock(try randomTrainableBlock(config: TinyModel.config, seed: 1), config: TinyModel.config, seed: 2)
    }

    func testGradientsMatchFiniteDifferencesWithBiasesAndOddHeads() throws {
        checkBlock(try randomTrainableBlock(config: Self.biased, seed: 3), config: Self.biased, seed: 4)
    }

    func testCodebookTransformGradientsMatchFiniteDifferences() throws {
        var block = try randomTrainableBlock(config: TinyModel.config, seed: 5).withCodebookTransform(.linear)
        // Away from the identity, so ∂/∂B depends on A.
        var rng = SeededRandom(seed: 6)
        for linear in Array(block.quantized.keys) {
            block.quantized[linear]!.transform = block.quantized[linear]!.transform!.map { $0 + 0.2 * rng.nextGaussian() }
        }
        checkBlock(block, config: TinyModel.config, seed: 7)
    }

    func testUnusedCodebookTransformIsTheIdentity() throws {
        let plain = try randomTrainableBlock(config: TinyModel.config, seed: 8)
        let transformed = plain.withCodebookTransform(.linear)
        for linear in Array(plain.quantized.keys) {
            XCTAssertEqual(transformed.quantized[linear]!.effectiveCodebooks, plain.quantized[linear]!.codebooks)
            XCTAssertEqual(transformed.quantized[linear]!.additiveCode, plain.quantized[linear]!.additiveCode)
        }
    }
}
