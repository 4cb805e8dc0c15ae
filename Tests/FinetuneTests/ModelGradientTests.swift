import Checkpoint
import Finetune
import Foundation
import Kernels
import Llama
import PackedFormat
import Quantizer
import XCTest

/// The whole-model backward pass (distillation loss → head → final norm → every block)
/// against central finite differences of a plain Float64 model built from ReferenceBlock.
final class ModelGradientTests: XCTestCase {
    let config = TinyModel.config
    let tokens = [5, 101, 266, 32, 7, 7, 200, 13, 0, 99, 150, 31, 64, 250, 3, 18, 77, 40]

    /// The tiny model with random 2x4 codes in every block linear.
    func packedModel() throws -> PackedModel {
        let weights = TinyModel.weights(seed: 31)
        var linears: [String: AdditiveCode] = [:], dense: [String: WeightTensor] = [:]
        for l in 0..<config.numLayers {
            let block = try randomTrainableBlock(config: config, seed: UInt64(40 + l), frozen: [])
            for (linear, layer) in block.quantized { linears["model.layers.\(l).\(linear.rawValue)"] = layer.additiveCode }
        }
        for (name, tensor) in weights.tensors where !name.hasSuffix("_proj.weight") { dense[name] = tensor }
        return PackedModel(config: config, tokenizer: weights.tokenizer, scheme: AQLMScheme(codebookCount: 2, codeBits: 4, groupSize: 8),
                           linears: linears, dense: dense)
    }

    /// Teacher targets from the original tiny model, k = 6.
    func teacher() throws -> TeacherTargets {
        try TeacherTargets.compute(teacher: LlamaModel(weights: TinyModel.weights(seed: 31)), sequences: [tokens], k: 6)
    }

    struct ReferenceModel {
        var blocks: [ReferenceBlock]
        var finalNorm: [Double]
        /// Tied: the lookup table and the head.
        var embedding: [Double]
        let config: LlamaConfig

        /// Σ over positions of Σ_top p(log p − log q) + p_tail(log p_tail − log q_tail).
        func loss(_ tokens: [Int], teacher: TeacherTargets) -> Double {
            let d = config.hiddenSize, v = config.vocabSize
            var x = tokens.map { Array(embedding[($0 * d)..<(($0 + 1) * d)]) }
            for block in blocks { x = block.output(x) }
            var total = 0.0
            for (t, row) in x.enumerated() {
                let normed = blocks[0].rmsNorm(row, finalNorm)
                let logits = (0..<v).map { i in (0..<d).reduce(0.0) { $0 + embedding[i * d + $1] * normed[$1] } }
                let m = logits.max()!
                let logZ = m + Foundation.log(logits.reduce(0.0) { $0 + Foundation.exp($1 - m) })
                var topQ = 0.0
                for j in 0..<teacher.k {
                    let id = Int(teacher.ids[t * teacher.k + j]), logP = Double(teacher.logProbs[t * teacher.k + j])
                    let logQ = logits[id] - logZ
                    topQ += Foundation.exp(logQ)
                    total += Foundation.exp(logP) * (logP - logQ)
                }
                let tail = Double(teacher.tailLogMass[t])
                total += Foundation.exp(tail) * (tail - Foundation.log(1 - topQ))
            }
            return total
        }
    }

