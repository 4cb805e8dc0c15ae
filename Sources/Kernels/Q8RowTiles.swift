#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif
import CBLAS

/// A Q8_0 matrix [rows × width] (each run of 32 values of a row: int8 q, one fp16 step d) laid
/// out for decode-step dot products with VNNI (`vpdpbusd`: 4 u8 × s8 products summed into each
/// int32 lane), so that the 16 lanes of a vector are 16 *rows* and no horizontal sums are needed.
///
/// Layout: rows in tiles of 64 (the last tile padded with rows of zero steps). For tile t and
/// 32-column block b, one record of `recordBytes` = 64 rows × 34 bytes (the size of Q8_0):
/// - 2048 bytes of values: vector v = 8g + k (64 bytes) holds columns 32b + 4k ..< 32b + 4k + 4 of
///   rows 64t + 16g ..< 64t + 16g + 16, four consecutive bytes per row (lane = row mod 16);
/// - 64 fp16 steps, one per row of the tile.
///
/// Records follow each other tile-major (t, then b), so a row range is one sequential stream.
/// Values are stored offset by +128 (q XOR 0x80, as unsigned bytes): `vpdpbusd` multiplies
/// unsigned by signed bytes, and with the offset on the *weights* the correction
/// Σ 128·xq_i depends on the activations only (one integer per block, shared by every row)
/// instead of needing a per-row weight sum. Padded rows hold offset zero (0x80) and step 0.
public struct Q8RowTiles: @unchecked Sendable {
    public let rows: Int
    public let width: Int
    /// The records (see the type's comment); shared, not copied, when the table is copied.
    private(set) var bytes: [UInt8]

    public static let tileRows = 64
    static let laneRows = 16
    /// Value bytes of one record: 64 rows × 32 values.
    static let valueBytes = tileRows * q8BlockSize
    static let recordBytes = valueBytes + 2 * tileRows

    public var blocks: Int { width / q8BlockSize }
    public var tiles: Int { (rows + Self.tileRows - 1) / Self.tileRows }
    /// Bytes held, the padding rows of the last tile included.
    public var byteCount: Int { bytes.count }

    /// A matrix whose rows are all zero until `setRow` fills them.
    init(rows: Int, width: Int) {
        precondition(rows > 0 && width > 0 && width % q8BlockSize == 0, "Q8_0 rows need a width that is a multiple of 32")
        self.rows = rows
        self.width = width
        let tiles = (rows + Self.tileRows - 1) / Self.tileRows
        bytes = [UInt8](repeating: 0, count: tiles * (width / q8BlockSize) * Self.recordBytes)
        bytes.withUnsafeMutableBytes { b in
            for record in 0..<(tiles * (width / q8BlockSize)) {
                // Offset zero: q = 0 for rows never set (the padding of the last tile).
                (b.baseAddress! + record * Self.recordBytes).initializeMemory(as: UInt8.self, repeating: 0x80, count: Self.valueBytes)
            }
        }
    }

    /// Where column block `b` of row `r` starts: its record, the row's value vector group
    /// g = (r mod 64) / 16 and lane r mod 16.
    @inline(__always)
    private static func location(row r: Int, block b: Int, blocks: Int) -> (record: Int, values: Int, step: Int) {
        let record = ((r / Self.tileRows) * blocks + b) * Self.recordBytes
        let inTile = r % Self.tileRows
        return (record, record + (inTile / Self.laneRows) * 8 * 64 + 4 * (inTile % Self.laneRows),
                record + Self.valueBytes + 2 * inTile)
    }

    /// Row `r` from its int8 values [width] and fp16 step bit patterns [width / 32].
    mutating func setRow(_ r: Int, values q: UnsafePointer<Int8>, steps: UnsafePointer<UInt16>) {
        precondition(r >= 0 && r < rows, "row \(r) outside 0..<\(rows)")
        let blocks = self.blocks
        bytes.withUnsafeMutableBytes { b in
            let base = b.baseAddress!
            for block in 0..<blocks {
                let at = Self.location(row: r, block: block, blocks: blocks)
                base.storeBytes(of: steps[block].littleEndian, toByteOffset: at.step, as: UInt16.self)
                for k in 0..<8 {
                    for i in 0..<4 {
                        let value = UInt8(bitPattern: q[block * q8BlockSize + 4 * k + i]) ^ 0x80
                        base.storeBytes(of: value, toByteOffset: at.values + 64 * k + i, as: UInt8.self)
                    }
                }
            }
        }
    }

