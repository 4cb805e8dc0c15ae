import CBLAS
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

extension AQLMLinear {
    /// How far ahead of the lookups (bytes of codes) the kernel prefetches. The out-of-order
    /// window reaches only ~2 KB ahead and the hardware prefetchers too little further. With
    /// codes from DRAM (a whole model's layers do not stay in L3), one token through the 210
    /// linears of SmolLM2-135M on one core took 4.4 ms without prefetching, 3.1 ms at 4 KB,
    /// 3.0 ms at 8 KB and 2.9-3.0 ms at 16 KB; with codes in cache it changes nothing.
    nonisolated(unsafe) public static var prefetchDistance = 8192
}

/// The decode kernel's inner loop: for `blocks` (1...4) 64-row code blocks of one group and one
/// chunk of `tableCount` tables, out[row] += scale · Σ_t table_t[code(row, t)], the tables'
/// int16 entries stored as byte planes (`aqlmTableBytes` per table: 256 low bytes, then 256
/// high bytes). `codes` points at the chunk's first table in the group (`AQLMBlockedCodes`
/// layout: block b of table t at (t·blocks + b)·64); `out` at the group's first output row.
@inline(__always)
func accumulateLookups(codes: UnsafePointer<UInt8>, blocks: Int, tables: UnsafePointer<UInt8>, tableCount: Int, scale: Float,
                       into out: UnsafeMutablePointer<Float>) {
    #if arch(x86_64)
    if blocks == 4 {
        lookupFourBlocks(codes: codes, tables: tables, tableCount: tableCount, scale: scale, into: out)
        return
    }
    for block in 0..<blocks {
        lookupOneBlock(codes: codes + block * aqlmBlockRows, tableStride: blocks * aqlmBlockRows, tables: tables,
                       tableCount: tableCount, scale: scale, into: out + block * aqlmBlockRows)
    }
    #else
    for block in 0..<blocks {
        lookupOneBlockPortable(codes: codes + block * aqlmBlockRows, tableStride: blocks * aqlmBlockRows, tables: tables,
                               tableCount: tableCount, scale: scale, into: out + block * aqlmBlockRows)
    }
    #endif
}

/// Same sums as the AVX-512 path, one row at a time (non-x86 builds).
@inline(__always)
func lookupOneBlockPortable(codes: UnsafePointer<UInt8>, tableStride: Int, tables: UnsafePointer<UInt8>, tableCount: Int,
                            scale: Float, into out: UnsafeMutablePointer<Float>) {
    for offset in 0..<aqlmBlockRows {
        let lane = AQLMBlockedCodes.lane(ofRowInBlock: offset)
        var sum: Int32 = 0
        for t in 0..<tableCount {
            let table = tables + t * aqlmTableBytes
            let code = Int(codes[t * tableStride + lane])
            sum &+= Int32(Int16(bitPattern: UInt16(table[aqlmTableEntries + code]) << 8 | UInt16(table[code])))
        }
        out[offset] += scale * Float(sum)
    }
}

#if arch(x86_64)
private typealias Vector = __m512i

/// One table's two byte planes in eight registers: 256 low bytes (lo0-lo3) and 256 high bytes.
private struct BytePlaneTable {
    let lo0, lo1, lo2, lo3, hi0, hi1, hi2, hi3: Vector

    @inline(__always)
    init(_ table: UnsafePointer<UInt8>) {
        let p = UnsafeRawPointer(table)
        lo0 = _mm512_loadu_si512(p); lo1 = _mm512_loadu_si512(p + 64)
        lo2 = _mm512_loadu_si512(p + 128); lo3 = _mm512_loadu_si512(p + 192)
        hi0 = _mm512_loadu_si512(p + 256); hi1 = _mm512_loadu_si512(p + 320)
        hi2 = _mm512_loadu_si512(p + 384); hi3 = _mm512_loadu_si512(p + 448)
    }

