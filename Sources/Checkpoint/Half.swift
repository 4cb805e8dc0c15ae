/// IEEE binary16 and bfloat16 conversions done on the bit patterns, so they behave the same on
/// every platform (Swift's Float16 is unavailable on some x86 toolchains).
@inline(__always)
public func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exp = UInt32(h >> 10) & 0x1f
    let mant = UInt32(h & 0x3ff)
    if exp == 0 {
        // Zero or subnormal: value = mant * 2^-24.
        let v = Float(mant) * (1.0 / 16_777_216.0)
        return sign != 0 ? -v : v
    }
    if exp == 0x1f {
        return Float(bitPattern: sign | 0x7f80_0000 | (mant << 13))
    }
    return Float(bitPattern: sign | ((exp + 112) << 23) | (mant << 13))
}

/// Round-to-nearest-even Float -> binary16 (overflow to ±inf, NaN kept quiet).
@inline(__always)
public func floatToHalf(_ f: Float) -> UInt16 {
    let x = f.bitPattern
    let sign = UInt16((x >> 16) & 0x8000)
    let exp = Int((x >> 23) & 0xff)
    var mant = x & 0x7f_ffff
    if exp == 0xff { return sign | 0x7c00 | (mant != 0 ? 0x200 : 0) }
    let e = exp - 127 + 15
    if e >= 0x1f { return sign | 0x7c00 }
    if e <= 0 {
        if e < -10 { return sign }
        mant |= 0x80_0000
        let shift = UInt32(14 - e)
        var h = mant >> shift
        let rem = mant & ((1 << shift) - 1)
        let half = UInt32(1) << (shift - 1)
        if rem > half || (rem == half && (h & 1) != 0) { h += 1 }
        return sign | UInt16(h)
    }
    var h = UInt32(e << 10) | (mant >> 13)
    let rem = mant & 0x1fff
    if rem > 0x1000 || (rem == 0x1000 && (h & 1) != 0) { h += 1 }
    return sign | UInt16(h)
}

@inline(__always)
public func bf16ToFloat(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

/// Round-to-nearest-even Float -> bfloat16.
@inline(__always)
public func floatToBF16(_ f: Float) -> UInt16 {
    let x = f.bitPattern
    if f.isNaN { return UInt16(x >> 16) | 0x40 }
    let rounding = UInt32(0x7fff) + ((x >> 16) & 1)
    return UInt16((x &+ rounding) >> 16)
}
