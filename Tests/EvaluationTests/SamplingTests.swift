import Checkpoint
import Foundation
import Evaluation
import Kernels
import Llama
import XCTest

final class SamplingTests: XCTestCase {
    func draw(_ logits: [Float], _ options: SamplingOptions, times: Int) -> [Int] {
        var sampler = TokenSampler(options: options)
        return logits.withUnsafeBufferPointer { row in (0..<times).map { _ in sampler.sample(row) } }
    }

    func testTemperatureZeroIsArgmax() {
        XCTAssertEqual(draw([0.1, 3, -2, 2.9], SamplingOptions(temperature: 0, seed: 5), times: 20), Array(repeating: 1, count: 20))
    }

    func testSameSeedSameDraws() {
        let logits: [Float] = (0..<50).map { Float($0 % 7) * 0.3 }
        let a = draw(logits, SamplingOptions(temperature: 1, topP: 0.9, seed: 7), times: 200)
        XCTAssertEqual(a, draw(logits, SamplingOptions(temperature: 1, topP: 0.9, seed: 7), times: 200))
        XCTAssertNotEqual(a, draw(logits, SamplingOptions(temperature: 1, topP: 0.9, seed: 8), times: 200))
    }

    /// Frequencies follow softmax(logits / T) (20,000 draws: standard error ≈ 0.0035).
    func testDrawsFollowTheTemperedDistribution() {
        let logits: [Float] = [0, Float(Foundation.log(2.0)), Float(Foundation.log(3.0)), Float(Foundation.log(4.0))]
        let draws = draw(logits, SamplingOptions(temperature: 1, topP: 1, seed: 9), times: 20_000)
        for (token, p) in [0.1, 0.2, 0.3, 0.4].enumerated() {
            XCTAssertEqual(Double(draws.filter { $0 == token }.count) / 20_000, p, accuracy: 0.015)
        }
        // T = 0.5 squares the odds: 1 : 4 : 9 : 16.
        let sharp = draw(logits, SamplingOptions(temperature: 0.5, topP: 1, seed: 10), times: 20_000)
        XCTAssertEqual(Double(sharp.filter { $0 == 3 }.count) / 20_000, 16.0 / 30, accuracy: 0.015)
    }

    /// top-p keeps the smallest most-likely prefix reaching p: {3, 2} for p = 0.6 here.
    func testNucleusKeepsTheMostLikelyPrefix() {
        let logits: [Float] = [0, Float(Foundation.log(2.0)), Float(Foundation.log(3.0)), Float(Foundation.log(4.0))]
        let draws = draw(logits, SamplingOptions(temperature: 1, topP: 0.6, seed: 11), times: 10_000)
        XCTAssertEqual(Set(draws), [2, 3])
        XCTAssertEqual(Double(draws.filter { $0 == 3 }.count) / 10_000, 4.0 / 7, accuracy: 0.02)
        XCTAssertEqual(Set(draw(logits, SamplingOptions(temperature: 1, topP: 0.01, seed: 12), times: 100)), [3])
    }

    func testGenerationIsDeterministicAndStopsAtStopTokens() throws {
        let model = try LlamaModel(weights: TinyModel.weights(seed: 41))
        let prompt = [10, 20, 30]
        let options = GenerationOptions(maxNewTokens: 12, sampling: SamplingOptions(temperature: 0.9, topP: 0.95, seed: 3))
        var streamed: [Int] = []
        let first = try generate(model: model, prompt: prompt, options: options) { streamed.append($0) }
        XCTAssertEqual(first.ids.count, 12)
        XCTAssertEqual(first.stopReason, "length")
        XCTAssertEqual(streamed, first.ids)
        XCTAssertEqual(try generate(model: model, prompt: prompt, options: options).ids, first.ids)

        var stopping = options
        stopping.stopTokens = [first.ids[4]]
        let stopped = try generate(model: model, prompt: prompt, options: stopping)
        let cut = first.ids.firstIndex(of: first.ids[4])!
        XCTAssertEqual(stopped.ids, Array(first.ids[0..<cut]))
        XCTAssertEqual(stopped.stopReason, "eos")

        // Greedy generation is the argmax of a full forward pass at each step.
        let greedy = try generate(model: model, prompt: prompt, options: GenerationOptions(maxNewTokens: 5))
        var sequence = prompt
        for _ in 0..<5 {
            let state = model.makeState(maxPositions: sequence.count)
            model.forward(sequence, state: state, logits: .last)
            sequence.append(argmax(state.logits(row: 0).baseAddress!, count: model.config.vocabSize))
        }
        XCTAssertEqual(greedy.ids, Array(sequence[3...]))
        XCTAssertThrowsError(try generate(model: model, prompt: [], options: options))
        XCTAssertThrowsError(try generate(model: model, prompt: prompt, options: GenerationOptions(maxNewTokens: 126)))
    }
}
