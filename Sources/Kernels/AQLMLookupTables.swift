#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Lookup tables of the decode kernel. For one token x and table t = (group j, codebook m),
/// LUT_t[c] = codebooks[m][c] · x[j·G ..< (j+1)·G], so that row r's output is
/// scales[r] · Σ_t LUT_t[codes[r, t]]: M·d_in/G table reads per row instead of d_in products.
///
/// Tables are built in chunks of `aqlmChunkGroups(M)` groups (≤ 16 tables) and stored as int16
/// with one step s per chunk, split into a low-byte and a high-byte plane so the kernel looks up
/// 64 rows per `vpermi2b` pair. The step comes before the tables, from Cauchy-Schwarz:
/// |LUT_t[c]| ≤ ‖x_j‖ · ‖codebooks[m][c]‖ ≤ max_j ‖x_j‖ · max_{m,c} ‖codebooks[m][c]‖ = B, and
/// s = B / 32000 keeps every entry in int16 (with margin for Float32 rounding), so each
/// entry is rounded as it leaves the FMA registers, never stored as Float32 (12% faster decode
/// than building Float32 tables and scaling by their measured maximum). B overestimates a chunk's
/// largest entry 1.5-1.8× (measured: random codebooks, Gaussian inputs): < 1 of the 15 bits.
/// Rounding moves each entry by at most s/2, so a row's output moves by at most
/// |scales[r]| · Σ_chunks (tables in chunk) · s_chunk / 2 (see `decodeErrorBound`), ~1e-4 of
/// the output scale, far below the 2-bit quantization error. A per-chunk rather than per-token
/// step keeps one outlier input group from coarsening every other group's tables.

/// Groups per table chunk: up to 16 tables (all M codebooks of each group).
@inline(__always)
func aqlmChunkGroups(codebookCount: Int) -> Int { max(1, 16 / codebookCount) }

/// Largest int16 table entry the step aims at: below 32767 so that Float32 rounding in the
/// table dot products cannot push an entry past the int16 range.
let aqlmTableLimit: Float = 32000

/// Step of the int16 tables of groups `groups` (see above); 0 if every entry is 0, NaN or
/// infinite if x is (the kernel then multiplies its sums by it, so the outputs are NaN, as in
/// the dense product).
@inline(__always)
func aqlmTableStep(x: UnsafePointer<Float>, groupSize g: Int, groups: Range<Int>, largestCodewordNorm: Float) -> Float {
    var largestSquare: Float = 0
    for j in groups {
        var square: Float = 0
        for k in 0..<g { square += x[j * g + k] * x[j * g + k] }
        // Tested with isNaN: the `!(square <= largestSquare)` form lost the NaN in this -Ounchecked build.
        if square > largestSquare || square.isNaN { largestSquare = square }
    }
    return largestSquare.squareRoot() * largestCodewordNorm / aqlmTableLimit
}

/// The int16 tables of groups `groups` with step `step`, as byte planes into `tables`
/// [groups.count · M][aqlmTableBytes], table order (group, codebook). `transposed` is [M, G, 256];
/// `x` one token's input row.
@inline(__always)
func buildTables(x: UnsafePointer<Float>, transposed: UnsafePointer<Float>, groupSize g: Int, codebookCount: Int,
                 groups: Range<Int>, step: Float, into tables: UnsafeMutablePointer<UInt8>) {
    let count = groups.count * codebookCount
    guard step > 0, step.isFinite else {
        tables.update(repeating: 0, count: count * aqlmTableBytes)
        return
    }
    // x / step, so the dot products come out in steps.
    withUnsafeTemporaryAllocation(of: Float.self, capacity: groups.count * g) { buffer in
        let scaled = buffer.baseAddress!
        let inverse = 1 / step
        for i in 0..<(groups.count * g) { scaled[i] = x[groups.lowerBound * g + i] * inverse }
        buildScaledTables(scaled, transposed: transposed, groupSize: g, codebookCount: codebookCount,
                          groupCount: groups.count, into: tables)
    }
}