    /// Row `r` dequantized: out[32b + i] = d_b · q_{32b+i}, out [width].
    func dequantizeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        let blocks = self.blocks
        bytes.withUnsafeBytes { b in
            let base = b.baseAddress!
            for block in 0..<blocks {
                let at = Self.location(row: r, block: block, blocks: blocks)
                let d = Float(Float16(bitPattern: UInt16(littleEndian: base.load(fromByteOffset: at.step, as: UInt16.self))))
                // The block's 32 values are eight 4-byte words 64 bytes apart.
                var words = SIMD8<UInt32>()
                for k in 0..<8 { words[k] = base.loadUnaligned(fromByteOffset: at.values + 64 * k, as: UInt32.self) }
                let offsetValues = unsafeBitCast(words, to: SIMD32<UInt8>.self) ^ 0x80
                let q = unsafeBitCast(offsetValues, to: SIMD32<Int8>.self)
                let o = out + block * q8BlockSize
                #if arch(x86_64)
                // vpmovsxbd + vcvtdq2ps per 16 values (Swift's generic SIMD conversion is scalar).
                let scale = SIMD16<Float>(repeating: d)
                storeVector(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(unsafeBitCast(q.lowHalf, to: SIMD2<Int64>.self))) * scale, o)
                storeVector(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(unsafeBitCast(q.highHalf, to: SIMD2<Int64>.self))) * scale, o + 16)
                #else
                for i in 0..<q8BlockSize { o[i] = d * Float(q[i]) }
                #endif
            }
        }
    }

    /// The fp16 step of every block: whether all are finite.
    var stepsFinite: Bool {
        bytes.withUnsafeBytes { b in
            for record in 0..<(tiles * blocks) {
                for s in 0..<Self.tileRows {
                    let bits = UInt16(littleEndian: b.load(fromByteOffset: record * Self.recordBytes + Self.valueBytes + 2 * s, as: UInt16.self))
                    if bits & 0x7C00 == 0x7C00 { return false }
                }
            }
            return true
        }
    }

    /// Whether `other` is the very same storage (a tied head reads the embedding's records).
    func sharesStorage(with other: Q8RowTiles) -> Bool {
        bytes.withUnsafeBytes { a in other.bytes.withUnsafeBytes { b in a.baseAddress == b.baseAddress } }
    }

    /// y[t·rows + r] = Σ_b d_{r,b} · dx_{t,b} · Σ_i q_{r,32b+i} · xq_{t,32b+i} for tiles `tileRange`
    /// and the `tokens` activations of `x` (quantized by `Q8Activations`).
    func multiply(tiles tileRange: Range<Int>, _ x: Q8Activations, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        bytes.withUnsafeBytes { b in
            let base = b.baseAddress!
            let tileBytes = blocks * Self.recordBytes
            let sums = UnsafeMutablePointer<Float>.allocate(capacity: Self.tileRows)
            defer { sums.deallocate() }
            for tile in tileRange {
                let first = tile * Self.tileRows, count = min(Self.tileRows, rows - first)
                for t in 0..<tokens {
                    q8TileDots(base + tile * tileBytes, blocks: blocks, x: x, token: t, into: sums)
                    (y + t * rows + first).update(from: sums, count: count)
                }
            }
        }
    }
}

