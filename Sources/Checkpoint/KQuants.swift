/// K-quants (ggml-common.h, `QK_K` = 256): a super-block of 256 weights holds one or two f16
/// super-scales and 8 or 16 sub-blocks, each with its own small integer scale (and min). The
/// element order restated for each type follows `dequantize_row_*` in ggml-quants.c; the
/// arithmetic is done in the same order as there, so results match ggml bit for bit.

/// block_q2_K { u8 scales[16]; u8 qs[64]; f16 d; f16 dmin } (84 bytes).
/// Element i = 128h + 32j + l (h < 2, j < 4, l < 32) is the 2-bit field `(qs[32h + l] >> 2j) & 3`;
/// its sub-block s = i / 16 has scale d * (scales[s] & 15) and min dmin * (scales[s] >> 4):
/// x[i] = d * (scales[s] & 15) * q - dmin * (scales[s] >> 4).
@inline(__always) func dequantizeQ2_K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let scales = p.assumingMemoryBound(to: UInt8.self)
    let qs = scales + 16
    let d = f16(p, 80), dmin = f16(p, 82)
    for h in 0..<2 {
        for j in 0..<4 {
            for half in 0..<2 {
                let s = 8 * h + 2 * j + half
                let dl = d * Float(scales[s] & 0xf), ml = dmin * Float(scales[s] >> 4)
                let q = qs + 32 * h + 16 * half
                let out = y + 16 * s
                for l in 0..<16 { out[l] = dl * Float((q[l] >> UInt8(2 * j)) & 3) - ml }
            }
        }
    }
}

/// block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d } (110 bytes).
/// Element i = 128h + 32j + l: low bits `(qs[32h + l] >> 2j) & 3`, high bit `hmask[l]` bit 4h + j;
/// q = low - (high bit set ? 0 : 4), in [-4, 3]. Sub-block s = i / 16 has a 6-bit scale: low
/// nibble `scales[s] & 15` (s < 8) or `scales[s - 8] >> 4` (s >= 8), top two bits
/// `(scales[8 + s % 4] >> 2(s / 4)) & 3`. x[i] = d * (scale - 32) * q.
@inline(__always) func dequantizeQ3_K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let hmask = p.assumingMemoryBound(to: UInt8.self)
    let qs = hmask + 32
    let packed = hmask + 96
    let d = f16(p, 108)
    for h in 0..<2 {
        for j in 0..<4 {
            let highBit = UInt8(1) << UInt8(4 * h + j)
            for half in 0..<2 {
                let s = 8 * h + 2 * j + half
                let dl = d * Float(q3KScale(packed, s) - 32)
                let offset = 16 * half
                let q = qs + 32 * h + offset
                let out = y + 16 * s
                for l in 0..<16 {
                    let low = Int((q[l] >> UInt8(2 * j)) & 3)
                    let high = hmask[offset + l] & highBit != 0 ? 0 : 4
                    out[l] = dl * Float(low - high)
                }
            }
        }
    }
}

/// The 6-bit scale of sub-block `s` (0..<16) of a Q3_K block (see `dequantizeQ3_K`).
@inline(__always) func q3KScale(_ packed: UnsafePointer<UInt8>, _ s: Int) -> Int {
    let low = s < 8 ? packed[s] & 0xf : packed[s - 8] >> 4
    let high = (packed[8 + s % 4] >> UInt8(2 * (s / 4))) & 3
    return Int(low | high << 4)
}

/// Scale and min (6 bits each) of sub-block `j` (0..<8) of Q4_K/Q5_K, `get_scale_min_k4`:
/// j < 4: scale = scales[j] & 63, min = scales[j + 4] & 63; j >= 4: the low four bits come from
/// scales[j + 4] (scale: low nibble, min: high nibble), the top two from the spare top bits of
/// scales[j - 4] (scale) and scales[j] (min).
@inline(__always) func kScaleMin(_ scales: UnsafePointer<UInt8>, _ j: Int) -> (scale: Float, min: Float) {
    if j < 4 { return (Float(scales[j] & 63), Float(scales[j + 4] & 63)) }
    let scale = (scales[j + 4] & 0xf) | ((scales[j - 4] >> 6) << 4)
    let min = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4)
    return (Float(scale), Float(min))
}

