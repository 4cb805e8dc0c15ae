import Finetune
import Foundation
import Kernels
import XCTest

final class AdamTests: XCTestCase {
    /// Adam written out in Float64, straight from Kingma & Ba's Algorithm 1.
    struct ReferenceAdam {
        let lr: Double, beta1: Double, beta2: Double, epsilon: Double
        var m: [Double], v: [Double], t = 0

        mutating func step(_ theta: inout [Double], _ g: [Double]) {
            t += 1
            for i in theta.indices {
                m[i] = beta1 * m[i] + (1 - beta1) * g[i]
                v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
                let mHat = m[i] / (1 - pow(beta1, Double(t))), vHat = v[i] / (1 - pow(beta2, Double(t)))
                theta[i] -= lr * mHat / (vHat.squareRoot() + epsilon)
            }
        }
    }

    /// f(x) = Σ a_i (x_i − c_i)², ∇f = 2a(x − c).
    let a: [Float] = (0..<37).map { 0.1 + Float($0 % 7) }
    let c: [Float] = (0..<37).map { Float($0) / 10 - 1.5 }
    func gradient(_ x: [Float]) -> [Float] { x.indices.map { 2 * a[$0] * (x[$0] - c[$0]) } }

    func testFirstStepMovesEveryCoordinateByTheLearningRate() {
        // With bias correction, m̂ = g and v̂ = g² at t = 1: the step is lr·sign(g) (ε aside).
        var adam = Adam(options: AdamOptions(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8))
        let initial = c.indices.map { c[$0] + ($0 % 2 == 0 ? 1 : -0.5) }
        var x = initial
        adam.beginStep()
        adam.update(&x, gradient: gradient(x), name: "x")
        for i in x.indices {
            XCTAssertEqual(x[i], initial[i] - 0.01 * (i % 2 == 0 ? 1 : -1), accuracy: 1e-6, "coordinate \(i)")
        }
    }

    func testMatchesFloat64ReferenceOverManySteps() {
        let options = AdamOptions(learningRate: 0.03, beta1: 0.8, beta2: 0.95, epsilon: 1e-6)
        var adam = Adam(options: options)
        var reference = ReferenceAdam(lr: 0.03, beta1: 0.8, beta2: 0.95, epsilon: 1e-6,
                                      m: [Double](repeating: 0, count: a.count), v: [Double](repeating: 0, count: a.count))
        var x = [Float](repeating: 0.5, count: a.count)
        var y = x.map(Double.init)
        for _ in 0..<50 {
            let g = gradient(x)
            adam.beginStep()
            adam.update(&x, gradient: g, name: "x")
            reference.step(&y, g.map(Double.init))
        }
        XCTAssertEqual(adam.step, 50)
        for i in x.indices { XCTAssertEqual(Double(x[i]), y[i], accuracy: 1e-4, "coordinate \(i)") }
    }

    func testConvergesOnAQuadratic() {
        var adam = Adam(options: AdamOptions(learningRate: 0.05))
        var x = [Float](repeating: 2, count: a.count)
        let start = zip(x, c).map { abs($0 - $1) }.max()!
        for _ in 0..<600 {
            adam.beginStep()
            adam.update(&x, gradient: gradient(x), name: "x")
        }
        let end = zip(x, c).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(start, 1)
        XCTAssertLessThan(end, 0.02)
    }

    func testParametersKeepTheirOwnMoments() {
        // Two names updated in one step behave exactly like two separate optimizers.
        var shared = Adam(options: AdamOptions(learningRate: 0.1))
        var first = Adam(options: AdamOptions(learningRate: 0.1)), second = first
        var p: [Float] = [1, -2, 3], q: [Float] = [0.5, 0.25]
        var p1 = p, q2 = q
        for step in 0..<5 {
            let gp = p.map { $0 * Float(step + 1) }, gq = q.map { -$0 }
            shared.beginStep()
            shared.update(&p, gradient: gp, name: "p")
            shared.update(&q, gradient: gq, name: "q")
            first.beginStep()
            first.update(&p1, gradient: p1.map { $0 * Float(step + 1) }, name: "p")
            second.beginStep()
            second.update(&q2, gradient: q2.map { -$0 }, name: "q")
        }
        XCTAssertEqual(p, p1)
        XCTAssertEqual(q, q2)
    }

