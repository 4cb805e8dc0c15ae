/// Dequantization of GGML blocks to Float32. Each block format is defined in ggml-common.h;
/// the layouts are restated next to each function so the code can be checked against them.

/// Dequantizes `out.count` elements of `type` stored at `raw` (which must hold exactly
/// `type.byteCount(elements: out.count)` bytes; callers check that and name the tensor).
/// `type.canDequantize` must be true.
public func dequantize(_ type: GGMLType, _ raw: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<Float>) {
    let nBlocks = out.count / type.blockSize
    precondition(out.count % type.blockSize == 0 && raw.count >= nBlocks * type.typeSize)
    guard let src = raw.baseAddress, let dst = out.baseAddress else { return }
    switch type {
    case .f32:
        UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: out.count * 4)
    case .f16:
        for i in 0..<out.count { dst[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
    case .bf16:
        for i in 0..<out.count { dst[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
    case .q4_0: dequantizeBlocks(type, src, nBlocks, dst, dequantizeQ4_0)
    case .q4_1: dequantizeBlocks(type, src, nBlocks, dst, dequantizeQ4_1)
    case .q5_0: dequantizeBlocks(type, src, nBlocks, dst, dequantizeQ5_0)
    case .q5_1: dequantizeBlocks(type, src, nBlocks, dst, dequantizeQ5_1)
    case .q8_0: dequantizeBlocks(type, src, nBlocks, dst, dequantizeQ8_0)
    case .q2_K: dequantizeBlocks(type, src, nBlocks, dst, dequantizeQ2_K)
    case .q3_K: dequantizeBlocks(type, src, nBlocks, dst, dequantizeQ3_K)
    case .q4_K: dequantizeBlocks(type, src, nBlocks, dst, dequantizeQ4_K)
    case .q5_K: dequantizeBlocks(type, src, nBlocks, dst, dequantizeQ5_K)
    case .q6_K: dequantizeBlocks(type, src, nBlocks, dst, dequantizeQ6_K)
    default:
        preconditionFailure("dequantize: \(type.name) is not supported (callers check canDequantize)")
    }
}

/// Applies a one-block dequantizer to `nBlocks` consecutive blocks.
@inline(__always) func dequantizeBlocks(
    _ type: GGMLType, _ src: UnsafeRawPointer, _ nBlocks: Int, _ dst: UnsafeMutablePointer<Float>,
    _ block: (UnsafeRawPointer, UnsafeMutablePointer<Float>) -> Void
) {
    for b in 0..<nBlocks { block(src + b * type.typeSize, dst + b * type.blockSize) }
}

@inline(__always) func f16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    halfToFloat(p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
}

/// block_q4_0 { f16 d; u8 qs[16] }: x[j] = d * ((qs[j] & 15) - 8), x[j+16] = d * ((qs[j] >> 4) - 8).
@inline(__always) func dequantizeQ4_0(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(p, 0)
    for j in 0..<16 {
        let q = p.load(fromByteOffset: 2 + j, as: UInt8.self)
        y[j] = d * Float(Int(q & 0xf) - 8)
        y[j + 16] = d * Float(Int(q >> 4) - 8)
    }
}

/// block_q4_1 { f16 d; f16 m; u8 qs[16] }: x[j] = d * (qs[j] & 15) + m, x[j+16] = d * (qs[j] >> 4) + m.
@inline(__always) func dequantizeQ4_1(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(p, 0), m = f16(p, 2)
    for j in 0..<16 {
        let q = p.load(fromByteOffset: 4 + j, as: UInt8.self)
        y[j] = d * Float(q & 0xf) + m
        y[j + 16] = d * Float(q >> 4) + m
    }
}

/// block_q5_0 { f16 d; u8 qh[4]; u8 qs[16] } (22 bytes): qh is a little-endian u32 whose bit j is
/// the fifth bit of element j. x[j] = d * ((qs[j] & 15 | bit j << 4) - 16),
/// x[j+16] = d * ((qs[j] >> 4 | bit (j+16) << 4) - 16).
@inline(__always) func dequantizeQ5_0(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(p, 0)
    let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
    for j in 0..<16 {
        let q = p.load(fromByteOffset: 6 + j, as: UInt8.self)
        let x0 = Int(q & 0xf) | Int((qh >> UInt32(j)) & 1) << 4
        let x1 = Int(q >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
        y[j] = Float(x0 - 16) * d
        y[j + 16] = Float(x1 - 16) * d
    }
}

/// block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16] } (24 bytes): as Q5_0 without the -16 offset,
/// plus the min: x[j] = d * (qs[j] & 15 | bit j << 4) + m, x[j+16] = d * (qs[j] >> 4 | bit (j+16) << 4) + m.
@inline(__always) func dequantizeQ5_1(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(p, 0), m = f16(p, 2)
    let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    for j in 0..<16 {
        let q = p.load(fromByteOffset: 8 + j, as: UInt8.self)
        let x0 = UInt32(q & 0xf) | ((qh >> UInt32(j)) & 1) << 4
        let x1 = UInt32(q >> 4) | ((qh >> UInt32(j + 16)) & 1) << 4
        y[j] = Float(x0) * d + m
        y[j + 16] = Float(x1) * d + m
    }
}

/// block_q8_0 { f16 d; i8 qs[32] }: x[j] = d * qs[j].
@inline(__always) func dequantizeQ8_0(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(p, 0)
    for j in 0..<32 { y[j] = d * Float(p.load(fromByteOffset: 2 + j, as: Int8.self)) }
}
