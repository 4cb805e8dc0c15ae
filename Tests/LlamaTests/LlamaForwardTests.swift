import Foundation
import Checkpoint
import Kernels
import Llama
import XCTest

/// The optimised forward pass against NaiveLlama on tiny random models, and the equivalences
/// the cache and the calibration hooks promise.
final class LlamaForwardTests: XCTestCase {
    /// TinyModel's shape: tied head, 4 heads of 16 over 2 KV heads.
    static let tied = TinyModel.config
    /// qwen2-style: q/k/v biases, separate head, 4 query heads of 10 (q width 40 ≠ hidden 48,
    /// odd head halves so every SIMD tail runs), groups of 2.
    static let biased = LlamaConfig(
        architecture: "qwen2", vocabSize: TinyModel.config.vocabSize, hiddenSize: 48, intermediateSize: 80,
        numLayers: 3, numHeads: 4, numKVHeads: 2, headDim: 10, contextLength: 64, ropeTheta: 1_000_000,
        rmsNormEps: 1e-6, tiedEmbeddings: false, attentionBias: true)

    let tokens = [5, 101, 266, 32, 7, 7, 200, 13, 0, 99, 150, 31, 64, 250, 3, 18, 77]

    func model(_ config: LlamaConfig, seed: UInt64 = 1) throws -> (LlamaModel, ModelWeights) {
        let weights = TinyModel.weights(config: config, seed: seed)
        return (try LlamaModel(weights: weights), weights)
    }

    /// All rows of logits from one forward call.
    func allLogits(_ model: LlamaModel, _ tokens: [Int], maxBatch: Int? = nil) -> [[Float]] {
        let state = model.makeState(maxPositions: tokens.count, maxBatch: maxBatch, maxLogitRows: tokens.count)
        let rows = model.forward(tokens, state: state, logits: .all)
        return rows.indices.map { Array(state.logits(row: $0)) }
    }

    func assertClose(_ a: [[Float]], _ b: [[Double]], relative: Double, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        let scale = max(1, b.joined().map(abs).max() ?? 0)
        let worst = zip(a.joined(), b.joined()).map { abs(Double($0) - $1) }.max() ?? 0
        XCTAssertLessThan(worst / scale, relative, "max |difference| \(worst) against scale \(scale)", file: file, line: line)
    }

    func testMatchesNaiveReferenceWithTiedHead() throws {
        let (llama, weights) = try model(Self.tied)
        assertClose(allLogits(llama, tokens), NaiveLlama(weights: weights).logits(tokens), relative: 1e-4)
    }

    func testMatchesNaiveReferenceWithBiasesAndSeparateHead() throws {
        let (llama, weights) = try model(Self.biased, seed: 2)
        assertClose(allLogits(llama, tokens), NaiveLlama(weights: weights).logits(tokens), relative: 1e-4)
    }

    func testIncrementalDecodeMatchesPrefill() throws {
        for config in [Self.tied, Self.biased] {
            let (llama, _) = try model(config, seed: 3)
            let full = allLogits(llama, tokens)
            let state = llama.makeState(maxPositions: tokens.count, maxLogitRows: 1)
            for (t, token) in tokens.enumerated() {
                llama.forward([token], state: state, logits: .last)
                XCTAssertEqual(state.length, t + 1)
                assertClose([Array(state.logits(row: 0))], [full[t].map(Double.init)], relative: 1e-4)
            }
        }
    }