/// Activations [tokens × width] as the sum of two int8 terms per 32-value block, for VNNI dot
/// products with Q8_0 rows:
///   x ≈ d₀·q₀ + d₁·q₁,  d₀ = max|x| / 127, q₀ = round(x / d₀)  (llama.cpp's Q8_0 activations),
///                        r = x − d₀·q₀,  d₁ = max|r| / 127,  q₁ = round(r / d₁),
/// rounded half away from zero, q in −127...127, steps kept in Float32; and per term and block
/// the correction −128·Σq that undoes the weights' +128 offset.
///
/// Why two terms: with q₀ alone (what llama.cpp's `ggml_vec_dot_q8_0_q8_0` uses) each value is
/// off by up to d₀/2 = max|x_b|/254 of its block, and the final hidden states of these models
/// have outlier channels that make d₀ large for the other values of their block: measured on
/// SmolLM2-135M's head (2 chunks × 255 positions), one term moved perplexity by 1.0e-3 relative
/// and changed the greedy token at 10 of 510 positions (mean |Δlogit| 0.048). The second term
/// leaves at most d₁/2 ≤ d₀/508 per value (254 times less); it doubles the integer work, which
/// the decode step does not feel because the head waits on memory (30-145 MB of Q8_0 per token).
struct Q8Activations {
    static let terms = 2
    /// Per token and block, the terms' 32 values one after the other: [tokens × blocks × 2 × 32].
    let values: UnsafeMutablePointer<Int8>
    /// d₀, d₁ per token and block: [tokens × blocks × 2].
    let steps: UnsafeMutablePointer<Float>
    /// −128·Σq₀, −128·Σq₁ per token and block: [tokens × blocks × 2].
    let corrections: UnsafeMutablePointer<Int32>
    let blocks: Int

    /// Quantizes x [tokens × width] (width a multiple of 32). Call `deallocate` when done.
    init(_ x: UnsafePointer<Float>, tokens: Int, width: Int) {
        let blocks = tokens * width / q8BlockSize
        self.blocks = width / q8BlockSize
        values = .allocate(capacity: blocks * Self.terms * q8BlockSize)
        steps = .allocate(capacity: blocks * Self.terms)
        corrections = .allocate(capacity: blocks * Self.terms)
        for b in 0..<blocks {
            let block = x + b * q8BlockSize
            var low = loadVector(block), high = loadVector(block + 16)
            // A NaN or infinity (a diverged model) gives NaN logits, as the Float32 path would,
            // rather than an undefined float-to-int conversion.
            let finite = all((low - low) + (high - high) .== 0)
            for term in 0..<Self.terms {
                let at = b * Self.terms + term
                let out = values + at * q8BlockSize
                guard finite else {
                    out.initialize(repeating: 0, count: q8BlockSize)
                    steps[at] = .nan
                    corrections[at] = 0
                    continue
                }
                let d = pointwiseMax(pointwiseMax(low, -low), pointwiseMax(high, -high)).max() / 127
                let inverse = SIMD16<Float>(repeating: d > 0 ? 1 / d : 0)
                let limit = SIMD16<Float>(repeating: 127)
                let ql = (low * inverse).rounded(.toNearestOrAwayFromZero).clamped(lowerBound: -limit, upperBound: limit)
                let qh = (high * inverse).rounded(.toNearestOrAwayFromZero).clamped(lowerBound: -limit, upperBound: limit)
                let il = SIMD16<Int32>(ql), ih = SIMD16<Int32>(qh)
                for i in 0..<16 {
                    out[i] = Int8(truncatingIfNeeded: il[i])
                    out[16 + i] = Int8(truncatingIfNeeded: ih[i])
                }
                steps[at] = d
                corrections[at] = -128 &* (il &+ ih).wrappedSum()
                // The remainder is what the next term quantizes.
                low -= ql * d
                high -= qh * d
            }
        }
    }

    func deallocate() {
        values.deallocate()
        steps.deallocate()
        corrections.deallocate()
    }
}