    /// Entries at 64 codes as two vectors of 32 int16 words (see `AQLMBlockedCodes` for which
    /// word is which row). `vpermi2b` reads 128 bytes from two registers by the low seven bits
    /// of each code; the top bit picks between the two halves of the table.
    @inline(__always)
    func lookup(_ codes: UnsafePointer<UInt8>) -> (Vector, Vector) {
        let index = _mm512_loadu_si512(UnsafeRawPointer(codes))
        let upper = _mm512_movepi8_mask(index)
        let lo = _mm512_mask_blend_epi8(upper, _mm512_permutex2var_epi8(lo0, index, lo1), _mm512_permutex2var_epi8(lo2, index, lo3))
        let hi = _mm512_mask_blend_epi8(upper, _mm512_permutex2var_epi8(hi0, index, hi1), _mm512_permutex2var_epi8(hi2, index, hi3))
        return (_mm512_unpacklo_epi8(lo, hi), _mm512_unpackhi_epi8(lo, hi))
    }
}

/// Four int32 accumulators for one 64-row block, rows 16s ..< 16s+16 in accumulator s.
/// `vpdpwssd` with multiplier pairs (1, 0) / (0, 1) widens even / odd words and adds in one step.
private struct BlockSums {
    var s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512()
    var s2 = _mm512_setzero_si512(), s3 = _mm512_setzero_si512()

    @inline(__always)
    mutating func add(_ words: (Vector, Vector)) {
        let even = _mm512_set1_epi32(1), odd = _mm512_set1_epi32(1 << 16)
        s0 = _mm512_dpwssd_epi32(s0, words.0, even)
        s1 = _mm512_dpwssd_epi32(s1, words.0, odd)
        s2 = _mm512_dpwssd_epi32(s2, words.1, even)
        s3 = _mm512_dpwssd_epi32(s3, words.1, odd)
    }

    @inline(__always)
    func flush(scale: Float, into out: UnsafeMutablePointer<Float>) {
        addScaled(s0, scale, into: out)
        addScaled(s1, scale, into: out + 16)
        addScaled(s2, scale, into: out + 32)
        addScaled(s3, scale, into: out + 48)
    }

    @inline(__always)
    private func addScaled(_ sum: Vector, _ scale: Float, into out: UnsafeMutablePointer<Float>) {
        let o = UnsafeMutableRawPointer(out)
        let old = o.loadUnaligned(as: SIMD16<Float>.self)
        o.storeBytes(of: old + SIMD16<Float>(repeating: scale) * _mm512_cvtepi32_ps(sum), as: SIMD16<Float>.self)
    }
}

/// Four blocks (256 rows) share each table's register loads.
@inline(__always)
private func lookupFourBlocks(codes: UnsafePointer<UInt8>, tables: UnsafePointer<UInt8>, tableCount: Int,
                              scale: Float, into out: UnsafeMutablePointer<Float>) {
    var b0 = BlockSums(), b1 = BlockSums(), b2 = BlockSums(), b3 = BlockSums()
    var c = codes
    let ahead = AQLMLinear.prefetchDistance
    for t in 0..<tableCount {
        // The codes are one sequential stream (AQLMBlockedCodes), so ahead of this table's four
        // lines lie those of later tables, chunks and block groups.
        aqlm_prefetch(c + ahead); aqlm_prefetch(c + ahead + 64); aqlm_prefetch(c + ahead + 128); aqlm_prefetch(c + ahead + 192)
        let table = BytePlaneTable(tables + t * aqlmTableBytes)
        b0.add(table.lookup(c))
        b1.add(table.lookup(c + aqlmBlockRows))
        b2.add(table.lookup(c + 2 * aqlmBlockRows))
        b3.add(table.lookup(c + 3 * aqlmBlockRows))
        c += aqlmQuadBlocks * aqlmBlockRows
    }
    b0.flush(scale: scale, into: out)
    b1.flush(scale: scale, into: out + aqlmBlockRows)
    b2.flush(scale: scale, into: out + 2 * aqlmBlockRows)
    b3.flush(scale: scale, into: out + 3 * aqlmBlockRows)
}

@inline(__always)
private func lookupOneBlock(codes: UnsafePointer<UInt8>, tableStride: Int, tables: UnsafePointer<UInt8>, tableCount: Int,
                            scale: Float, into out: UnsafeMutablePointer<Float>) {
    var sums = BlockSums()
    let ahead = AQLMLinear.prefetchDistance
    for t in 0..<tableCount {
        aqlm_prefetch(codes + t * tableStride + ahead)
        sums.add(BytePlaneTable(tables + t * aqlmTableBytes).lookup(codes + t * tableStride))
    }
    sums.flush(scale: scale, into: out)
}
#endif
