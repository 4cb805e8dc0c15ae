import Foundation

/// Elementwise and reduction kernels over Float32 vectors, written with SIMD16<Float>
/// (one AVX-512 register) and several independent accumulators so the loops vectorise and
/// hide FMA latency. Pointers plus a count, like llm.c; callers own the memory.

@inline(__always) @usableFromInline
func loadVector(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always) @usableFromInline
func storeVector(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
}

/// The first `count` (< 16) elements of p, the other lanes set to `padding`: vector tails.
@inline(__always) @usableFromInline
func loadPartial(_ p: UnsafePointer<Float>, count: Int, padding: Float) -> SIMD16<Float> {
    var v = SIMD16<Float>(repeating: padding)
    for j in 0..<count { v[j] = p[j] }
    return v
}

@inline(__always) @usableFromInline
func storePartial(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>, count: Int) {
    for j in 0..<count { p[j] = v[j] }
}

/// Σ a[i]·b[i].
@inline(__always)
public func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count n: Int) -> Float {
    var acc0 = SIMD16<Float>(), acc1 = SIMD16<Float>(), acc2 = SIMD16<Float>(), acc3 = SIMD16<Float>()
    var i = 0
    while i + 64 <= n {
        acc0 = acc0.addingProduct(loadVector(a + i), loadVector(b + i))
        acc1 = acc1.addingProduct(loadVector(a + i + 16), loadVector(b + i + 16))
        acc2 = acc2.addingProduct(loadVector(a + i + 32), loadVector(b + i + 32))
        acc3 = acc3.addingProduct(loadVector(a + i + 48), loadVector(b + i + 48))
        i += 64
    }
    while i + 16 <= n {
        acc0 = acc0.addingProduct(loadVector(a + i), loadVector(b + i))
        i += 16
    }
    var sum = ((acc0 + acc1) + (acc2 + acc3)).sum()
    while i < n {
        sum += a[i] * b[i]
        i += 1
    }
    return sum
}

/// y[i] += x[i] (the residual connection).
@inline(__always)
public func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count n: Int) {
    var i = 0
    while i + 16 <= n {
        storeVector(loadVector(y + i) + loadVector(x + i), y + i)
        i += 16
    }
    while i < n {
        y[i] += x[i]
        i += 1
    }
}

/// y[i] += a·x[i].
@inline(__always)
public func addScaled(_ x: UnsafePointer<Float>, _ a: Float, into y: UnsafeMutablePointer<Float>, count n: Int) {
    let av = SIMD16<Float>(repeating: a)
    var i = 0
    while i + 16 <= n {
        storeVector(loadVector(y + i).addingProduct(av, loadVector(x + i)), y + i)
        i += 16
    }
    while i < n {
        y[i] += a * x[i]
        i += 1
    }
}

/// y[i] += x[i]² (second moments of gradients).
@inline(__always)
public func addSquares(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count n: Int) {
    var i = 0
    while i + 16 <= n {
        let v = loadVector(x + i)
        storeVector(loadVector(y + i).addingProduct(v, v), y + i)
        i += 16
    }
    while i < n {
        y[i] += x[i] * x[i]
        i += 1
    }
}

/// x[i] *= a.
@inline(__always)
public func scale(_ x: UnsafeMutablePointer<Float>, by a: Float, count n: Int) {
    var i = 0
    while i + 16 <= n {
        storeVector(loadVector(x + i) * a, x + i)
        i += 16
    }
    while i < n {
        x[i] *= a
        i += 1
    }
}

/// max_i x[i] (-infinity for an empty vector).
@inline(__always)
public func maximum(_ x: UnsafePointer<Float>, count n: Int) -> Float {
    var m0 = SIMD16<Float>(repeating: -.infinity), m1 = m0
    var i = 0
    while i + 32 <= n {
        m0 = pointwiseMax(m0, loadVector(x + i))
        m1 = pointwiseMax(m1, loadVector(x + i + 16))
        i += 32
    }
    var m = pointwiseMax(m0, m1).max()
    while i < n {
        m = Swift.max(m, x[i])
        i += 1
    }
    return m
}

/// The first index of the largest element (greedy decoding, top-1 agreement).
public func argmax(_ x: UnsafePointer<Float>, count n: Int) -> Int {
    let m = maximum(x, count: n)
    // The first 16-value block holding m, then the lane: a greedy decode step's 49,152 logits
    // were otherwise searched one by one (half of them on average), serially on one core.
    let target = SIMD16<Float>(repeating: m)
    var i = 0
    while i + 16 <= n && !any(loadVector(x + i) .== target) { i += 16 }
    while i < n {
        if x[i] == m { return i }
        i += 1
    }
    return 0
}

