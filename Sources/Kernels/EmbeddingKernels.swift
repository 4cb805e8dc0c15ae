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

/// Dot products of four fp16 rows (rowStride apart) with x [count].
@inline(__always)
func f16DotFourRows(_ h: UnsafePointer<UInt16>, rowStride: Int, x: UnsafePointer<Float>, count: Int) -> SIMD4<Float> {
    var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
    let h0 = h, h1 = h + rowStride, h2 = h + 2 * rowStride, h3 = h + 3 * rowStride
    var i = 0
    while i + 16 <= count {
        let xv = loadVector(x + i)
        a0.addProduct(widenHalves16(h0 + i), xv)
        a1.addProduct(widenHalves16(h1 + i), xv)
        a2.addProduct(widenHalves16(h2 + i), xv)
        a3.addProduct(widenHalves16(h3 + i), xv)
        i += 16
    }
    var sums = SIMD4(a0.sum(), a1.sum(), a2.sum(), a3.sum())
    while i < count {
        sums += SIMD4(Float(Float16(bitPattern: h0[i])), Float(Float16(bitPattern: h1[i])),
                      Float(Float16(bitPattern: h2[i])), Float(Float16(bitPattern: h3[i]))) * x[i]
        i += 1
    }
    return sums
}

/// One fp16 row's dot product with x (the tail of `f16DotFourRows`).
@inline(__always)
func f16DotRow(_ h: UnsafePointer<UInt16>, x: UnsafePointer<Float>, count: Int) -> Float {
    var a = SIMD16<Float>()
    var i = 0
    while i + 16 <= count {
        a.addProduct(widenHalves16(h + i), loadVector(x + i))
        i += 16
    }
    var sum = a.sum()
    while i < count {
        sum += Float(Float16(bitPattern: h[i])) * x[i]
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
