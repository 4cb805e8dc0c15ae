/// Float32 -> GGML blocks for the types a writer needs (F32, F16, BF16, Q8_0, Q4_0, Q4_1),
/// following the reference `quantize_row_*_ref` functions of ggml-quants.c so that a tensor
/// written here holds the same bytes llama.cpp would have written.

extension GGMLType {
    /// Whether `encodeBlocks(_:as:)` can produce this type.
    public var canEncode: Bool {
        switch self {
        case .f32, .f16, .bf16, .q8_0, .q4_0, .q4_1: return true
        default: return false
        }
    }
}

/// Encodes `values` as `type` (a whole number of blocks; `type.canEncode` must be true).
public func encodeBlocks(_ values: [Float], as type: GGMLType) -> [UInt8] {
    precondition(type.canEncode && values.count % type.blockSize == 0)
    let nBlocks = values.count / type.blockSize
    var out = [UInt8](repeating: 0, count: nBlocks * type.typeSize)
    values.withUnsafeBufferPointer { x in
        out.withUnsafeMutableBytes { raw in
            guard let src = x.baseAddress, let dst = raw.baseAddress else { return }
            switch type {
            case .f32:
                dst.copyMemory(from: src, byteCount: values.count * 4)
            case .f16:
                for i in 0..<values.count { dst.storeBytes(of: floatToHalf(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
            case .bf16:
                for i in 0..<values.count { dst.storeBytes(of: floatToBF16(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
            case .q8_0:
                for b in 0..<nBlocks { quantizeQ8_0(src + 32 * b, dst + b * type.typeSize) }
            case .q4_0:
                for b in 0..<nBlocks { quantizeQ4_0(src + 32 * b, dst + b * type.typeSize) }
            case .q4_1:
                for b in 0..<nBlocks { quantizeQ4_1(src + 32 * b, dst + b * type.typeSize) }
            default:
                preconditionFailure("encodeBlocks: \(type.name) is not supported")
            }
        }
    }
    return out
}

/// `v` truncated toward zero and clamped to [lo, hi] (NaN -> lo), like ggml's int casts on
/// in-range values but defined for every input.
@inline(__always) func truncatedCode(_ v: Float, _ lo: Int, _ hi: Int) -> Int {
    guard v.isFinite else { return v == .infinity ? hi : lo }
    return min(hi, max(lo, Int(max(-1e9, min(1e9, v)).rounded(.towardZero))))
}

@inline(__always) func storeHalf(_ v: Float, _ p: UnsafeMutableRawPointer, _ offset: Int) {
    p.storeBytes(of: floatToHalf(v).littleEndian, toByteOffset: offset, as: UInt16.self)
}

/// Q8_0: d = max|x| / 127, q = round(x / d) (half away from zero, as roundf).
@inline(__always) func quantizeQ8_0(_ x: UnsafePointer<Float>, _ p: UnsafeMutableRawPointer) {
    var amax: Float = 0
    for j in 0..<32 { amax = max(amax, abs(x[j])) }
    let d = amax / 127
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, p, 0)
    for j in 0..<32 {
        let q = (x[j] * id).rounded(.toNearestOrAwayFromZero)
        p.storeBytes(of: Int8(truncatedCode(q, -127, 127)), toByteOffset: 2 + j, as: Int8.self)
    }
}

/// Q4_0: d = (the value of largest magnitude) / -8, q = min(15, trunc(x / d + 8.5)).
@inline(__always) func quantizeQ4_0(_ x: UnsafePointer<Float>, _ p: UnsafeMutableRawPointer) {
    var amax: Float = 0, extreme: Float = 0
    for j in 0..<32 where abs(x[j]) > amax { amax = abs(x[j]); extreme = x[j] }
    let d = extreme / -8
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, p, 0)
    for j in 0..<16 {
        let q0 = truncatedCode(x[j] * id + 8.5, 0, 15), q1 = truncatedCode(x[j + 16] * id + 8.5, 0, 15)
        p.storeBytes(of: UInt8(q0 | q1 << 4), toByteOffset: 2 + j, as: UInt8.self)
    }
}

/// Q4_1: d = (max - min) / 15, m = min, q = min(15, trunc((x - min) / d + 0.5)).
@inline(__always) func quantizeQ4_1(_ x: UnsafePointer<Float>, _ p: UnsafeMutableRawPointer) {
    var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
    for j in 0..<32 { lo = min(lo, x[j]); hi = max(hi, x[j]) }
    let d = (hi - lo) / 15
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, p, 0)
    storeHalf(lo, p, 2)
    for j in 0..<16 {
        let q0 = truncatedCode((x[j] - lo) * id + 0.5, 0, 15), q1 = truncatedCode((x[j + 16] - lo) * id + 0.5, 0, 15)
        p.storeBytes(of: UInt8(q0 | q1 << 4), toByteOffset: 4 + j, as: UInt8.self)
    }
}