/// e^x for 16 lanes: x = k·ln2 + r with |r| ≤ ln2/2 (Cody-Waite split of ln2), e^r by the
/// Cephes expf minimax polynomial (≈1 ulp), 2^k built directly in the exponent bits.
/// Underflows to 0 below -87.3 (so -infinity gives 0); saturates above 88.3.
@inline(__always)
public func exp(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let xc = pointwiseMax(pointwiseMin(x, SIMD16(repeating: 88.3)), SIMD16(repeating: -87.3))
    // Adding 1.5·2^23 rounds x·log2(e) to the nearest integer k and leaves k in the low mantissa bits.
    let magic = SIMD16<Float>(repeating: 12_582_912)
    let shifted = (xc * 1.442_695_04) + magic
    let k = shifted - magic
    let r = xc.addingProduct(k, SIMD16(repeating: -0.693_359_375)).addingProduct(k, SIMD16(repeating: 2.121_944_4e-4))
    var p = SIMD16<Float>(repeating: 1.987_569_15e-4)
    p = SIMD16(repeating: 1.398_199_95e-3).addingProduct(p, r)
    p = SIMD16(repeating: 8.333_451_9e-3).addingProduct(p, r)
    p = SIMD16(repeating: 4.166_579_59e-2).addingProduct(p, r)
    p = SIMD16(repeating: 1.666_666_55e-1).addingProduct(p, r)
    p = SIMD16(repeating: 5.000_000_12e-1).addingProduct(p, r)
    let expR = (r + 1).addingProduct(p, r * r)
    let kBits = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- 0x4B40_0000
    let twoToK = unsafeBitCast((kBits &+ 127) &<< 23, to: SIMD16<Float>.self)
    var result = expR * twoToK
    result.replace(with: 0, where: x .< -87.3)
    return result
}

/// x[i] = e^(x[i] - shift) in place; returns Σ of the results.
@inline(__always)
public func exponentiate(_ x: UnsafeMutablePointer<Float>, subtracting shift: Float, count n: Int) -> Float {
    let s = SIMD16<Float>(repeating: shift)
    var sum0 = SIMD16<Float>(), sum1 = SIMD16<Float>()
    var i = 0
    while i + 32 <= n {
        let e0 = exp(loadVector(x + i) - s), e1 = exp(loadVector(x + i + 16) - s)
        storeVector(e0, x + i)
        storeVector(e1, x + i + 16)
        sum0 += e0
        sum1 += e1
        i += 32
    }
    while i + 16 <= n {
        let e0 = exp(loadVector(x + i) - s)
        storeVector(e0, x + i)
        sum0 += e0
        i += 16
    }
    if i < n {
        let e = exp(loadPartial(x + i, count: n - i, padding: -.infinity) - s)
        storePartial(e, x + i, count: n - i)
        sum0 += e
    }
    return (sum0 + sum1).sum()
}

/// x = softmax(x) in place, shifted by the maximum so no term overflows.
@inline(__always)
public func softmax(_ x: UnsafeMutablePointer<Float>, count n: Int) {
    let total = exponentiate(x, subtracting: maximum(x, count: n), count: n)
    scale(x, by: 1 / total, count: n)
}

/// log Σ e^x[i], without writing x (log-softmax normaliser: log p_i = x_i - logSumExp).
public func logSumExp(_ x: UnsafePointer<Float>, count n: Int) -> Float {
    let m = maximum(x, count: n)
    if m == -.infinity { return -.infinity }
    let shift = SIMD16<Float>(repeating: m)
    var sum0 = SIMD16<Float>(), sum1 = SIMD16<Float>()
    var i = 0
    while i + 32 <= n {
        sum0 += exp(loadVector(x + i) - shift)
        sum1 += exp(loadVector(x + i + 16) - shift)
        i += 32
    }
    while i + 16 <= n {
        sum0 += exp(loadVector(x + i) - shift)
        i += 16
    }
    if i < n {
        sum0 += exp(loadPartial(x + i, count: n - i, padding: -.infinity) - shift)
    }
    return m + Foundation.log((sum0 + sum1).sum())
}

/// out[i] = silu(gate[i])·up[i] with silu(g) = g·σ(g) = g / (1 + e^-g): the SwiGLU MLP's gate.
@inline(__always)
public func swiGLU(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count n: Int) {
    var i = 0
    while i + 16 <= n {
        let g = loadVector(gate + i)
        storeVector(g / (exp(-g) + 1) * loadVector(up + i), out + i)
        i += 16
    }
    if i < n {
        let g = loadPartial(gate + i, count: n - i, padding: 0)
        let u = loadPartial(up + i, count: n - i, padding: 0)
        storePartial(g / (exp(-g) + 1) * u, out + i, count: n - i)
    }
}

/// rows[r] += bias for each of `tokens` rows of bias.count values (nothing when there is no bias:
/// Llama's linears have none, Qwen2's q/k/v have one).
public func addBias(_ bias: [Float]?, to rows: UnsafeMutablePointer<Float>, tokens: Int) {
    guard let bias else { return }
    bias.withUnsafeBufferPointer { b in
        for r in 0..<tokens { add(b.baseAddress!, into: rows + r * b.count, count: b.count) }
    }
}

/// x += delta over `count` values, in parallel chunks: the residual stream's update.
public func addResidual(_ delta: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>, count: Int) {
    parallelChunks(count, minChunk: 16_384) { lo, hi in
        add(delta + lo, into: x + lo, count: hi - lo)
    }
}
