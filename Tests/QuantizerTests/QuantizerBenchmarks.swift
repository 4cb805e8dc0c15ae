import Foundation
import Kernels
import Quantizer
import XCTest

/// Acceptance figures and the measurements behind the default options. Skipped unless
/// AQLM_BENCH=1 (they take minutes on 2 shared cores):
///   AQLM_BENCH=1 swift test -c release --skip-build --scratch-path .build-quant --filter QuantizerBenchmarks
final class QuantizerBenchmarks: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipUnless(ProcessInfo.processInfo.environment["AQLM_BENCH"] == "1", "set AQLM_BENCH=1 to run benchmarks")
    }

    private func options(beam: Int, iterations: Int? = nil, kmeans: Int? = nil) -> AQLMOptions {
        var o = AQLMOptions()
        o.beamSize = beam
        if let iterations { o.maxIterations = iterations }
        if let kmeans { o.kmeansIterations = kmeans }
        return o
    }

    /// User + system CPU seconds of this process (wall time is noisy on a shared machine).
    private func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    private func line(_ label: String, _ result: QuantizedLinear) -> String {
        let history = result.history.map { String(format: "%.4f", $0.afterScales.relative) }.joined(separator: " ")
        return String(format: "%-28@ rel %.4f  init %.4f  bits %.3f  %6.2f s  (init %.2f search %.2f codebooks %.2f scales %.2f)  [%@]",
                      label as NSString, result.finalError.relative, result.initialError.relative, result.bitsPerWeight,
                      result.timings.total, result.timings.initialization, result.timings.codeSearch,
                      result.timings.codebookUpdate, result.timings.scaleUpdate, history as NSString)
    }

    /// Gaussian W [1536, 576], H = I, 2x8 g8: AQLM must reach ‖W−Ŵ‖²/‖W‖² < 0.100.
    func testGaussianAcceptance() throws {
        let dOut = 1536, dIn = 576
        let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: 2024), dOut: dOut, dIn: dIn,
                                       hessian: Synthetic.identity(dIn))
        print("Gaussian [1536, 576], H = I, 2x8 g8, threads \(Threads.count)")
        var results = [String: QuantizedLinear]()
        let runs: [(String, Int, AQLMInitialization, Bool)] = [
            ("aqlm beam 1", 1, .product, false), ("aqlm beam 8 (default)", 8, .product, false),
            ("aqlm beam 1, 8 iters", 1, .product, true), ("aqlm beam 8, 8 iters", 8, .product, true),
            ("aqlm rvq-init beam 1, 8 it", 1, .residual, true), ("aqlm rvq-init beam 8, 8 it", 8, .residual, true),
        ]
        for (label, beam, initialization, fixedIterations) in runs {
            var o = options(beam: beam)
            o.initialization = initialization
            if fixedIterations { o.tolerance = 0 }
            let result = try quantizeLinear(problem, scheme: .preset2x8, options: o)
            print(line(label, result))
            results[label] = result
        }
        let rvq = try quantizeResidualVQ(problem, scheme: .preset2x8)
        print(line("rvq 2x8 (init only)", rvq))
        let pq = try quantizeProductVQ(problem, scheme: .preset2x8)
        print(line("pq 2x8", pq))
        for (bits, group) in [(2, 64), (2, 16), (3, 64), (4, 64)] {
            print(line("rtn\(bits) g\(group) (min/max)", try quantizeRoundToNearest(problem, bits: bits, groupSize: group)))
        }
        XCTAssertLessThan(results["aqlm beam 8 (default)"]!.finalError.relative, 0.100)
        XCTAssertLessThan(results["aqlm beam 8, 8 iters"]!.finalError.relative, results["aqlm beam 1, 8 iters"]!.finalError.relative)
    }

    /// One SmolLM2-135M block's seven linears with synthetic activation Hessians, at the defaults.
    func testBlockTiming() throws {
        let shapes: [(String, Int, Int)] = [("q", 576, 576), ("k", 192, 576), ("v", 192, 576), ("o", 576, 576),
                                            ("gate", 1536, 576), ("up", 1536, 576), ("down", 576, 1536)]
        let env = ProcessInfo.processInfo.environment
        let beam = Int(env["AQLM_BEAM"] ?? "") ?? AQLMOptions().beamSize
        var blockOptions = options(beam: beam)
        if let k = env["AQLM_KMEANS"].flatMap(Int.init) { blockOptions.kmeansIterations = k }
        if let tol = env["AQLM_TOL"].flatMap(Double.init) { blockOptions.tolerance = tol }
        if let iterations = env["AQLM_ITERS"].flatMap(Int.init) { blockOptions.maxIterations = iterations }
        if let initialization = env["AQLM_INIT"].flatMap(AQLMInitialization.init(rawValue:)) { blockOptions.initialization = initialization }
        var hessians = [Int: [Double]]()
        for dIn in [576, 1536] { hessians[dIn] = Synthetic.activationHessian(dIn: dIn, tokens: 4096, skew: 1, seed: UInt64(dIn)) }
        var total = 0.0, cpu = 0.0, weightedError = 0.0
        for (index, (name, dOut, dIn)) in shapes.enumerated() {
            let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: UInt64(index)), dOut: dOut,
                                           dIn: dIn, hessian: hessians[dIn]!)
            let cpuStart = cpuSeconds()
            let result = try quantizeLinear(problem, scheme: .preset2x8, options: blockOptions)
            cpu += cpuSeconds() - cpuStart
            total += result.timings.total
            weightedError += result.finalError.relative / Double(shapes.count)
            print(line("\(name) [\(dOut), \(dIn)] beam \(beam)", result))
        }
        print(String(format: "block total %.2f s wall, %.2f s CPU (beam %d, kmeans %d, tol %g, max iterations %d, %@ init, threads %d), mean relative error %.5f",
                     total, cpu, beam, blockOptions.kmeansIterations, blockOptions.tolerance, blockOptions.maxIterations,
                     blockOptions.initialization.rawValue as NSString, Threads.count, weightedError))
    }

    /// Quality against time for the option grid the defaults were chosen from.
    func testDefaultsGrid() throws {
        let env = ProcessInfo.processInfo.environment
        let dOut = Int(env["AQLM_DOUT"] ?? "") ?? 1536, dIn = Int(env["AQLM_DIN"] ?? "") ?? 576
        let identity = env["AQLM_IDENTITY"] == "1"
        let hessian = identity ? Synthetic.identity(dIn) : Synthetic.activationHessian(dIn: dIn, tokens: 4096, skew: 1, seed: UInt64(dIn))
        let problem = try LayerProblem(weight: Synthetic.gaussianWeight(dOut: dOut, dIn: dIn, seed: 2024), dOut: dOut, dIn: dIn,
                                       hessian: hessian)
        let beams = (env["AQLM_BEAMS"] ?? "1,4,8").split(separator: ",").map { Int($0)! }
        let iterations = (env["AQLM_ITERS"] ?? "6").split(separator: ",").map { Int($0)! }
        let kmeans = (env["AQLM_KMEANS"] ?? "10").split(separator: ",").map { Int($0)! }
        print("grid on [\(dOut), \(dIn)], H = \(identity ? "I" : "synthetic activations"), threads \(Threads.count)")
        for k in kmeans {
            for it in iterations {
                for beam in beams {
                    var o = options(beam: beam, iterations: it, kmeans: k)
                    if let tol = env["AQLM_TOL"].flatMap(Double.init) { o.tolerance = tol }
                    if let points = env["AQLM_POINTS"].flatMap(Int.init) { o.kmeansPointsPerCode = points }
                    let cpuStart = cpuSeconds()
                    let result = try quantizeLinear(problem, scheme: .preset2x8, options: o)
                    print(line("beam \(beam) iters \(it) kmeans \(k)", result) + String(format: "  cpu %.2f s", cpuSeconds() - cpuStart))
                }
            }
        }
    }
}
