import Kernels
import Quantizer
import XCTest

/// The OA-EM-style initialisation (`--init oa-em`): EM rounds under the g×g diagonal blocks of XᵀX.
final class OutputAwareEMTests: XCTestCase {
    private let scheme = AQLMScheme(codebookCount: 2, codeBits: 6, groupSize: 8)

    /// Block-diagonal H whose every 8×8 block is (1−ρ)I + ρ·u uᵀ with a random sign vector u per
    /// group: the diagonal is exactly 1 (diag(H)-weighted k-means sees an isotropic problem),
    /// while an error along u costs 1 + 7ρ and across it 1 − ρ, 150x less at ρ = 0.95.
    private func anisotropicProblem(dOut: Int = 64, dIn: Int = 64, rho: Double = 0.95) throws -> (LayerProblem, [Double]) {
        var rng = SeededRandom(seed: 21)
        var hessian = [Double](repeating: 0, count: dIn * dIn)
        for j in 0..<(dIn / 8) {
            let signs = (0..<8).map { _ in rng.nextFloat() < 0.5 ? -1.0 : 1.0 }
            for a in 0..<8 {
                for b in 0..<8 {
                    hessian[(j * 8 + a) * dIn + j * 8 + b] = (a == b ? 1 - rho : 0) + rho * signs[a] * signs[b]
                }
            }
        }
        let weight = Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: 22)
        return (try LayerProblem(weight: weight, dOut: dOut, dIn: dIn, hessian: hessian), hessian)
    }

    private func relativeError(_ code: AdditiveCode, _ problem: LayerProblem, _ hessian: [Double]) -> Double {
        relativeHessianWeightedError(weight: problem.weight, approximation: code.dequantized(), hessian: hessian,
                                     dOut: problem.dOut, dIn: problem.dIn)
    }

    /// The H-weighted EM start must beat both today's start (diag-weighted product k-means) and
    /// the same EM under an identity metric, on the true objective. Both comparisons fail if the
    /// block metric is not what the EM rounds minimise.
    func testBlockWeightedEMBeatsDiagonalAndUnweightedStartsUnderAnisotropicH() throws {
        let (problem, hessian) = try anisotropicProblem()
        var options = AQLMOptions()
        options.kmeansIterations = 10
        let weighted = try outputAwareEMInitialization(problem: problem, scheme: scheme, options: options)
        let product = try productKMeansInitialization(problem: problem, scheme: scheme, options: options)
        let unweightedProblem = try LayerProblem(weight: problem.weight, dOut: problem.dOut, dIn: problem.dIn,
                                                 hessian: Synthetic.identity(problem.dIn))
        let unweighted = try outputAwareEMInitialization(problem: unweightedProblem, scheme: scheme, options: options)
        let e = relativeError(weighted, problem, hessian)
        let p = relativeError(product, problem, hessian)
        let u = relativeError(unweighted, problem, hessian)
        print("OA-EM init, anisotropic H: weighted \(e), product k-means \(p), identity-metric EM \(u)")
        XCTAssertLessThan(e, 0.8 * p)
        XCTAssertLessThan(e, 0.8 * u)
    }

    /// With a block-diagonal H the block metric is the layer objective itself, and every E and M
    /// step is monotone in it: more rounds never raise it; zero rounds is the product start.
    func testMoreRoundsNeverRaiseTheObjectiveUnderBlockDiagonalH() throws {
        let (problem, hessian) = try anisotropicProblem(rho: 0.8)
        var options = AQLMOptions()
        options.kmeansIterations = 5
        options.emIterations = 0
        let start = try outputAwareEMInitialization(problem: problem, scheme: scheme, options: options)
        XCTAssertEqual(start, try productKMeansInitialization(problem: problem, scheme: scheme, options: options))
        var previous = relativeError(start, problem, hessian)
        for rounds in [1, 2, 4, 8] {
            options.emIterations = rounds
            let error = relativeError(try outputAwareEMInitialization(problem: problem, scheme: scheme, options: options), problem, hessian)
            XCTAssertLessThanOrEqual(error, previous * (1 + 1e-5), "\(rounds) rounds")
            previous = error
        }
    }

    /// Same seed: the same code on one thread and on two; another seed: another code.
    func testDeterministicPerSeedOnAnyThreadCount() throws {
        let dOut = 256, dIn = 256
        let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: 23), dOut: dOut, dIn: dIn,
                                       hessian: Synthetic.activationHessian(dIn: dIn, tokens: 512, seed: 24))
        var options = AQLMOptions()
        options.kmeansIterations = 3
        options.emIterations = 3
        let saved = Threads.count
        defer { Threads.count = saved }
        Threads.count = 2
        let first = try outputAwareEMInitialization(problem: problem, scheme: .preset2x8, options: options)
        Threads.count = 1
        let serial = try outputAwareEMInitialization(problem: problem, scheme: .preset2x8, options: options)
        XCTAssertEqual(first, serial)
        options.seed = 1
        let reseeded = try outputAwareEMInitialization(problem: problem, scheme: .preset2x8, options: options)
        XCTAssertNotEqual(first.codes, reseeded.codes)
    }
}
