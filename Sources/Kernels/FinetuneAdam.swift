/// One Adam step (Kingma & Ba 2015, Algorithm 1) over a parameter vector:
///   m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²
///   θ ← θ − lr·m̂/(√v̂ + ε),  m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)
/// `firstMomentCorrection` = 1/(1−β₁ᵗ) and `secondMomentCorrection` = 1/(1−β₂ᵗ) for step t ≥ 1.
@inline(__always)
public func adamUpdate(_ parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>,
                       firstMoment m: UnsafeMutablePointer<Float>, secondMoment v: UnsafeMutablePointer<Float>, count n: Int,
                       learningRate: Float, beta1: Float, beta2: Float, epsilon: Float,
                       firstMomentCorrection: Float, secondMomentCorrection: Float) {
    @inline(__always)
    func step(_ theta: SIMD16<Float>, _ g: SIMD16<Float>, _ m0: SIMD16<Float>, _ v0: SIMD16<Float>)
        -> (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>) {
        let m1 = beta1 * m0 + (1 - beta1) * g
        let v1 = beta2 * v0 + (1 - beta2) * g * g
        let update = (m1 * firstMomentCorrection) / ((v1 * secondMomentCorrection).squareRoot() + epsilon)
        return (theta - learningRate * update, m1, v1)
    }
    var i = 0
    while i + 16 <= n {
        let (theta, m1, v1) = step(loadVector(parameters + i), loadVector(gradients + i), loadVector(m + i), loadVector(v + i))
        storeVector(theta, parameters + i)
        storeVector(m1, m + i)
        storeVector(v1, v + i)
        i += 16
    }
    if i < n {
        let rest = n - i
        let (theta, m1, v1) = step(loadPartial(parameters + i, count: rest, padding: 0), loadPartial(gradients + i, count: rest, padding: 0),
                                   loadPartial(m + i, count: rest, padding: 0), loadPartial(v + i, count: rest, padding: 0))
        storePartial(theta, parameters + i, count: rest)
        storePartial(m1, m + i, count: rest)
        storePartial(v1, v + i, count: rest)
    }
}
