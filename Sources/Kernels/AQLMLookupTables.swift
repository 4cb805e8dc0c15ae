#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Lookup tables of the decode kernel. For one token x and table t = (group j, codebook m),
/// LUT_t[c] = codebooks[m][c] · x[j·G ..< (j+1)·G], so that row r's output is
/// scales[r] · Σ_t LUT_t[codes[r, t]]: M·d_in/G table reads per row instead of d_in products.
///
/// Tables are built in chunks of `aqlmChunkGroups(M)` groups (≤ 16 tables, 16 KB of Float32:
/// L1-resident) and stored as int16 with one scale per chunk, s = max|LUT| / 32767, split into
/// a low-byte and a high-byte plane so the kernel looks up 64 rows per `vpermi2b` pair. Rounding moves each entry by at most s/2, so a
/// row's output moves by at most |scales[r]| · Σ_chunks (tables in chunk) · s_chunk / 2 — about
/// 1e-4 of the largest table entry per table (15 bits), far below the 2-bit quantization
/// error. A per-chunk rather than per-token scale keeps one outlier input group from coarsening
/// every other group's tables.

/// Groups per table chunk: up to 16 tables (all M codebooks of each group).
@inline(__always)
func aqlmChunkGroups(codebookCount: Int) -> Int { max(1, 16 / codebookCount) }

/// Largest int16 table entry; entries are accumulated in int32, so the full range is usable.
let aqlmTableLimit: Float = 32767

/// Float32 tables of groups `groups` into `tables` [groups.count · M][256], table order
/// (group, codebook), returning their largest magnitude (tracked as they are stored, saving
/// the quantizer a pass). `transposed` is [M, G, 256]; `x` one token's input row.
@inline(__always)
func buildFloatTables(x: UnsafePointer<Float>, transposed: UnsafePointer<Float>, groupSize g: Int, codebookCount: Int,
                      groups: Range<Int>, into tables: UnsafeMutablePointer<Float>) -> Float {
    var largest = SIMD16<Float>()
    for m in 0..<codebookCount {
        let cb = transposed + m * g * aqlmTableEntries
        var j = groups.lowerBound
        while j + 4 <= groups.upperBound {
            buildFourTables(x: x + j * g, codebook: cb, groupSize: g,
                            into: tables + ((j - groups.lowerBound) * codebookCount + m) * aqlmTableEntries,
                            tableStride: codebookCount * aqlmTableEntries, largest: &largest)
            j += 4
        }
        while j < groups.upperBound {
            buildOneTable(x: x + j * g, codebook: cb, groupSize: g,
                          into: tables + ((j - groups.lowerBound) * codebookCount + m) * aqlmTableEntries,
                          largest: &largest)
            j += 1
        }
    }
    return largest.max()
}

/// Stores v at out + byteOffset and folds |v| into the running lane-wise maximum.
@inline(__always)
private func store(_ v: SIMD16<Float>, _ out: UnsafeMutableRawPointer, _ byteOffset: Int, largest: inout SIMD16<Float>) {
    out.storeBytes(of: v, toByteOffset: byteOffset, as: SIMD16<Float>.self)
    largest = lanewiseMax(largest, abs(v))
}

/// Tables of four consecutive groups for one codebook: each codebook vector load feeds four
/// FMAs (one per group), so the build runs at FMA rather than load throughput.
@inline(__always)
private func buildFourTables(x: UnsafePointer<Float>, codebook: UnsafePointer<Float>, groupSize g: Int,
                             into out: UnsafeMutablePointer<Float>, tableStride: Int, largest: inout SIMD16<Float>) {
    let cb = UnsafeRawPointer(codebook)
    let o = UnsafeMutableRawPointer(out)
    var c = 0
    while c < aqlmTableEntries {
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
        var b0 = SIMD16<Float>(), b1 = SIMD16<Float>(), b2 = SIMD16<Float>(), b3 = SIMD16<Float>()
        for k in 0..<g {
            let row = (k * aqlmTableEntries + c) * 4
            let lo = cb.loadUnaligned(fromByteOffset: row, as: SIMD16<Float>.self)
            let hi = cb.loadUnaligned(fromByteOffset: row + 64, as: SIMD16<Float>.self)
            let x0 = x[k], x1 = x[g + k], x2 = x[2 * g + k], x3 = x[3 * g + k]
            a0.addProduct(lo, SIMD16(repeating: x0)); b0.addProduct(hi, SIMD16(repeating: x0))
            a1.addProduct(lo, SIMD16(repeating: x1)); b1.addProduct(hi, SIMD16(repeating: x1))
            a2.addProduct(lo, SIMD16(repeating: x2)); b2.addProduct(hi, SIMD16(repeating: x2))
            a3.addProduct(lo, SIMD16(repeating: x3)); b3.addProduct(hi, SIMD16(repeating: x3))
        }
        let stride = tableStride * 4
        store(a0, o, c * 4, largest: &largest)
        store(b0, o, c * 4 + 64, largest: &largest)
        store(a1, o, stride + c * 4, largest: &largest)
        store(b1, o, stride + c * 4 + 64, largest: &largest)
        store(a2, o, 2 * stride + c * 4, largest: &largest)
        store(b2, o, 2 * stride + c * 4 + 64, largest: &largest)
        store(a3, o, 3 * stride + c * 4, largest: &largest)
        store(b3, o, 3 * stride + c * 4 + 64, largest: &largest)
        c += 32
    }
}