/// The 64 row sums of one tile for one token: Σ_b d_b · Σ_terms d_term · (Σ_i (q_i + 128)·xq_i − 128·Σ xq_i),
/// the integer part exact in int32 (|Σ| ≤ 32 · 255 · 127 per block and term).
@inline(__always)
private func q8TileDots(_ tile: UnsafeRawPointer, blocks: Int, x: Q8Activations, token: Int, into out: UnsafeMutablePointer<Float>) {
    let terms = Q8Activations.terms
    let xq = UnsafeRawPointer(x.values + token * x.blocks * terms * q8BlockSize)
    let dx = x.steps + token * x.blocks * terms, correction = x.corrections + token * x.blocks * terms
    #if arch(x86_64)
    var f0 = SIMD16<Float>(), f1 = SIMD16<Float>(), f2 = SIMD16<Float>(), f3 = SIMD16<Float>()
    let ahead = EmbeddingTable.prefetchDistance
    for b in 0..<blocks {
        let record = tile + b * Q8RowTiles.recordBytes
        for line in stride(from: 0, to: Q8RowTiles.recordBytes, by: 64) { aqlm_prefetch(record + ahead + line) }
        // One chain per 16-row group and term: eight independent vpdpbusd chains hide its
        // latency, and each loaded weight vector serves both terms. The corrections start them.
        let start0 = _mm512_set1_epi32(correction[2 * b]), start1 = _mm512_set1_epi32(correction[2 * b + 1])
        var g0 = (start0, start1), g1 = (start0, start1), g2 = (start0, start1), g3 = (start0, start1)
        let words0 = xq + 2 * b * q8BlockSize, words1 = words0 + q8BlockSize
        for k in 0..<8 {
            let x0 = _mm512_set1_epi32(words0.loadUnaligned(fromByteOffset: 4 * k, as: Int32.self))
            let x1 = _mm512_set1_epi32(words1.loadUnaligned(fromByteOffset: 4 * k, as: Int32.self))
            @inline(__always) func step(_ g: inout (__m512i, __m512i), _ group: Int) {
                let w = _mm512_loadu_si512(record + (8 * group + k) * 64)
                g.0 = _mm512_dpbusd_epi32(g.0, w, x0)
                g.1 = _mm512_dpbusd_epi32(g.1, w, x1)
            }
            step(&g0, 0); step(&g1, 1); step(&g2, 2); step(&g3, 3)
        }
        let d0 = SIMD16<Float>(repeating: dx[2 * b]), d1 = SIMD16<Float>(repeating: dx[2 * b + 1])
        let steps = record + Q8RowTiles.valueBytes
        @inline(__always) func accumulate(_ f: inout SIMD16<Float>, _ g: (__m512i, __m512i), _ group: Int) {
            let rowSteps = _mm512_cvtph_ps(steps.loadUnaligned(fromByteOffset: 32 * group, as: SIMD4<Int64>.self))
            f.addProduct(_mm512_cvtepi32_ps(g.0), rowSteps * d0)
            f.addProduct(_mm512_cvtepi32_ps(g.1), rowSteps * d1)
        }
        accumulate(&f0, g0, 0); accumulate(&f1, g1, 1); accumulate(&f2, g2, 2); accumulate(&f3, g3, 3)
    }
    storeVector(f0, out); storeVector(f1, out + 16); storeVector(f2, out + 32); storeVector(f3, out + 48)
    #else
    for row in 0..<Q8RowTiles.tileRows {
        let group = row / Q8RowTiles.laneRows, lane = row % Q8RowTiles.laneRows
        var total: Float = 0
        for b in 0..<blocks {
            let record = tile + b * Q8RowTiles.recordBytes
            let step = Float(Float16(bitPattern: record.load(fromByteOffset: Q8RowTiles.valueBytes + 2 * row, as: UInt16.self)))
            for term in 0..<terms {
                var sum = correction[terms * b + term]
                let words = xq + (terms * b + term) * q8BlockSize
                for k in 0..<8 {
                    for i in 0..<4 {
                        let w = Int32(record.load(fromByteOffset: (8 * group + k) * 64 + 4 * lane + i, as: UInt8.self))
                        sum &+= w &* Int32(words.load(fromByteOffset: 4 * k + i, as: Int8.self))
                    }
                }
                total += Float(sum) * step * dx[terms * b + term]
            }
        }
        out[row] = total
    }
    #endif
}