    func testGradientsMatchFiniteDifferences() throws {
        let packed = try packedModel()
        let model = try TrainableModel(packed: packed, trainsEmbeddings: true)
        let targets = try teacher()
        let (loss, gradients) = model.distillationGradients(tokens: tokens, teacher: targets)
        let reference = ReferenceModel(blocks: model.blocks.map { ReferenceBlock($0, config: config) },
                                       finalNorm: model.finalNorm.map(Double.init),
                                       embedding: packed.dense["model.embed_tokens.weight"]!.values.map(Double.init), config: config)
        XCTAssertEqual(loss, reference.loss(tokens, teacher: targets), accuracy: 1e-4 * loss)

        var rng = SeededRandom(seed: 9)
        func check(_ name: String, _ analytic: [Float], _ modify: @escaping (inout ReferenceModel, Int, Double) -> Void) {
            let largest = Double(analytic.map(abs).max()!)
            XCTAssertGreaterThan(largest, 0, name)
            let byMagnitude = analytic.indices.sorted { abs(analytic[$0]) > abs(analytic[$1]) }
            for i in Array(byMagnitude.prefix(3)) + (0..<3).map({ _ in Int(rng.next() % UInt64(analytic.count)) }) {
                let h = 1e-5
                var plus = reference, minus = reference
                modify(&plus, i, h)
                modify(&minus, i, -h)
                let fd = (plus.loss(tokens, teacher: targets) - minus.loss(tokens, teacher: targets)) / (2 * h)
                XCTAssertLessThanOrEqual(abs(Double(analytic[i]) - fd), 1e-3 * abs(fd) + 1e-4 * largest,
                                         "\(name)[\(i)]: analytic \(analytic[i]), finite difference \(fd)")
            }
        }
        check("model.norm", gradients.finalNorm) { $0.finalNorm[$1] += $2 }
        // Rows of tokens in the sequence collect both the lookup's and the head's gradient;
        // every other row only the head's.
        let embeddingGradient = try XCTUnwrap(gradients.embedding)
        check("model.embed_tokens", embeddingGradient) { $0.embedding[$1] += $2 }
        let d = config.hiddenSize, sequence = tokens
        check("model.embed_tokens (rows in the sequence)", sequence.flatMap { Array(embeddingGradient[($0 * d)..<(($0 + 1) * d)]) }) {
            $0.embedding[sequence[$1 / d] * d + $1 % d] += $2
        }
        for l in 0..<config.numLayers {
            check("layers.\(l).input_layernorm", gradients.blocks[l].inputNorm) { $0.blocks[l].inputNorm[$1] += $2 }
            check("layers.\(l).post_attention_layernorm", gradients.blocks[l].postAttentionNorm) {
                $0.blocks[l].postAttentionNorm[$1] += $2
            }
            for linear in [LlamaLinear.q, .v, .down] {
                let gradient = gradients.blocks[l].linears[linear]!
                check("layers.\(l).\(linear.rawValue).codebooks", gradient.codewords) {
                    $0.blocks[l].quantized[linear]!.codebooks[$1] += $2
                }
                check("layers.\(l).\(linear.rawValue).scales", gradient.scales) { $0.blocks[l].quantized[linear]!.scales[$1] += $2 }
            }
        }
    }

    /// A frozen embedding and head stay in fp16 (row lookups, the head's product and its
    /// transposed product from the stored halves) and give the loss and gradients of the Float32
    /// path over the same values, tied and untied.
    func testFrozenFloat16EmbeddingAndHeadGiveTheFloat32PathsGradients() throws {
        let targets = try teacher()
        for tied in [true, false] {
            var packed = try packedModel()
            if !tied {
                packed.config.tiedEmbeddings = false
                let table = packed.dense["model.embed_tokens.weight"]!
                var random = SeededRandom(seed: 77)
                packed.dense["lm_head.weight"] = WeightTensor(shape: table.shape, values: table.values.map { $0 * (0.5 + random.nextFloat()) })
            }
            for name in ["model.embed_tokens.weight", "lm_head.weight"] { packed.dense[name] = packed.dense[name]?.roundedForPacking() }
            let frozen = try TrainableModel(packed: packed), trained = try TrainableModel(packed: packed, trainsEmbeddings: true)
            XCTAssertEqual(frozen.embedding.precision, .f16)
            XCTAssertEqual(trained.embedding.precision, .f32)
            let (frozenLoss, frozenGradients) = frozen.distillationGradients(tokens: tokens, teacher: targets)
            let (loss, gradients) = trained.distillationGradients(tokens: tokens, teacher: targets)
            XCTAssertNil(frozenGradients.embedding)
            XCTAssertEqual(frozenLoss, loss, accuracy: 1e-5 * loss, "tied \(tied)")
            func same(_ a: [Float], _ b: [Float], _ name: String) {
                let largest = b.map(abs).max()!
                XCTAssertGreaterThan(largest, 0, name)
                for i in b.indices where abs(a[i] - b[i]) > 1e-4 * largest {
                    return XCTFail("tied \(tied) \(name)[\(i)]: \(a[i]) vs \(b[i])")
                }
            }
            same(frozenGradients.finalNorm, gradients.finalNorm, "model.norm")
            for l in 0..<config.numLayers {
                same(frozenGradients.blocks[l].inputNorm, gradients.blocks[l].inputNorm, "layers.\(l).input_layernorm")
                for linear in [LlamaLinear.q, .down] {
                    same(frozenGradients.blocks[l].linears[linear]!.codewords, gradients.blocks[l].linears[linear]!.codewords,
                         "layers.\(l).\(linear.rawValue).codebooks")
                }
            }
        }
    }