@inline(__always)
private func buildOneTable(x: UnsafePointer<Float>, codebook: UnsafePointer<Float>, groupSize g: Int,
                           into out: UnsafeMutablePointer<Float>, largest: inout SIMD16<Float>) {
    let cb = UnsafeRawPointer(codebook)
    let o = UnsafeMutableRawPointer(out)
    var c = 0
    while c < aqlmTableEntries {
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
        for k in 0..<g {
            let row = (k * aqlmTableEntries + c) * 4
            let xk = SIMD16<Float>(repeating: x[k])
            a0.addProduct(cb.loadUnaligned(fromByteOffset: row, as: SIMD16<Float>.self), xk)
            a1.addProduct(cb.loadUnaligned(fromByteOffset: row + 64, as: SIMD16<Float>.self), xk)
            a2.addProduct(cb.loadUnaligned(fromByteOffset: row + 128, as: SIMD16<Float>.self), xk)
            a3.addProduct(cb.loadUnaligned(fromByteOffset: row + 192, as: SIMD16<Float>.self), xk)
        }
        store(a0, o, c * 4, largest: &largest)
        store(a1, o, c * 4 + 64, largest: &largest)
        store(a2, o, c * 4 + 128, largest: &largest)
        store(a3, o, c * 4 + 192, largest: &largest)
        c += 64
    }
}

/// Rounds `tableCount` Float32 tables of largest magnitude `largest` to int16 with the chunk
/// scale largest / 32767, writes each as its low-byte plane then its high-byte plane
/// (`aqlmTableBytes` per table), and returns the scale (0 for an all-zero chunk).
@inline(__always)
func quantizeTables(_ tables: UnsafePointer<Float>, tableCount: Int, largest: Float, into out: UnsafeMutablePointer<UInt8>) -> Float {
    let src = UnsafeRawPointer(tables)
    guard largest > 0 else {
        out.update(repeating: 0, count: tableCount * aqlmTableBytes)
        return 0
    }
    let inverse = SIMD16<Float>(repeating: aqlmTableLimit / largest)
    for t in 0..<tableCount {
        let table = src + t * aqlmTableEntries * 4
        let low = UnsafeMutableRawPointer(out + t * aqlmTableBytes)
        let high = low + aqlmTableEntries
        for c in stride(from: 0, to: aqlmTableEntries, by: 16) {
            let (lo, hi) = roundToBytePlanes(table.loadUnaligned(fromByteOffset: c * 4, as: SIMD16<Float>.self) * inverse)
            low.storeBytes(of: lo, toByteOffset: c, as: SIMD16<UInt8>.self)
            high.storeBytes(of: hi, toByteOffset: c, as: SIMD16<UInt8>.self)
        }
    }
    return largest / aqlmTableLimit
}

/// Low and high bytes of the int16 nearest (ties to even) to values already within ±32767.
/// The generic `SIMD16<Int32>(_:rounding:)` converts lane by lane through a library call; this
/// is `vcvtps2dq` and two `vpmovdb` (truncating: the low byte, then after `vpsrad` the high).
@inline(__always)
private func roundToBytePlanes(_ v: SIMD16<Float>) -> (SIMD16<UInt8>, SIMD16<UInt8>) {
    #if arch(x86_64)
    let words = _mm512_cvtps_epi32(v)
    let lo = unsafeBitCast(_mm512_cvtepi32_epi8(words), to: SIMD16<UInt8>.self)
    let hi = unsafeBitCast(_mm512_cvtepi32_epi8(_mm512_srai_epi32(words, 8)), to: SIMD16<UInt8>.self)
    return (lo, hi)
    #else
    var lo = SIMD16<UInt8>(), hi = SIMD16<UInt8>()
    for lane in 0..<16 {
        let q = UInt16(bitPattern: Int16(v[lane].rounded(.toNearestOrEven)))
        lo[lane] = UInt8(q & 0xFF)
        hi[lane] = UInt8(q >> 8)
    }
    return (lo, hi)
    #endif
}

/// `pointwiseMax` of the standard library goes lane by lane; this is one `vmaxps`.
@inline(__always)
private func lanewiseMax(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
    #if arch(x86_64)
    return _mm512_max_ps(a, b)
    #else
    return a.replacing(with: b, where: b .> a)
    #endif
}

@inline(__always)
private func abs(_ v: SIMD16<Float>) -> SIMD16<Float> {
    let magnitude = unsafeBitCast(v, to: SIMD16<UInt32>.self) & SIMD16<UInt32>(repeating: 0x7FFF_FFFF)
    return unsafeBitCast(magnitude, to: SIMD16<Float>.self)
}