    /// An fp16 key/value cache: decode steps within fp16 rounding of the Float32 cache's logits
    /// (keys and values off by ≤ 2^-11 relative; 5e-3 of the largest logit allowed, and some
    /// difference required, so the fp16 path really ran), equal to a prefill of the same tokens
    /// with the fp16 cache (sgemm attention over the same rounded values: 1e-4), and the same
    /// bits on a second run. Head widths 16 and 10 (the fp16 loads' vector body and tail).
    func testF16CacheDecodesWithinRoundingOfFloat32() throws {
        for config in [Self.tied, Self.biased] {
            var (llama, _) = try model(config, seed: 4)
            let exact = allLogits(llama, tokens)
            llama.kvCache = .f16
            XCTAssertGreaterThanOrEqual(tokens.count, 16, "the prefill must take the sgemm attention path")
            let prefilled = allLogits(llama, tokens)
            var runs: [[[Float]]] = []
            for _ in 0..<2 {
                let state = llama.makeState(maxPositions: tokens.count, maxLogitRows: 1)
                XCTAssertEqual(state.kvCache, .f16)
                runs.append(tokens.map { token in
                    llama.forward([token], state: state, logits: .last)
                    return Array(state.logits(row: 0))
                })
            }
            assertClose(runs[0], exact.map { $0.map(Double.init) }, relative: 5e-3)
            assertClose(runs[0], prefilled.map { $0.map(Double.init) }, relative: 1e-4)
            XCTAssertNotEqual(runs[0], exact, "the fp16 cache must round something")
            XCTAssertEqual(runs[0], runs[1])
        }
    }

    func testPrefillInPiecesMatchesOnePiece() throws {
        let (llama, _) = try model(Self.biased, seed: 4)
        let whole = allLogits(llama, tokens)
        // Explicit pieces through the cache...
        let state = llama.makeState(maxPositions: tokens.count, maxLogitRows: tokens.count)
        var pieces: [[Float]] = []
        for range in [0..<7, 7..<12, 12..<tokens.count] {
            let rows = llama.forward(Array(tokens[range]), startPosition: range.lowerBound, state: state, logits: .all)
            pieces += rows.indices.map { Array(state.logits(row: $0)) }
        }
        assertClose(pieces, whole.map { $0.map(Double.init) }, relative: 1e-4)
        // ...and the state splitting a long input into steps of 3 by itself.
        assertClose(allLogits(llama, tokens, maxBatch: 3), whole.map { $0.map(Double.init) }, relative: 1e-4)
    }

    func testLogitRowSelection() throws {
        let (llama, _) = try model(Self.tied, seed: 5)
        let whole = allLogits(llama, tokens)
        let state = llama.makeState(maxPositions: tokens.count, maxBatch: 4, maxLogitRows: 6)
        let rows = llama.forward(tokens, state: state, logits: .range(9..<15))
        XCTAssertEqual(rows, 9..<15)
        assertClose((0..<rows.count).map { Array(state.logits(row: $0)) }, whole[9..<15].map { $0.map(Double.init) }, relative: 1e-5)
        XCTAssertEqual(llama.forward(tokens, startPosition: 0, state: state, logits: .last), (tokens.count - 1)..<tokens.count)
        assertClose([Array(state.logits(row: 0))], [whole.last!.map(Double.init)], relative: 1e-5)
    }

