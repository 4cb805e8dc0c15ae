/// Dequantization of GGML blocks to Float32. Each block format is defined in ggml-common.h;
/// the layouts are restated next to each function so the code can be checked against them.

/// Dequantizes `out.count` elements of `type` stored at `raw` (which must hold exactly
/// `type.byteCount(elements: out.count)` bytes; callers check that and name the tensor).
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
    case .q4_0:
        for b in 0..<nBlocks { dequantizeQ4_0(src + b * type.typeSize, dst + b * 32) }
    case .q4_1:
        for b in 0..<nBlocks { dequantizeQ4_1(src + b * type.typeSize, dst + b * 32) }
    case .q8_0:
        for b in 0..<nBlocks { dequantizeQ8_0(src + b * type.typeSize, dst + b * 32) }
    default:
        dequantizeKQuants(type, src, nBlocks: nBlocks, dst)
    }
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

/// block_q8_0 { f16 d; i8 qs[32] }: x[j] = d * qs[j].
@inline(__always) func dequantizeQ8_0(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(p, 0)
    for j in 0..<32 { y[j] = d * Float(p.load(fromByteOffset: 2 + j, as: Int8.self)) }
}
