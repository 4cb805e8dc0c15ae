import Kernels
import Quantizer
import XCTest

/// The linearised V step's per-group proposals (`aqlm finetune --code-select gain`).
final class LinearizedCodeStepTests: XCTestCase {
    /// On the quadratic loss f(Ŵ) = ½ tr((Ŵ−T) H (Ŵ−T)ᵀ), G = (Ŵ−T)H and trust 1, the model
    /// G·δ + ½ δᵀH_jjδ of a one-group change is exact: every proposal's predicted change must be
    /// negative and equal the true change of applying it alone.
    func testProposalsPredictTheExactChangeOfAQuadraticLoss() throws {
        let dOut = 16, dIn = 32
        let scheme = AQLMScheme(codebookCount: 2, codeBits: 6, groupSize: 8)
        let hessianD = Synthetic.activationHessian(dIn: dIn, tokens: 4 * dIn, seed: 31)
        let hessian = hessianD.map { Float($0) }
        let target = Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: 32)
        var options = AQLMOptions()
        options.kmeansIterations = 3
        // Codes fitted to other weights, so the target is far and many changes pay off.
        let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: 33), dOut: dOut, dIn: dIn,
                                       hessian: hessianD)
        let code = try productKMeansInitialization(problem: problem, scheme: scheme, options: options)
        func loss(_ c: AdditiveCode) -> Double {
            0.5 * hessianWeightedError(weight: target, approximation: c.dequantized(), hessian: hessianD, dOut: dOut, dIn: dIn)
        }
        let current = code.dequantized()
        var residual = [Float](repeating: 0, count: dOut * dIn)
        for i in residual.indices { residual[i] = current[i] - target[i] }
        var gradient = [Float](repeating: 0, count: dOut * dIn)
        for r in 0..<dOut {
            for b in 0..<dIn {
                var sum: Float = 0
                for a in 0..<dIn { sum += residual[r * dIn + a] * hessian[a * dIn + b] }
                gradient[r * dIn + b] = sum
            }
        }
        let proposals = linearizedCodeProposals(code, gradient: gradient, hessian: hessian, trust: 1)
        XCTAssertGreaterThan(proposals.count, dOut)
        let base = loss(code)
        for p in proposals.prefix(40) {
            XCTAssertLessThan(p.predictedChange, 0)
            var changed = code
            changed.codes[(p.row * code.groupsPerRow + p.group) * 2 + p.codebook] = p.code
            let actual = loss(changed) - base
            XCTAssertEqual(Double(p.predictedChange), actual, accuracy: 1e-3 * abs(actual) + 1e-5 * base)
        }
    }
}