@inline(__always)
private func buildScaledTables(_ scaled: UnsafePointer<Float>, transposed: UnsafePointer<Float>, groupSize g: Int,
                               codebookCount: Int, groupCount: Int, into tables: UnsafeMutablePointer<UInt8>) {
    let groups = 0..<groupCount
    // Made here, once per chunk: a global read inside the loops went through a lazy-initialisation
    // check whose call spilled every accumulator.
    let planes = BytePlaneStore()
    for m in 0..<codebookCount {
        let cb = transposed + m * g * aqlmTableEntries
        var j = 0
        while j + 4 <= groups.count {
            buildFourTables(x: scaled + j * g, codebook: cb, groupSize: g, planes: planes,
                            into: tables + (j * codebookCount + m) * aqlmTableBytes,
                            tableStride: codebookCount * aqlmTableBytes)
            j += 4
        }
        while j < groups.count {
            buildOneTable(x: scaled + j * g, codebook: cb, groupSize: g, planes: planes,
                          into: tables + (j * codebookCount + m) * aqlmTableBytes)
            j += 1
        }
    }
}

/// Tables of four consecutive groups for one codebook: each codebook vector load feeds four
/// FMAs (one per group), so the build runs at FMA rather than load throughput.
@inline(__always)
private func buildFourTables(x: UnsafePointer<Float>, codebook: UnsafePointer<Float>, groupSize g: Int, planes: BytePlaneStore,
                             into out: UnsafeMutablePointer<UInt8>, tableStride: Int) {
    let cb = UnsafeRawPointer(codebook)
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
        planes.store(a0, b0, out, c)
        planes.store(a1, b1, out + tableStride, c)
        planes.store(a2, b2, out + 2 * tableStride, c)
        planes.store(a3, b3, out + 3 * tableStride, c)
        c += 32
    }
}

@inline(__always)
private func buildOneTable(x: UnsafePointer<Float>, codebook: UnsafePointer<Float>, groupSize g: Int, planes: BytePlaneStore,
                           into out: UnsafeMutablePointer<UInt8>) {
    let cb = UnsafeRawPointer(codebook)
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
        planes.store(a0, a1, out, c)
        planes.store(a2, a3, out, c + 32)
        c += 64
    }
}

/// Stores table entries as byte planes: `store(low, high, table, c)` writes entries c ..< c+32
/// of one table from values already in steps (|v| < 32767; `low` holds entries c ..< c+16,
/// `high` the next 16): the low bytes of their nearest integers (ties to even) at table[c...],
/// the high bytes at table[256 + c...].
private struct BytePlaneStore {
    #if arch(x86_64)
    /// vpermb indices from `vpackssdw(a, b)`'s words (per 128-bit lane L: a[4L ..< 4L+4], then
    /// b[4L ..< 4L+4]) to [low bytes of entries 0..<32, high bytes of entries 0..<32].
    let order: __m512i

    @inline(__always)
    init() {
        var order = SIMD64<UInt8>()
        for entry in 0..<32 {
            let e = entry % 16, word = 8 * (e / 4) + (entry < 16 ? 0 : 4) + e % 4
            order[entry] = UInt8(2 * word)
            order[32 + entry] = UInt8(2 * word + 1)
        }
        self.order = unsafeBitCast(order, to: __m512i.self)
    }
    #else
    init() {}
    #endif

    @inline(__always)
    func store(_ low: SIMD16<Float>, _ high: SIMD16<Float>, _ table: UnsafeMutablePointer<UInt8>, _ c: Int) {
        #if arch(x86_64)
        // vcvtps2dq twice, one vpackssdw (never saturates: |v| < 32767) and one vpermb that puts the
        // 32 low bytes in the vector's low half and the 32 high bytes in its high half, then two
        // masked 32-byte stores: 5 shuffle/convert µops per 32 entries where two vpmovdb per 16
        // entries (2 µops each on port 5) plus a shift took 12.
        let words = _mm512_packs_epi32(_mm512_cvtps_epi32(low), _mm512_cvtps_epi32(high))
        let planes = _mm512_permutexvar_epi8(order, words)
        _mm512_mask_storeu_epi8(UnsafeMutableRawPointer(table + c), 0x0000_0000_FFFF_FFFF, planes)
        // Bytes 32..<64 land at table[256 + c ..< 256 + c + 32]; masked-off bytes are neither
        // written nor faulted on.
        _mm512_mask_storeu_epi8(UnsafeMutableRawPointer(table + aqlmTableEntries + c - 32), ~0x0000_0000_FFFF_FFFF, planes)
        #else
        for lane in 0..<32 {
            let v = lane < 16 ? low[lane] : high[lane - 16]
            let q = UInt16(bitPattern: Int16(v.rounded(.toNearestOrEven)))
            table[c + lane] = UInt8(q & 0xFF)
            table[aqlmTableEntries + c + lane] = UInt8(q >> 8)
        }
        #endif
    }
}
