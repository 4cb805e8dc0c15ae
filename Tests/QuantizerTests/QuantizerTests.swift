import Kernels
import Quantizer
import XCTest

final class QuantizerTests: XCTestCase {
    /// A small layer with a dense SPD Hessian and 2x6 g8 codes (64 codes per codebook).
    private func smallProblem(dOut: Int = 32, dIn: Int = 64, seed: UInt64 = 1) throws -> (LayerProblem, [Double]) {
        let hessian = Synthetic.activationHessian(dIn: dIn, tokens: 4 * dIn, seed: seed &+ 100)
        let weight = Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: seed)
        return (try LayerProblem(weight: weight, dOut: dOut, dIn: dIn, hessian: hessian), hessian)
    }

    private let smallScheme = AQLMScheme(codebookCount: 2, codeBits: 6, groupSize: 8)

    private func initialCode(_ problem: LayerProblem, scheme: AQLMScheme? = nil) throws -> AdditiveCode {
        var options = AQLMOptions()
        options.kmeansIterations = 4
        options.seed = 7
        return try residualKMeansInitialization(problem: problem, scheme: scheme ?? smallScheme, options: options)
    }

    private func directError(_ code: AdditiveCode, _ problem: LayerProblem, _ hessian: [Double]) -> Double {
        hessianWeightedError(weight: problem.weight, approximation: code.dequantized(), hessian: hessian,
                             dOut: problem.dOut, dIn: problem.dIn)
    }

    func testTrackedSearchObjectiveEqualsDirectTrace() throws {
        let (problem, hessian) = try smallProblem()
        let start = try initialCode(problem)
        for beam in [1, 4] {
            let result = searchCodes(start, problem: problem, beamSize: beam, seed: 3)
            let direct = directError(result.code, problem, hessian)
            XCTAssertGreaterThan(result.changedCodes, 0, "beam \(beam): the search should change codes after k-means")
            XCTAssertEqual(result.trackedObjective, direct, accuracy: 1e-4 * direct, "beam \(beam)")
            XCTAssertLessThan(direct, directError(start, problem, hessian), "beam \(beam) must improve on k-means codes")
        }
    }

    /// PV-tuning's V step searches a subspace: only the selected (row, group) pairs may change,
    /// and the searched objective (toward moved weights) never increases, for any beam.
    func testSubspaceSearchTouchesOnlySelectedGroupsAndNeverIncreasesTheObjective() throws {
        let (problem, hessian) = try smallProblem(seed: 4)
        let start = searchCodes(try initialCode(problem), problem: problem, beamSize: 4, seed: 1).code
        // The V step's target: the current reconstruction moved by a random step.
        var rng = SeededRandom(seed: 9)
        let target = start.dequantized().map { $0 + 0.5 * rng.nextGaussian() }
        let moved = try LayerProblem(weight: target, dOut: problem.dOut, dIn: problem.dIn, hessian: hessian)
        let groups = start.groupsPerRow, books = start.scheme.codebookCount
        let mask = (0..<(problem.dOut * groups)).map { _ in rng.nextFloat() < 0.2 }
        for beam in [1, 4] {
            let result = searchCodes(start, problem: moved, beamSize: beam, seed: 3, selectedGroups: mask)
            let before = directError(start, moved, hessian), after = directError(result.code, moved, hessian)
            XCTAssertGreaterThan(result.changedCodes, 0, "beam \(beam)")
            XCTAssertLessThan(after, before, "beam \(beam)")
            XCTAssertEqual(result.trackedObjective, after, accuracy: 1e-4 * after, "beam \(beam)")
            for r in 0..<problem.dOut {
                for j in 0..<groups where !mask[r * groups + j] {
                    for m in 0..<books {
                        let i = (r * groups + j) * books + m
                        XCTAssertEqual(result.code.codes[i], start.codes[i], "row \(r) group \(j) was not selected")
                    }
                }
            }
        }
        // Nothing selected: nothing changes.
        let none = searchCodes(start, problem: moved, beamSize: 4, seed: 3, selectedGroups: mask.map { _ in false })
        XCTAssertEqual(none.code.codes, start.codes)
    }

    func testWiderBeamFindsNoWorseCodes() throws {
        let (problem, hessian) = try smallProblem(seed: 2)
        let start = try initialCode(problem)
        let greedy = directError(searchCodes(start, problem: problem, beamSize: 1, seed: 5).code, problem, hessian)
        let beam = directError(searchCodes(start, problem: problem, beamSize: 8, seed: 5).code, problem, hessian)
        XCTAssertLessThan(beam, greedy)
    }

    func testObjectiveNeverIncreasesAcrossAlternations() throws {
        let (problem, _) = try smallProblem(seed: 3)
        var options = AQLMOptions()
        options.beamSize = 2
        options.maxIterations = 5
        options.tolerance = 0
        options.kmeansIterations = 3
        let result = try quantizeLinear(problem, scheme: smallScheme, options: options)
        XCTAssertEqual(result.history.count, 5)
        // Steps report objectives derived in Float32 arithmetic (the search's tracked error, Ŵ·H
        // carried through the codebook solve), so consecutive figures agree to ~1e-7 relative.
        var previous = result.initialError.absolute
        for record in result.history {
            for step in [record.afterCodes, record.afterCodebooks, record.afterScales] {
                XCTAssertLessThanOrEqual(step.absolute, previous * (1 + 1e-6), "iteration \(record.iteration)")
                previous = step.absolute
            }
        }
        XCTAssertLessThan(result.finalError.absolute, 0.8 * result.initialError.absolute)
        XCTAssertEqual(result.finalError.absolute, problem.error(of: result.dequantized()), accuracy: 1e-6 * previous)
    }

    func testLeastSquaresCodebooksBeatPerturbations() throws {
        let (problem, hessian) = try smallProblem(seed: 4)
        let start = searchCodes(try initialCode(problem), problem: problem, beamSize: 1, seed: 1).code
        let exact = solveCodebooks(start, problem: problem, solver: .cholesky)
        let best = directError(exact, problem, hessian)
        XCTAssertLessThan(best, directError(start, problem, hessian))
        var rng = SeededRandom(seed: 9)
        let spread = exact.codebooks.map { abs($0) }.reduce(0, +) / Float(exact.codebooks.count)
        for trial in 0..<10 {
            var perturbed = exact
            let size: Float = trial < 5 ? 1e-2 : 1e-3
            for i in perturbed.codebooks.indices { perturbed.codebooks[i] += size * spread * rng.nextGaussian() }
            XCTAssertGreaterThan(directError(perturbed, problem, hessian), best, "perturbation \(trial)")
        }
        // The matrix-free solver reaches the same minimum.
        let iterative = solveCodebooks(start, problem: problem, solver: .conjugateGradient, maxIterations: 1000, tolerance: 0)
        XCTAssertEqual(directError(iterative, problem, hessian), best, accuracy: 1e-4 * best)
    }

    func testClosedFormScalesBeatPerturbations() throws {
        let (problem, hessian) = try smallProblem(seed: 5)
        let start = try initialCode(problem)
        let solved = solveScales(start, problem: problem)
        let best = directError(solved, problem, hessian)
        XCTAssertLessThan(best, directError(start, problem, hessian))
        var rng = SeededRandom(seed: 10)
        for trial in 0..<10 {
            var perturbed = solved
            for r in perturbed.scales.indices { perturbed.scales[r] *= 1 + 1e-3 * rng.nextGaussian() }
            XCTAssertGreaterThan(directError(perturbed, problem, hessian), best, "perturbation \(trial)")
        }
    }

    func testDeadCodesAreRestartedAndAdopted() throws {
        let (problem, hessian) = try smallProblem(seed: 6)
        var code = try initialCode(problem)
        // Force codebook 0 onto its first 16 codes only: codes 16..<64 become dead.
        for i in stride(from: 0, to: code.codes.count, by: 2) { code.codes[i] %= 16 }
        let before = directError(code, problem, hessian)
        let restarts = restartDeadCodes(&code, problem: problem, iteration: 1)
        XCTAssertEqual(restarts.count, 1)
        XCTAssertEqual(restarts.first?.codebook, 0)
        XCTAssertEqual(restarts.first?.codes, Array(16..<64))
        XCTAssertEqual(directError(code, problem, hessian), before, accuracy: 1e-9 * before, "re-seeding unused codes changes nothing")
        let searched = searchCodes(code, problem: problem, beamSize: 1, seed: 2).code
        let adopted = searched.usage()[0].counts[16..<64].filter { $0 > 0 }.count
        XCTAssertGreaterThan(adopted, 24, "most re-seeded codes should be taken up by the next search")
        // The engine reports restarts in its result when a codebook has dead codes.
        var options = AQLMOptions()
        options.maxIterations = 2
        options.beamSize = 1
        let tiny = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: 4, dIn: 64, seed: 1), dOut: 4, dIn: 64,
                                    hessian: Synthetic.identity(64))
        let result = try quantizeLinear(tiny, scheme: smallScheme, options: options)  // 32 groups < 64 codes
        XCTAssertFalse(result.restarts.isEmpty)
    }

    func testSameSeedGivesSameResultOnAnyThreadCount() throws {
        // Large enough that k-means, the search and the codebook solve all split their work.
        let dOut = 256, dIn = 256
        let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: 8), dOut: dOut, dIn: dIn,
                                       hessian: Synthetic.activationHessian(dIn: dIn, tokens: 512, seed: 9))
        var options = AQLMOptions()
        options.beamSize = 2
        options.maxIterations = 2
        options.kmeansIterations = 3
        let saved = Threads.count
        defer { Threads.count = saved }
        Threads.count = 2
        let first = try quantizeLinear(problem, scheme: .preset2x8, options: options)
        let second = try quantizeLinear(problem, scheme: .preset2x8, options: options)
        Threads.count = 1
        let serial = try quantizeLinear(problem, scheme: .preset2x8, options: options)
        for other in [second, serial] {
            XCTAssertEqual(first.codes, other.codes)
            XCTAssertEqual(first.codebooks, other.codebooks)
            XCTAssertEqual(first.scales, other.scales)
        }
        Threads.count = saved
        options.seed = 1
        let reseeded = try quantizeLinear(problem, scheme: .preset2x8, options: options)
        XCTAssertNotEqual(first.codes, reseeded.codes)
    }

    func testWeightedKMeansBeatsUnweightedUnderSkewedDiagonal() throws {
        let dOut = 64, dIn = 128
        let hessian = Synthetic.skewedDiagonalHessian(dIn: dIn, skew: 2, seed: 11)
        let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: 12), dOut: dOut, dIn: dIn,
                                       hessian: hessian)
        var options = AQLMOptions()
        options.kmeansIterations = 10
        let weighted = try quantizeResidualVQ(problem, scheme: smallScheme, options: options)
        options.weightedInitialization = false
        let unweighted = try quantizeResidualVQ(problem, scheme: smallScheme, options: options)
        XCTAssertLessThan(weighted.finalError.relative, 0.9 * unweighted.finalError.relative)
    }

    func testWeightedKMeansLowersItsObjective() {
        var rng = SeededRandom(seed: 13)
        let points = (0..<(2000 * 4)).map { _ in rng.nextGaussian() }
        let weights = (0..<(2000 * 4)).map { _ in rng.nextFloat() + 0.1 }
        let short = weightedKMeans(points: points, weights: weights, dims: 4, clusters: 32, iterations: 0, seed: 1)
        let long = weightedKMeans(points: points, weights: weights, dims: 4, clusters: 32, iterations: 15, seed: 1)
        XCTAssertLessThan(long.objective, 0.95 * short.objective)
        // The reported objective is the weighted distance at the returned assignment.
        var direct = 0.0
        for i in 0..<2000 {
            let c = Int(long.assignments[i])
            for a in 0..<4 {
                let d = points[i * 4 + a] - long.centroids[c * 4 + a]
                direct += Double(weights[i * 4 + a] * d * d)
            }
        }
        XCTAssertEqual(long.objective, direct, accuracy: 1e-3 * direct)
        XCTAssertEqual(Set(long.assignments).count, 32, "no cluster is left empty")
    }

    func testSchemeParsingAndBitsPerWeight() throws {
        let parsed = try AQLMScheme(parsing: "2x8")
        XCTAssertEqual([parsed.codebookCount, parsed.codeBits, parsed.groupSize], [2, 8, 8])
        let wide = try AQLMScheme(parsing: "1x16")
        XCTAssertEqual([wide.codebookCount, wide.codeBits, wide.groupSize], [1, 16, 8])
        let grouped = try AQLMScheme(parsing: "2x8g16")
        XCTAssertEqual([grouped.codebookCount, grouped.codeBits, grouped.groupSize], [2, 8, 16])
        XCTAssertEqual(AQLMScheme.presets.map(\.name), ["2x8", "1x8", "3x8", "4x8", "1x16"])
        for bad in ["2x", "x8", "2x8g5", "2x8g", "0x8", "2x17", "two"] {
            XCTAssertThrowsError(try AQLMScheme(parsing: bad), bad)
        }
        // 2x8 g8 on [1536, 576]: 2 codes of 8 bits per 8 weights, plus 2·256·8 Float16 codebook
        // entries and 1536 Float16 scales spread over 1536·576 weights.
        let weights = 1536.0 * 576.0
        let expected = 2.0 + (2 * 256 * 8 * 16 + 1536 * 16) / weights
        XCTAssertEqual(AQLMScheme.preset2x8.bitsPerWeight(dOut: 1536, dIn: 576), expected, accuracy: 1e-12)
        XCTAssertEqual(expected, 2.1019, accuracy: 1e-4)
        XCTAssertThrowsError(try AQLMScheme.preset2x8.validate(dOut: 4, dIn: 60))
    }

    func testRoundToNearestBaselines() throws {
        let dOut = 16, dIn = 128
        let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: 14), dOut: dOut, dIn: dIn,
                                       hessian: Synthetic.identity(dIn))
        var errors = [Double]()
        for bits in [2, 3, 4] {
            let rtn = try quantizeRoundToNearest(problem, bits: bits)
            XCTAssertEqual(rtn.bitsPerWeight, Double(bits) + 0.5)
            let approx = rtn.dequantized()
            for i in 0..<(dOut * dIn) {
                let step = rtn.scales[i / 64]
                XCTAssertLessThanOrEqual(abs(approx[i] - problem.weight[i]), 0.5 * step + 1e-2 * step + 1e-3)
            }
            errors.append(rtn.finalError.relative)
        }
        XCTAssertGreaterThan(errors[0], errors[1])
        XCTAssertGreaterThan(errors[1], errors[2])
        XCTAssertThrowsError(try quantizeRoundToNearest(problem, bits: 2, groupSize: 48))
    }

    func testProductQuantizationCodesDisjointSlices() throws {
        let (problem, _) = try smallProblem(seed: 15)
        let pq = try quantizeProductVQ(problem, scheme: smallScheme)
        let code = try XCTUnwrap(pq.additiveCode)
        // Codebook 0 is zero on the second half of each group, codebook 1 on the first half.
        for c in 0..<64 {
            for a in 0..<8 {
                let v0 = code.codebooks[c * 8 + a], v1 = code.codebooks[(64 + c) * 8 + a]
                if a >= 4 { XCTAssertEqual(v0, 0) } else { XCTAssertEqual(v1, 0) }
            }
        }
        XCTAssertEqual(pq.finalError.absolute, problem.error(of: pq.dequantized()), accuracy: 1e-6 * pq.finalError.absolute)
        let codeBits = 2.0 * 6 / 8
        XCTAssertEqual(pq.bitsPerWeight, codeBits + (2 * 64 * 4 * 16 + 32 * 16) / Double(32 * 64), accuracy: 1e-12)
        let aqlm = try quantizeLinear(problem, scheme: smallScheme)
        XCTAssertLessThan(aqlm.finalError.relative, pq.finalError.relative)
    }

    func testEverySchemeShapeQuantizes() throws {
        let dOut = 32, dIn = 64
        let hessian = Synthetic.activationHessian(dIn: dIn, tokens: 256, seed: 21)
        let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: 22), dOut: dOut, dIn: dIn,
                                       hessian: hessian)
        var options = AQLMOptions()
        options.beamSize = 2
        options.maxIterations = 2
        options.kmeansIterations = 3
        // 3x5: uneven product slices (2, 3, 3); 1x12: 32768 codebook unknowns, solved by CG.
        for text in ["1x6", "3x5", "4x4g4", "2x5g16", "1x12"] {
            let scheme = try AQLMScheme(parsing: text)
            let result = try quantizeLinear(problem, scheme: scheme, options: options)
            XCTAssertEqual(result.codes.count, dOut * dIn / scheme.groupSize * scheme.codebookCount, text)
            XCTAssertTrue(result.codes.allSatisfy { Int($0) < scheme.codebookSize }, text)
            XCTAssertEqual(result.codebooks.count, scheme.codebookCount * scheme.codebookSize * scheme.groupSize, text)
            XCTAssertLessThanOrEqual(result.finalError.absolute, result.initialError.absolute, text)
            XCTAssertLessThan(result.finalError.relative, 0.3, text)
            XCTAssertEqual(result.finalError.absolute, hessianWeightedError(weight: problem.weight, approximation: result.dequantized(),
                                                                            hessian: hessian, dOut: dOut, dIn: dIn),
                           accuracy: 1e-4 * result.finalError.absolute, text)
        }
    }

    func testOneBy16RunsOnATinyLayer() throws {
        let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: 4, dIn: 32, seed: 23), dOut: 4, dIn: 32,
                                       hessian: Synthetic.identity(32))
        var options = AQLMOptions()
        options.beamSize = 1
        options.maxIterations = 1
        options.kmeansIterations = 1
        let result = try quantizeLinear(problem, scheme: .preset1x16, options: options)
        // 16 groups and 65536 codes: every group gets a code of its own, so the fit is exact.
        XCTAssertLessThan(result.finalError.relative, 1e-6)
        let codeBits = 16.0 * 16, codebookBits = 65536.0 * 8 * 16, scaleBits = 4.0 * 16
        XCTAssertEqual(result.bitsPerWeight, (codeBits + codebookBits + scaleBits) / 128, accuracy: 1e-9)
    }

    /// Past `maximumProductTable` (32 groups × 65536 codes × 8 > 2^23 floats) the search runs
    /// without the H·code products: this once wrote through an empty array's pointer (SIGSEGV
    /// quantizing SmolLM2 at 1x16).
    func testOneBy16WithoutTheProductTable() throws {
        let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: 2, dIn: 256, seed: 29), dOut: 2, dIn: 256,
                                       hessian: Synthetic.identity(256))
        var options = AQLMOptions()
        options.beamSize = 1
        options.maxIterations = 1
        options.kmeansIterations = 1
        let result = try quantizeLinear(problem, scheme: .preset1x16, options: options)
        XCTAssertLessThan(result.finalError.relative, 1e-6, "64 groups, 65536 codes: an exact fit")
    }

    func testRankDeficientHessianWithDeadInputs() throws {
        let dOut = 24, dIn = 64
        // Fewer calibration tokens than inputs, and inputs 0..<8 never active: H is singular.
        var hessian = Synthetic.activationHessian(dIn: dIn, tokens: 24, seed: 24)
        for i in 0..<8 {
            for j in 0..<dIn {
                hessian[i * dIn + j] = 0
                hessian[j * dIn + i] = 0
            }
        }
        let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: 25), dOut: dOut, dIn: dIn,
                                       hessian: hessian)
        var options = AQLMOptions()
        options.beamSize = 2
        options.maxIterations = 3
        let result = try quantizeLinear(problem, scheme: smallScheme, options: options)
        XCTAssertTrue(result.codebooks.allSatisfy(\.isFinite) && result.scales.allSatisfy(\.isFinite))
        XCTAssertLessThan(result.finalError.absolute, result.initialError.absolute)
        XCTAssertLessThan(result.finalError.relative, 0.05)
    }

    func testBadInputsThrowOneLineErrors() {
        XCTAssertThrowsError(try LayerProblem(weight: [1, 2, 3], dOut: 2, dIn: 2, hessian: Synthetic.identity(2))) { error in
            XCTAssertTrue("\(error)".contains("expected d_out·d_in"), "\(error)")
        }
        XCTAssertThrowsError(try LayerProblem(weight: [1, 2, 3, 4], dOut: 2, dIn: 2, hessian: [Double]([1, 0, 0]))) { error in
            XCTAssertTrue("\(error)".contains("Hessian has 3 values"), "\(error)")
        }
        XCTAssertThrowsError(try LayerProblem(weight: [1, .nan, 3, 4], dOut: 2, dIn: 2, hessian: Synthetic.identity(2)))
        XCTAssertThrowsError(try quantizeLinear(weight: [Float](repeating: 1, count: 4 * 12), dOut: 4, dIn: 12,
                                                hessian: Synthetic.identity(12), scheme: .preset2x8))
    }
}