    /// A confident student (its teacher-top-k probabilities, rounded to Float, summing to 1 or
    /// past it) still gets the bounded gradient q − p̃ (L1 norm ≤ 2) and the loss of a Float64
    /// reference; the student tail mass taken as 1 − Σ top had put up to ~1e26 on the tail.
    func testDistillationGradientStaysBoundedForAConfidentStudent() {
        var rng = SeededRandom(seed: 11)
        let n = 2000, k = 8, ids = (0..<Int32(k)).map { $0 * 7 + 3 }
        var roundedPastOne = 0
        for _ in 0..<300 {
            var z = (0..<n).map { _ in 4 * rng.nextFloat() - 2 }
            for id in ids { z[Int(id)] = 25 + 3 * rng.nextFloat() }
            // The teacher: its own top k with most of the mass, a small tail.
            let teacherTop = (0..<k).map { _ in 0.5 + rng.nextFloat() }
            let tail = 1e-3 * Double(rng.nextFloat() + 0.1)
            let total = teacherTop.reduce(0) { $0 + Double($1) }
            let logProbs = teacherTop.map { Float(log(Double($0) / total * (1 - tail))) }
            // Float64 reference of the loss.
            let zMax = Double(z.max()!)
            let normaliser = z.reduce(0.0) { $0 + exp(Double($1) - zMax) }
            let q = z.map { exp(Double($0) - zMax) / normaliser }
            let topSet = Set(ids.map(Int.init))
            let qTail = q.indices.filter { !topSet.contains($0) }.reduce(0.0) { $0 + q[$1] }
            var expected = tail * (log(tail) - log(qTail))
            for (j, id) in ids.enumerated() { expected += exp(Double(logProbs[j])) * (Double(logProbs[j]) - log(q[Int(id)])) }
            var top32 = 0.0
            var row = z
            let loss = row.withUnsafeMutableBufferPointer { r in
                ids.withUnsafeBufferPointer { i in
                    logProbs.withUnsafeBufferPointer { l in
                        distillationStep(r.baseAddress!, count: n, ids: i.baseAddress!, logProbs: l.baseAddress!, k: k,
                                         tailLogMass: Float(log(tail)), gradientScale: 1)
                    }
                }
            }
            var softmaxRow = z
            softmaxRow.withUnsafeMutableBufferPointer { softmax($0.baseAddress!, count: n) }
            for id in ids { top32 += Double(softmaxRow[Int(id)]) }
            if top32 >= 1 { roundedPastOne += 1 }
            let l1 = row.reduce(0.0) { $0 + abs(Double($1)) }
            XCTAssertLessThanOrEqual(l1, 2.001, "top mass \(top32)")
            XCTAssertEqual(loss, expected, accuracy: 1e-4 * max(1, abs(expected)), "top mass \(top32)")
        }
        XCTAssertGreaterThan(roundedPastOne, 0, "no row reached the case")
    }