    /// Quantization's streaming path: each block alone (`LlamaModel(block:config:)`, built from
    /// the checkpoint by `LlamaBlock(weights:layer:)`) gives exactly what the whole model's
    /// block gives; a Q8_0 head is kept as Q8_0 with the same values.
    func testOneBlockModelsMatchTheWholeModel() throws {
        let (llama, weights) = try model(Self.biased, seed: 7)
        let state = llama.makeState(maxPositions: tokens.count)
        var whole = llama.embed(tokens), alone = whole
        for layer in 0..<Self.biased.numLayers {
            llama.forwardBlock(layer: layer, hidden: &whole, state: state)
            let single = LlamaModel(block: LlamaBlock(weights: weights, layer: layer), config: Self.biased)
            single.forwardBlock(layer: 0, hidden: &alone, state: single.makeState(maxPositions: tokens.count))
            XCTAssertEqual(alone, whole, "block \(layer)")
        }

        let p = FileManager.default.temporaryDirectory.appendingPathComponent("llama-q8-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: p) }
        var untied = Self.tied
        untied.tiedEmbeddings = false
        try TinyModel.weights(config: untied, seed: 7).writeGGUF(to: p, weightType: .q8_0)
        let read = try loadCheckpoint(p)
        let head = try EmbeddingTable(storedTensor: read["lm_head.weight"], name: "lm_head.weight")
        XCTAssertEqual(head.precision, .q8)
        XCTAssertEqual(head.dequantized(), read["lm_head.weight"].values)
    }

    /// Calibration's path: embed, run block by block with the observer, apply the head.
    func testBlockByBlockWithObserverMatchesForward() throws {
        let (llama, weights) = try model(Self.biased, seed: 6)
        let c = Self.biased
        let state = llama.makeState(maxPositions: tokens.count)
        var hidden = llama.embed(tokens)
        var seen: [(Int, LinearInputSite, Int, Int)] = []
        var firstAttentionInput: [Float] = []
        let blockInput = hidden
        for layer in 0..<c.numLayers {
            llama.forwardBlock(layer: layer, hidden: &hidden, state: state) { input in
                seen.append((input.layer, input.site, input.tokens, input.width))
                if input.layer == 0 && input.site == .attention { firstAttentionInput = Array(input.rows) }
            }
        }
        let logits = llama.logits(hidden: hidden, state: state)
        let whole = allLogits(llama, tokens)
        assertClose(stride(from: 0, to: logits.count, by: c.vocabSize).map { Array(logits[$0..<($0 + c.vocabSize)]) },
                    whole.map { $0.map(Double.init) }, relative: 1e-5)

        let widths: [LinearInputSite: Int] = [.attention: c.hiddenSize, .attentionOutput: c.numHeads * c.headDim,
                                              .mlp: c.hiddenSize, .mlpHidden: c.intermediateSize]
        XCTAssertEqual(seen.count, 4 * c.numLayers)
        for (i, (layer, site, count, width)) in seen.enumerated() {
            XCTAssertEqual(layer, i / 4)
            XCTAssertEqual(site, LinearInputSite.allCases[i % 4])
            XCTAssertEqual(count, tokens.count)
            XCTAssertEqual(width, widths[site])
        }
        // What q/k/v read is RMSNorm of the block input with the layer's gain.
        let naive = NaiveLlama(weights: weights)
        let gain = naive.tensor("model.layers.0.input_layernorm.weight")
        for t in [0, 9] {
            let row = Array(blockInput[(t * c.hiddenSize)..<((t + 1) * c.hiddenSize)]).map(Double.init)
            let expected = naive.rmsNorm(row, gain)
            let got = firstAttentionInput[(t * c.hiddenSize)..<((t + 1) * c.hiddenSize)]
            for (e, g) in zip(expected, got) { XCTAssertEqual(Double(g), e, accuracy: 1e-5) }
        }
    }

    /// Any LinearOperator can stand in for a dense layer (how packed AQLM layers plug in).
    func testLinearsGoThroughTheProtocol() throws {
        let (dense, _) = try model(Self.tied, seed: 7)
        var wrapped = dense
        let counter = CallCounter()
        for l in 0..<wrapped.layers.count {
            for linear in LlamaLinear.allCases {
                wrapped.layers[l][linear] = CountingLinear(inner: wrapped.layers[l][linear], counter: counter)
            }
        }
        wrapped.head = CountingLinear(inner: dense.head, counter: counter)
        let expected = allLogits(dense, tokens)
        assertClose(allLogits(wrapped, tokens), expected.map { $0.map(Double.init) }, relative: 1e-6)
        XCTAssertEqual(counter.calls, 7 * Self.tied.numLayers + 1)
    }
}

final class CallCounter: @unchecked Sendable { var calls = 0 }

struct CountingLinear: LinearOperator {
    let inner: any LinearOperator
    let counter: CallCounter
    var inputSize: Int { inner.inputSize }
    var outputSize: Int { inner.outputSize }
    var weightBytes: Int { inner.weightBytes }
    func apply(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        counter.calls += 1
        inner.apply(x, y, tokens: tokens)
    }
}