/// block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] } (144 bytes).
/// Element i = 64c + 32t + l (c < 4, t < 2, l < 32) is the nibble t of qs[32c + l] (t = 0 low);
/// its sub-block j = i / 32 = 2c + t. x[i] = d * scale_j * q - dmin * min_j (`kScaleMin`).
@inline(__always) func dequantizeQ4_K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(p, 0), dmin = f16(p, 2)
    let scales = p.assumingMemoryBound(to: UInt8.self) + 4
    let qs = scales + 12
    for c in 0..<4 {
        let (sc0, m0) = kScaleMin(scales, 2 * c), (sc1, m1) = kScaleMin(scales, 2 * c + 1)
        let d0 = d * sc0, min0 = dmin * m0, d1 = d * sc1, min1 = dmin * m1
        let q = qs + 32 * c
        let out = y + 64 * c
        for l in 0..<32 {
            out[l] = d0 * Float(q[l] & 0xf) - min0
            out[l + 32] = d1 * Float(q[l] >> 4) - min1
        }
    }
}

/// block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] } (176 bytes).
/// As Q4_K, plus a fifth bit: element i = 64c + 32t + l (sub-block j = 2c + t) adds 16 when bit j
/// of qh[l] is set. x[i] = d * scale_j * (nibble + 16 * bit) - dmin * min_j.
@inline(__always) func dequantizeQ5_K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(p, 0), dmin = f16(p, 2)
    let scales = p.assumingMemoryBound(to: UInt8.self) + 4
    let qh = scales + 12
    let qs = qh + 32
    for c in 0..<4 {
        let (sc0, m0) = kScaleMin(scales, 2 * c), (sc1, m1) = kScaleMin(scales, 2 * c + 1)
        let d0 = d * sc0, min0 = dmin * m0, d1 = d * sc1, min1 = dmin * m1
        let bit0 = UInt8(1) << UInt8(2 * c), bit1 = UInt8(2) << UInt8(2 * c)
        let q = qs + 32 * c
        let out = y + 64 * c
        for l in 0..<32 {
            let low = Int(q[l] & 0xf) + (qh[l] & bit0 != 0 ? 16 : 0)
            let high = Int(q[l] >> 4) + (qh[l] & bit1 != 0 ? 16 : 0)
            out[l] = d0 * Float(low) - min0
            out[l + 32] = d1 * Float(high) - min1
        }
    }
}

/// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d } (210 bytes).
/// Element i = 128h + 32k + l (h < 2, k < 4, l < 32): low nibble from ql[64h + 32(k % 2) + l]
/// (low nibble for k < 2, high for k >= 2), top two bits `(qh[32h + l] >> 2k) & 3`; q = that
/// 6-bit value - 32. x[i] = d * scales[i / 16] * q.
@inline(__always) func dequantizeQ6_K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let ql = p.assumingMemoryBound(to: UInt8.self)
    let qh = ql + 128
    let scales = UnsafeRawPointer(ql + 192).assumingMemoryBound(to: Int8.self)
    let d = f16(p, 208)
    for h in 0..<2 {
        for k in 0..<4 {
            let low = ql + 64 * h + 32 * (k % 2)
            let nibbleShift = UInt8(4 * (k / 2))
            let high = qh + 32 * h
            let out = y + 128 * h + 32 * k
            for l in 0..<32 {
                let q = Int((low[l] >> nibbleShift) & 0xf | ((high[l] >> UInt8(2 * k)) & 3) << 4) - 32
                out[l] = d * Float(scales[8 * h + 2 * k + l / 16]) * Float(q)
            }
        }
    }
}