    /// With a hard label the loss is (1 − α)·(merged KL) + α·(−log q_t) and the returned row its
    /// gradient: against a Float64 reference and its central differences, the next token in the
    /// teacher's top k and in its tail; α = 0 returns exactly the plain distillation row.
    func testHardLabelMixesCrossEntropyIntoTheLossAndItsGradient() {
        var rng = SeededRandom(seed: 5)
        let n = 40, k = 5, ids: [Int32] = [3, 17, 8, 30, 21]
        let teacherTop = (0..<k).map { _ in 0.2 + Double(rng.nextFloat()) }, tail = 0.15
        let total = teacherTop.reduce(0, +)
        let logProbs = teacherTop.map { Float(log($0 / total * (1 - tail))) }
        let z = (0..<n).map { _ in 3 * rng.nextFloat() - 1.5 }
        func reference(_ z: [Double], next: Int, alpha: Double) -> Double {
            let m = z.max()!, logZ = m + log(z.reduce(0.0) { $0 + exp($1 - m) })
            var kl = 0.0, topQ = 0.0
            for (j, id) in ids.enumerated() {
                let logP = Double(logProbs[j]), logQ = z[Int(id)] - logZ
                kl += exp(logP) * (logP - logQ)
                topQ += exp(logQ)
            }
            kl += tail * (log(tail) - log(1 - topQ))
            return (1 - alpha) * kl - alpha * (z[next] - logZ)
        }
        func step(next: Int?, alpha: Float) -> (loss: Double, row: [Float]) {
            var row = z
            let loss = row.withUnsafeMutableBufferPointer { r in
                ids.withUnsafeBufferPointer { i in
                    logProbs.withUnsafeBufferPointer { l in
                        distillationStep(r.baseAddress!, count: n, ids: i.baseAddress!, logProbs: l.baseAddress!, k: k,
                                         tailLogMass: Float(log(tail)), gradientScale: 1, nextToken: next, hardLabelWeight: alpha)
                    }
                }
            }
            return (loss, row)
        }
        for next in [17, 12] {   // in the teacher's top k; in its tail
            for alpha in [0.3, 1.0] {
                let (loss, row) = step(next: next, alpha: Float(alpha))
                let zd = z.map(Double.init)
                XCTAssertEqual(loss, reference(zd, next: next, alpha: alpha), accuracy: 1e-5)
                for i in 0..<n {
                    var up = zd, down = zd
                    up[i] += 1e-4
                    down[i] -= 1e-4
                    let numeric = (reference(up, next: next, alpha: alpha) - reference(down, next: next, alpha: alpha)) / 2e-4
                    XCTAssertEqual(Double(row[i]), numeric, accuracy: 2e-5, "logit \(i), next \(next), α \(alpha)")
                }
            }
        }
        let plain = step(next: nil, alpha: 0), zeroWeight = step(next: 12, alpha: 0)
        XCTAssertEqual(plain.row, zeroWeight.row)
        XCTAssertEqual(plain.loss, zeroWeight.loss)
        XCTAssertNotEqual(step(next: 12, alpha: 0.3).row, plain.row)
    }

    func testTeacherTargetsAreTheTopTokensAndTheRestOfTheMass() throws {
        let targets = try teacher()
        XCTAssertEqual(targets.positions, tokens.count)
        let model = try LlamaModel(weights: TinyModel.weights(seed: 31))
        let state = model.makeState(maxPositions: tokens.count)
        model.forward(tokens, state: state, logits: .all)
        for t in 0..<targets.positions {
            let logits = Array(state.logits(row: t)).map(Double.init)
            let m = logits.max()!, logZ = m + Foundation.log(logits.reduce(0.0) { $0 + Foundation.exp($1 - m) })
            let ids = targets.ids[(t * targets.k)..<((t + 1) * targets.k)].map(Int.init)
            // The k most likely tokens, most likely first, with their log-probabilities.
            XCTAssertEqual(ids, Array(logits.indices.sorted { logits[$0] > logits[$1] }.prefix(targets.k)), "position \(t)")
            for (j, id) in ids.enumerated() {
                XCTAssertEqual(Double(targets.logProbs[t * targets.k + j]), logits[id] - logZ, accuracy: 1e-4)
            }
            let mass = ids.indices.reduce(0.0) { $0 + Foundation.exp(Double(targets.logProbs[t * targets.k + $1])) }
                + Foundation.exp(Double(targets.tailLogMass[t]))
            XCTAssertEqual(mass, 1, accuracy: 1e-5, "position \(t)")
        }
    }
}
