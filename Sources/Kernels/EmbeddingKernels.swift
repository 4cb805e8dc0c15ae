#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Hot loops of `EmbeddingTable`: Q8_0 quantization (the Q8_0 decode step is in Q8RowTiles.swift),
/// F16 dequantization and dot products of four F16 rows with one Float32 vector.

// MARK: - Q8_0

/// One row into Q8_0 (ggml's quantize_row_q8_0: d = max|x| / 127 per block of 32, q = round(x / d)),
/// except that d is rounded to fp16 before dividing, so d·q reconstructs from exactly what is
/// stored (q clamped to ±127 where rounding d down pushed |x / d| past 127). Returns false if a
/// block holds a NaN or infinity or its d overflows fp16.
func quantizeRowQ8(_ x: UnsafePointer<Float>, count: Int, into q: UnsafeMutablePointer<Int8>,
                   scales: UnsafeMutablePointer<UInt16>) -> Bool {
    for b in 0..<(count / q8BlockSize) {
        let block = x + b * q8BlockSize
        var largest: Float = 0
        for i in 0..<q8BlockSize {
            let a = abs(block[i])
            guard a.isFinite else { return false }
            largest = max(largest, a)
        }
        let d = Float16(largest / 127)
        guard d.isFinite else { return false }
        scales[b] = d.bitPattern
        let inverse: Float = d > 0 ? 1 / Float(d) : 0
        for i in 0..<q8BlockSize {
            let v = (block[i] * inverse).rounded(.toNearestOrAwayFromZero)
            q[b * q8BlockSize + i] = Int8(min(127, max(-127, v)))
        }
    }
    return true
}

// MARK: - F16

/// `count` fp16 bit patterns into Float32.
public func widenHalves(_ h: UnsafePointer<UInt16>, count: Int, into out: UnsafeMutablePointer<Float>) {
    var i = 0
    while i + 16 <= count {
        storeVector(widenHalves16(h + i), out + i)
        i += 16
    }
    while i < count {
        out[i] = Float(Float16(bitPattern: h[i]))
        i += 1
    }
}

/// `count` Float32 values rounded to fp16 bit patterns (round to nearest even; beyond fp16's
/// range, infinity).
public func narrowToHalves(_ x: UnsafePointer<Float>, count: Int, into h: UnsafeMutablePointer<UInt16>) {
    for i in 0..<count { h[i] = Float16(x[i]).bitPattern }
}

/// Dot products of four stored rows (rowStride apart; Float32, or fp16 bit patterns widened as
/// they are read) with x [count]: each x vector load feeds four FMAs, two x vectors per pass so
/// eight FMA chains are in flight, and the four sums are folded as vectors (`sumOfEach`), not
/// lane by lane (Swift's `sum()` adds 16 lanes in order: ~60 cycles of latency per row).
@inline(__always)
func dotFourRows<Stored: CachedValue>(_ h: UnsafePointer<Stored>, rowStride: Int, x: UnsafePointer<Float>, count: Int) -> SIMD4<Float> {
    var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
    var b0 = SIMD16<Float>(), b1 = SIMD16<Float>(), b2 = SIMD16<Float>(), b3 = SIMD16<Float>()
    let h0 = h, h1 = h + rowStride, h2 = h + 2 * rowStride, h3 = h + 3 * rowStride
    var i = 0
    while i + 32 <= count {
        let xa = loadVector(x + i), xb = loadVector(x + i + 16)
        a0.addProduct(Stored.load16(h0 + i), xa); b0.addProduct(Stored.load16(h0 + i + 16), xb)
        a1.addProduct(Stored.load16(h1 + i), xa); b1.addProduct(Stored.load16(h1 + i + 16), xb)
        a2.addProduct(Stored.load16(h2 + i), xa); b2.addProduct(Stored.load16(h2 + i + 16), xb)
        a3.addProduct(Stored.load16(h3 + i), xa); b3.addProduct(Stored.load16(h3 + i + 16), xb)
        i += 32
    }
    if i + 16 <= count {
        let xa = loadVector(x + i)
        a0.addProduct(Stored.load16(h0 + i), xa)
        a1.addProduct(Stored.load16(h1 + i), xa)
        a2.addProduct(Stored.load16(h2 + i), xa)
        a3.addProduct(Stored.load16(h3 + i), xa)
        i += 16
    }
    var sums = sumOfEach(a0 + b0, a1 + b1, a2 + b2, a3 + b3)
    while i < count {
        sums += SIMD4(Stored.float(h0[i]), Stored.float(h1[i]), Stored.float(h2[i]), Stored.float(h3[i])) * x[i]
        i += 1
    }
    return sums
}

/// (Σ a, Σ b, Σ c, Σ d) of four vectors, folded in halves: 16 → 8 → 4 lanes per vector, then
/// the four 4-lane vectors transposed and added.
@inline(__always)
func sumOfEach(_ a: SIMD16<Float>, _ b: SIMD16<Float>, _ c: SIMD16<Float>, _ d: SIMD16<Float>) -> SIMD4<Float> {
    @inline(__always) func fold(_ v: SIMD16<Float>) -> SIMD4<Float> {
        let eight = v.lowHalf + v.highHalf
        return eight.lowHalf + eight.highHalf
    }
    let fa = fold(a), fb = fold(b), fc = fold(c), fd = fold(d)
    // Lanes (0+2, 1+3) of each, then the pairs.
    let ab = SIMD4(fa[0] + fa[2], fa[1] + fa[3], fb[0] + fb[2], fb[1] + fb[3])
    let cd = SIMD4(fc[0] + fc[2], fc[1] + fc[3], fd[0] + fd[2], fd[1] + fd[3])
    return SIMD4(ab[0] + ab[1], ab[2] + ab[3], cd[0] + cd[1], cd[2] + cd[3])
}

/// One stored row's dot product with x (the rows `dotFourRows` leaves over).
@inline(__always)
func dotRow<Stored: CachedValue>(_ h: UnsafePointer<Stored>, x: UnsafePointer<Float>, count: Int) -> Float {
    var a = SIMD16<Float>()
    var i = 0
    while i + 16 <= count {
        a.addProduct(Stored.load16(h + i), loadVector(x + i))
        i += 16
    }
    var sum = a.sum()
    while i < count {
        sum += Stored.float(h[i]) * x[i]
        i += 1
    }
    return sum
}

/// 16 fp16 values as Float32 (vcvtph2ps).
@inline(__always)
func widenHalves16(_ h: UnsafePointer<UInt16>) -> SIMD16<Float> {
    #if arch(x86_64)
    return _mm512_cvtph_ps(UnsafeRawPointer(h).loadUnaligned(as: SIMD4<Int64>.self))
    #else
    var v = SIMD16<Float>()
    for i in 0..<16 { v[i] = Float(Float16(bitPattern: h[i])) }
    return v
    #endif
}