    func testCosineScheduleFallsFromTheBaseRateToZero() {
        let schedule = LearningRateSchedule.cosine, total = 10
        let rates = (1...total).map { schedule.rate(base: 2e-4, step: $0, total: total) }
        XCTAssertEqual(rates[0], 2e-4)
        XCTAssertEqual(schedule.rate(base: 2e-4, step: 6, total: total), 1e-4, accuracy: 1e-9, "half way: half the rate")
        XCTAssertEqual(rates[total - 1], Float(2e-4 * 0.5 * (1 + cos(Double.pi * 0.9))), accuracy: 1e-10)
        XCTAssertGreaterThan(rates[total - 1], 0, "the last step still moves")
        for (a, b) in zip(rates, rates.dropFirst()) { XCTAssertLessThan(b, a) }
        XCTAssertEqual(LearningRateSchedule.constant.rate(base: 2e-4, step: 7, total: total), 2e-4)
    }

    func testOptimizerTakesEachStepsScheduledRate() {
        // A constant gradient gives m̂ = g and v̂ = g² at every step, so each update is the
        // step's rate times sign(g): 0.1, then 0.1·cos²(π/4) = 0.05 with cosine over 2 steps.
        var adam = Adam(options: AdamOptions(learningRate: 0.1), schedule: .cosine, totalSteps: 2)
        var x: [Float] = [1, -1]
        adam.beginStep()
        XCTAssertEqual(adam.learningRate, 0.1)
        adam.update(&x, gradient: [2, -3], name: "x")
        XCTAssertEqual(x[0], 0.9, accuracy: 1e-6)
        XCTAssertEqual(x[1], -0.9, accuracy: 1e-6)
        adam.beginStep()
        XCTAssertEqual(adam.options.learningRate, 0.1, "the base rate is kept")
        adam.update(&x, gradient: [2, -3], name: "x")
        XCTAssertEqual(x[0], 0.85, accuracy: 1e-6)
        XCTAssertEqual(x[1], -0.85, accuracy: 1e-6)
    }
    /// The straight-through V step's Adam (β1 0, β2 0.95, LAMB): each step's norm is
    /// η·√(1−β2^t)·‖B‖ whatever the gradient's scale, it points against the gradient, and steps
    /// accumulate in B (nothing resets it).
    func testStraightThroughStepHasTheTrustRatioNormAndAccumulates() {
        let start: [Float] = (0..<64).map { Float(($0 * 37) % 11) / 10 - 0.5 }
        let g: [Float] = (0..<64).map { Float(($0 * 13) % 7) / 1000 - 0.003 }
        func run(scale: Float, steps: Int) -> [Float] {
            var b = start, v = [Float](repeating: 0, count: 64)
            for t in 1...steps {
                b.withUnsafeMutableBufferPointer { b in
                    v.withUnsafeMutableBufferPointer { v in
                        g.withUnsafeBufferPointer { straightThroughAdamStep(buffer: b, moment: v, gradient: $0, gradientScale: scale,
                                                                            stepSize: 0.01, step: t) }
                    }
                }
            }
            return b
        }
        func norm(_ x: [Float]) -> Double { x.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() }
        let one = run(scale: 1, steps: 1)
        let move = zip(one, start).map { $0 - $1 }
        XCTAssertEqual(norm(move), 0.01 * 0.05.squareRoot() * norm(start), accuracy: 1e-6 * norm(start))
        XCTAssertLessThan(zip(move, g).reduce(0.0) { $0 + Double($1.0 * $1.1) }, 0, "against the gradient")
        let scaled = run(scale: 1e6, steps: 1)
        for i in start.indices { XCTAssertEqual(scaled[i], one[i], accuracy: 1e-6) }
        let two = run(scale: 1, steps: 2)
        XCTAssertGreaterThan(norm(zip(two, start).map { $0 - $1 }), 1.5 * norm(move), "the second step adds to the first")
    }
    /// A gradient whose square would overflow (or is not finite) leaves B and its moment as they
    /// were instead of turning them into ∞ and NaN for the rest of the run.
    func testStraightThroughStepSkipsAnOverflowingGradient() {
        for bad: Float in [3e19, .infinity, .nan] {
            var b: [Float] = [0.5, -0.25, 1], v: [Float] = [1e-6, 2e-6, 3e-6]
            let g: [Float] = [1e-3, bad, -2e-3]
            let stepped = b.withUnsafeMutableBufferPointer { b in
                v.withUnsafeMutableBufferPointer { v in
                    g.withUnsafeBufferPointer { straightThroughAdamStep(buffer: b, moment: v, gradient: $0, gradientScale: 1,
                                                                        stepSize: 0.01, step: 3) }
                }
            }
            XCTAssertFalse(stepped, "\(bad)")
            XCTAssertEqual(b, [0.5, -0.25, 1])
            XCTAssertEqual(v, [1e-6, 2e-6, 3e-6])
        }
    }
}
