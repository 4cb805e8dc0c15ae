import XCTest
import Foundation
import Calibration
import Checkpoint
import Kernels
import Llama
import Quantizer
import Tokenizer

/// The point of the method, on real layers of the default model: codes chosen against the
/// layer's XᵀX (the activation-weighted error ‖WX − ŴX‖²) reproduce the layer's outputs better
/// than codes chosen for plain weight MSE (H = I), measured under XᵀX from the calibration
/// sequences and, separately, from held-out sequences the codes never saw.
final class RealLayerObjectiveTests: XCTestCase {
    /// Layers with different inputs: the normalised block input (v_proj) and the SwiGLU hidden
    /// state (down_proj), whose few large channels plain MSE ignores.
    static let layers: [(block: Int, linear: LlamaLinear)] = [(3, .v), (3, .down)]

    func testActivationWeightedCodesBeatPlainMSECodesOnRealLayers() throws {
        let path = ModelPaths.defaultModel
        try XCTSkipUnless(FileManager.default.fileExists(atPath: path), "run tools/setup.sh first")
        let weights = try loadCheckpoint(path)
        let model = try LlamaModel(weights: weights)
        let text = try CalibrationSource.resolve("wikitext2-valid")
        let tokens = try BPETokenizer(spec: weights.tokenizer).encode([UInt8](XCTUnwrap(FileManager.default.contents(atPath: text))))

        // Calibration H (16 × 512 tokens) and held-out H (8 × 512) from different seeds.
        func hessians(seed: UInt64, samples: Int) throws -> [Int: [Double]] {
            var rng = SeededRandom(seed: seed)
            let sequences = try sampleCalibrationSequences(tokens: tokens, samples: samples, length: 512, source: text, using: &rng)
            var accumulators = Self.layers.indices.reduce(into: [Int: HessianAccumulator]()) { acc, i in
                acc[i] = HessianAccumulator(dim: Self.layers[i].linear.input == .mlpHidden ? model.config.intermediateSize : model.config.hiddenSize)
            }
            let state = model.makeState(maxPositions: 512)
            for sequence in sequences {
                state.reset()
                model.forward(sequence, state: state) { input in
                    for (i, layer) in Self.layers.enumerated() where layer.block == input.layer && layer.linear.input == input.site {
                        accumulators[i]!.add(input.rows.baseAddress!, rows: input.tokens)
                    }
                }
            }
            return accumulators.mapValues { $0.hessian() }
        }
        let calibration = try hessians(seed: 0, samples: 16), heldOut = try hessians(seed: 1, samples: 8)

        for (i, layer) in Self.layers.enumerated() {
            let w = weights[layer.linear.weightName(layer: layer.block)]
            let (dOut, dIn) = (w.shape[0], w.shape[1])
            let identity = (0..<(dIn * dIn)).map { $0 / dIn == $0 % dIn ? 1.0 : 0.0 }
            let weighted = try quantizeLinear(weight: w.values, dOut: dOut, dIn: dIn, hessian: calibration[i]!).dequantized()
            let plain = try quantizeLinear(weight: w.values, dOut: dOut, dIn: dIn, hessian: identity).dequantized()

            func error(_ approximation: [Float], _ h: [Double]) -> Double {
                relativeHessianWeightedError(weight: w.values, approximation: approximation, hessian: h, dOut: dOut, dIn: dIn)
            }
            let name = "block \(layer.block) \(layer.linear)"
            print(String(format: "%@: ‖WX−ŴX‖²/‖WX‖² calibration %.5f (XᵀX codes) vs %.5f (MSE codes), held out %.5f vs %.5f; plain MSE %.5f vs %.5f",
                         name, error(weighted, calibration[i]!), error(plain, calibration[i]!), error(weighted, heldOut[i]!),
                         error(plain, heldOut[i]!), error(weighted, identity), error(plain, identity)))
            // Each set of codes wins on its own objective...
            XCTAssertLessThan(error(weighted, calibration[i]!), 0.9 * error(plain, calibration[i]!), name)
            XCTAssertLessThan(error(plain, identity), error(weighted, identity), name)
            // ...and the activation-weighted codes keep a lead on activations they never saw (a
            // smaller one: 16 sequences pin down a 1536-wide XᵀX only roughly).
            XCTAssertLessThan(error(weighted, heldOut[i]!), error(plain, heldOut[i]!), name)
        }
    }
}
