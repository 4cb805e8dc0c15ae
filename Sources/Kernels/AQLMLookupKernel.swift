#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// The decode kernel's inner loop: for `blocks` (1...4) consecutive 32-row code blocks and one
/// chunk of `tableCount` int16 tables, out[row] += scale · Σ_t tables[t][code(row, t)].
/// `codes` points at the first block's first table of the chunk, blocks `blockStride` bytes
/// apart; `out` at the first block's 32 output rows (natural order).
@inline(__always)
func accumulateLookups(codes: UnsafePointer<UInt8>, blockStride: Int, blocks: Int,
                       tables: UnsafePointer<Int16>, tableCount: Int, scale: Float, into out: UnsafeMutablePointer<Float>) {
    #if arch(x86_64)
    if blocks == 4 {
        lookupFourBlocks(codes: codes, blockStride: blockStride, tables: tables, tableCount: tableCount, scale: scale, into: out)
    } else {
        for b in 0..<blocks {
            lookupOneBlock(codes: codes + b * blockStride, tables: tables, tableCount: tableCount, scale: scale,
                           into: out + b * aqlmBlockRows)
        }
    }
    #else
    for b in 0..<blocks {
        lookupOneBlockPortable(codes: codes + b * blockStride, tables: tables, tableCount: tableCount, scale: scale,
                               into: out + b * aqlmBlockRows)
    }
    #endif
}

/// Same sums as the AVX-512 path, one lane at a time (non-x86 builds).
@inline(__always)
func lookupOneBlockPortable(codes: UnsafePointer<UInt8>, tables: UnsafePointer<Int16>, tableCount: Int, scale: Float,
                            into out: UnsafeMutablePointer<Float>) {
    for offset in 0..<aqlmBlockRows {
        let lane = AQLMBlockedCodes.lane(ofRowInBlock: offset)
        var sum: Int32 = 0
        for t in 0..<tableCount {
            sum &+= Int32(tables[t * aqlmTableEntries + Int(codes[t * aqlmBlockRows + lane])])
        }
        out[offset] += scale * Float(sum)
    }
}

#if arch(x86_64)
private typealias Vector = __m512i

/// A 256-entry int16 table held in eight registers (32 entries each).
private struct Table256 {
    let t0, t1, t2, t3, t4, t5, t6, t7: Vector

    @inline(__always)
    init(_ table: UnsafePointer<Int16>) {
        let p = UnsafeRawPointer(table)
        t0 = _mm512_loadu_si512(p); t1 = _mm512_loadu_si512(p + 64)
        t2 = _mm512_loadu_si512(p + 128); t3 = _mm512_loadu_si512(p + 192)
        t4 = _mm512_loadu_si512(p + 256); t5 = _mm512_loadu_si512(p + 320)
        t6 = _mm512_loadu_si512(p + 384); t7 = _mm512_loadu_si512(p + 448)
    }

    /// Entries at 32 byte codes: `vpermi2w` reads 64 entries from two registers by the low six
    /// index bits; bits 6 and 7 then pick one of the four quarter results.
    @inline(__always)
    func lookup(_ codes: UnsafePointer<UInt8>) -> Vector {
        let index = _mm512_cvtepu8_epi16(_mm256_loadu_si256(UnsafeRawPointer(codes).assumingMemoryBound(to: __m256i.self)))
        let q0 = _mm512_permutex2var_epi16(t0, index, t1)
        let q1 = _mm512_permutex2var_epi16(t2, index, t3)
        let q2 = _mm512_permutex2var_epi16(t4, index, t5)
        let q3 = _mm512_permutex2var_epi16(t6, index, t7)
        let bit6 = _mm512_test_epi16_mask(index, _mm512_set1_epi16(64))
        let bit7 = _mm512_test_epi16_mask(index, _mm512_set1_epi16(128))
        return _mm512_mask_blend_epi16(bit7, _mm512_mask_blend_epi16(bit6, q0, q1), _mm512_mask_blend_epi16(bit6, q2, q3))
    }
}

/// Two int32 accumulators for one 32-row block: rows 0..<16 (even int16 lanes) and 16..<32
/// (odd lanes). `vpdpwssd` with multiplier pairs (1, 0) / (0, 1) widens and adds in one step.
private struct BlockSums {
    var low = _mm512_setzero_si512()
    var high = _mm512_setzero_si512()

    @inline(__always)
    mutating func add(_ entries: Vector) {
        low = _mm512_dpwssd_epi32(low, entries, _mm512_set1_epi32(1))
        high = _mm512_dpwssd_epi32(high, entries, _mm512_set1_epi32(1 << 16))
    }

    @inline(__always)
    func flush(scale: Float, into out: UnsafeMutablePointer<Float>) {
        let s = SIMD16<Float>(repeating: scale)
        let o = UnsafeMutableRawPointer(out)
        let lo = _mm512_cvtepi32_ps(low)
        let hi = _mm512_cvtepi32_ps(high)
        o.storeBytes(of: o.loadUnaligned(as: SIMD16<Float>.self) + s * lo, as: SIMD16<Float>.self)
        o.storeBytes(of: o.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self) + s * hi, toByteOffset: 64,
                     as: SIMD16<Float>.self)
    }
}

/// Four blocks (128 rows) share each table's register loads.
@inline(__always)
private func lookupFourBlocks(codes: UnsafePointer<UInt8>, blockStride: Int, tables: UnsafePointer<Int16>, tableCount: Int,
                              scale: Float, into out: UnsafeMutablePointer<Float>) {
    var s0 = BlockSums(), s1 = BlockSums(), s2 = BlockSums(), s3 = BlockSums()
    var c = codes
    for t in 0..<tableCount {
        let table = Table256(tables + t * aqlmTableEntries)
        s0.add(table.lookup(c))
        s1.add(table.lookup(c + blockStride))
        s2.add(table.lookup(c + 2 * blockStride))
        s3.add(table.lookup(c + 3 * blockStride))
        c += aqlmBlockRows
    }
    s0.flush(scale: scale, into: out)
    s1.flush(scale: scale, into: out + aqlmBlockRows)
    s2.flush(scale: scale, into: out + 2 * aqlmBlockRows)
    s3.flush(scale: scale, into: out + 3 * aqlmBlockRows)
}

@inline(__always)
private func lookupOneBlock(codes: UnsafePointer<UInt8>, tables: UnsafePointer<Int16>, tableCount: Int, scale: Float,
                            into out: UnsafeMutablePointer<Float>) {
    var sums = BlockSums()
    for t in 0..<tableCount {
        sums.add(Table256(tables + t * aqlmTableEntries).lookup(codes + t * aqlmBlockRows))
    }
    sums.flush(scale: scale, into: out)
}
#endif
