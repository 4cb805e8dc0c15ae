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
    for m in 0..<codebookCount {
        let cb = transposed + m * g * aqlmTableEntries
        var j = 0
        while j + 4 <= groups.count {
            buildFourTables(x: scaled + j * g, codebook: cb, groupSize: g, into: tables + (j * codebookCount + m) * aqlmTableBytes,
                            tableStride: codebookCount * aqlmTableBytes)
            j += 4
        }
        while j < groups.count {
            buildOneTable(x: scaled + j * g, codebook: cb, groupSize: g, into: tables + (j * codebookCount + m) * aqlmTableBytes)
            j += 1
        }
    }
}

/// Tables of four consecutive groups for one codebook: each codebook vector load feeds four
/// FMAs (one per group), so the build runs at FMA rather than load throughput.
@inline(__always)
private func buildFourTables(x: UnsafePointer<Float>, codebook: UnsafePointer<Float>, groupSize g: Int,
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
        storeBytePlanes(a0, out, c); storeBytePlanes(b0, out, c + 16)
        storeBytePlanes(a1, out + tableStride, c); storeBytePlanes(b1, out + tableStride, c + 16)
        storeBytePlanes(a2, out + 2 * tableStride, c); storeBytePlanes(b2, out + 2 * tableStride, c + 16)
        storeBytePlanes(a3, out + 3 * tableStride, c); storeBytePlanes(b3, out + 3 * tableStride, c + 16)
        c += 32
    }
}

@inline(__always)
private func buildOneTable(x: UnsafePointer<Float>, codebook: UnsafePointer<Float>, groupSize g: Int,
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
        storeBytePlanes(a0, out, c); storeBytePlanes(a1, out, c + 16)
        storeBytePlanes(a2, out, c + 32); storeBytePlanes(a3, out, c + 48)
        c += 64
    }
}

/// Entries c ..< c+16 of one table from values already in steps (|v| < 32767): the low bytes
/// of their nearest integers (ties to even) at table[c...], the high bytes at table[256 + c...].
@inline(__always)
private func storeBytePlanes(_ v: SIMD16<Float>, _ table: UnsafeMutablePointer<UInt8>, _ c: Int) {
    let low = UnsafeMutableRawPointer(table + c)
    let high = UnsafeMutableRawPointer(table + aqlmTableEntries + c)
    #if arch(x86_64)
    // The generic SIMD16<Int32>(_:rounding:) converts lane by lane through a library call; this
    // is vcvtps2dq and two truncating vpmovdb (the low byte, then after a shift the high byte).
    let words = _mm512_cvtps_epi32(v)
    low.storeBytes(of: unsafeBitCast(_mm512_cvtepi32_epi8(words), to: SIMD16<UInt8>.self), as: SIMD16<UInt8>.self)
    high.storeBytes(of: unsafeBitCast(_mm512_cvtepi32_epi8(_mm512_srai_epi32(words, 8)), to: SIMD16<UInt8>.self),
                    as: SIMD16<UInt8>.self)
    #else
    for lane in 0..<16 {
        let q = UInt16(bitPattern: Int16(v[lane].rounded(.toNearestOrEven)))
        low.storeBytes(of: UInt8(q & 0xFF), toByteOffset: lane, as: UInt8.self)
        high.storeBytes(of: UInt8(q >> 8), toByteOffset: lane, as: UInt8.self)
    }
    #endif
}
