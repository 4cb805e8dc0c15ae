// Hot loops of the AQLM quantizer (beam search over codes, weighted k-means): everything here is
// "score every candidate of a codebook against one query", vectorised over candidates, plus the
// rank-g update of a row's Hessian-times-error vector. Built -Ounchecked: callers guarantee sizes.

#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// scores[c] = offset + biasScale · bias[c] + Σ_a query[a] · table[a · count + c] for c in 0..<count,
/// and, if `chunkMinima` is given, chunkMinima[k] = min of scores[16k ..< 16k + 16] (for `SmallestValues`).
///
/// `table` is a codebook stored transposed ([dims, count], candidate-major within a row), so one
/// SIMD16 register holds one coordinate of 16 candidates and the inner loop is a broadcast-FMA.
/// Four registers are in flight at once so the FMA latency chain of length `dims` is hidden.
public func scoreCandidates(
    query: UnsafePointer<Float>, dims: Int,
    table: UnsafePointer<Float>, count: Int,
    bias: UnsafePointer<Float>?, biasScale: Float, offset: Float,
    into scores: UnsafeMutablePointer<Float>, chunkMinima: UnsafeMutablePointer<Float>? = nil
) {
    let scoring = CandidateScoring(query: query, dims: dims, table: table, count: count, bias: bias, biasScale: biasScale, offset: offset)
    var c = 0
    while c + 64 <= count {
        let (a0, a1, a2, a3) = scoring.fourChunks(at: c)
        store16(a0, scores + c)
        store16(a1, scores + c + 16)
        store16(a2, scores + c + 32)
        store16(a3, scores + c + 48)
        if let chunkMinima { storeFourMinima(a0, a1, a2, a3, into: chunkMinima + c / 16) }
        c += 64
    }
    while c + 16 <= count {
        let acc = scoring.chunk(at: c)
        store16(acc, scores + c)
        chunkMinima?[c / 16] = horizontalMinimum(acc)
        c += 16
    }
    if c < count {
        var minimum = Float.infinity
        for k in c..<count {
            scores[k] = scoring.single(k)
            minimum = min(minimum, scores[k])
        }
        chunkMinima?[c / 16] = minimum
    }
}

/// The candidate with the smallest score (as `scoreCandidates` defines it) and its score; the
/// first one on ties. Fused so the scores never go through memory.
public func nearestCandidate(
    query: UnsafePointer<Float>, dims: Int,
    table: UnsafePointer<Float>, count: Int,
    bias: UnsafePointer<Float>?, biasScale: Float, offset: Float
) -> (index: Int, value: Float) {
    let scoring = CandidateScoring(query: query, dims: dims, table: table, count: count, bias: bias, biasScale: biasScale, offset: offset)
    // Lane-wise running minimum and the 16-chunk it came from; strict < keeps the earlier chunk.
    var best = SIMD16<Float>(repeating: .infinity)
    var bestChunk = SIMD16<Int32>(repeating: 0)
    var c = 0
    while c + 64 <= count {
        let (a0, a1, a2, a3) = scoring.fourChunks(at: c)
        let k = Int32(c / 16)
        var better = a0 .< best
        best.replace(with: a0, where: better)
        bestChunk.replace(with: SIMD16<Int32>(repeating: k), where: better)
        better = a1 .< best
        best.replace(with: a1, where: better)
        bestChunk.replace(with: SIMD16<Int32>(repeating: k + 1), where: better)
        better = a2 .< best
        best.replace(with: a2, where: better)
        bestChunk.replace(with: SIMD16<Int32>(repeating: k + 2), where: better)
        better = a3 .< best
        best.replace(with: a3, where: better)
        bestChunk.replace(with: SIMD16<Int32>(repeating: k + 3), where: better)
        c += 64
    }
    while c + 16 <= count {
        let a = scoring.chunk(at: c)
        let better = a .< best
        best.replace(with: a, where: better)
        bestChunk.replace(with: SIMD16<Int32>(repeating: Int32(c / 16)), where: better)
        c += 16
    }
    var bestValue = Float.infinity
    var bestIndex = -1
    if c > 0 {
        bestValue = horizontalMinimum(best)
        bestIndex = count
        for lane in 0..<16 where best[lane] == bestValue {
            bestIndex = min(bestIndex, Int(bestChunk[lane]) * 16 + lane)
        }
    }
    while c < count {
        let v = scoring.single(c)
        if v < bestValue || bestIndex < 0 {
            bestValue = v
            bestIndex = c
        }
        c += 1
    }
    return (max(0, bestIndex), bestValue)
}

/// The scoring shared by `scoreCandidates` and `nearestCandidate`.
private struct CandidateScoring {
    let query: UnsafePointer<Float>, dims: Int
    let table: UnsafePointer<Float>, count: Int
    let bias: UnsafePointer<Float>?, biasScale: Float, offset: Float

    @inline(__always)
    func fourChunks(at c: Int) -> (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>) {
        var a0 = SIMD16<Float>(repeating: offset), a1 = a0, a2 = a0, a3 = a0
        if let bias {
            let scale = SIMD16<Float>(repeating: biasScale)
            a0 = a0.addingProduct(scale, load16(bias + c))
            a1 = a1.addingProduct(scale, load16(bias + c + 16))
            a2 = a2.addingProduct(scale, load16(bias + c + 32))
            a3 = a3.addingProduct(scale, load16(bias + c + 48))
        }
        for a in 0..<dims {
            let q = SIMD16<Float>(repeating: query[a])
            let row = table + a * count + c
            a0 = a0.addingProduct(q, load16(row))
            a1 = a1.addingProduct(q, load16(row + 16))
            a2 = a2.addingProduct(q, load16(row + 32))
            a3 = a3.addingProduct(q, load16(row + 48))
        }
        return (a0, a1, a2, a3)
    }

    @inline(__always)
    func chunk(at c: Int) -> SIMD16<Float> {
        var acc = SIMD16<Float>(repeating: offset)
        if let bias { acc = acc.addingProduct(SIMD16<Float>(repeating: biasScale), load16(bias + c)) }
        for a in 0..<dims {
            acc = acc.addingProduct(SIMD16<Float>(repeating: query[a]), load16(table + a * count + c))
        }
        return acc
    }

    @inline(__always)
    func single(_ c: Int) -> Float {
        var acc: Float = offset + (bias.map { biasScale * $0[c] } ?? 0)
        for a in 0..<dims { acc += query[a] * table[a * count + c] }
        return acc
    }
}

/// The `capacity` smallest (value, index) pairs of a score array, sorted ascending: the beam
/// search's top-k over all hypotheses' candidates.
public struct SmallestValues {
    public let capacity: Int
    public private(set) var count = 0
    private let valueStorage: UnsafeMutablePointer<Float>
    private let indexStorage: UnsafeMutablePointer<Int>

    /// Call `deallocate()` when done.
    public init(capacity: Int) {
        self.capacity = capacity
        valueStorage = .allocate(capacity: capacity)
        indexStorage = .allocate(capacity: capacity)
    }

    public func deallocate() {
        valueStorage.deallocate()
        indexStorage.deallocate()
    }

    @inline(__always) public func value(_ rank: Int) -> Float { valueStorage[rank] }
    @inline(__always) public func index(_ rank: Int) -> Int { indexStorage[rank] }

    /// Replaces the contents by the smallest `capacity` of scores[0..<n] (ties: lower index first),
    /// given chunkMinima[k] = min of scores[16k ..< 16k + 16] (as `scoreCandidates` writes them).
    ///
    /// Only chunks whose minimum is among the `capacity` smallest chunk minima can hold a winner
    /// (any other chunk's best is beaten by at least `capacity` values in other chunks), so only
    /// those are scanned lane by lane.
    public mutating func select(_ scores: UnsafePointer<Float>, chunkMinima: UnsafePointer<Float>, count n: Int) {
        // Locals, not the stored properties: through `self` every insert reloaded the storage
        // pointers and the count from memory (the stores might alias them).
        let values = valueStorage, indices = indexStorage, capacity = capacity
        var kept = 0, threshold = Float.infinity
        @inline(__always) func insert(_ value: Float, _ index: Int) {
            var position = kept < capacity ? kept : capacity - 1
            while position > 0 && values[position - 1] > value {
                values[position] = values[position - 1]
                indices[position] = indices[position - 1]
                position -= 1
            }
            values[position] = value
            indices[position] = index
            if kept < capacity { kept += 1 }
            if kept == capacity { threshold = values[capacity - 1] }
        }
        let chunks = (n + 15) / 16
        var chunk = 0
        while chunk + 16 <= chunks {
            var below = bitmask(load16(chunkMinima + chunk) .< SIMD16<Float>(repeating: threshold))
            while below != 0 {
                let lane = below.trailingZeroBitCount
                let value = chunkMinima[chunk + lane]
                if value < threshold { insert(value, chunk + lane) }
                below &= below - 1
            }
            chunk += 16
        }
        while chunk < chunks {
            if chunkMinima[chunk] < threshold { insert(chunkMinima[chunk], chunk) }
            chunk += 1
        }
        let bound = threshold
        kept = 0
        threshold = .infinity
        for chunk in 0..<chunks where chunkMinima[chunk] <= bound {
            let start = chunk * 16
            if start + 16 <= n {
                var within = bitmask(load16(scores + start) .<= SIMD16<Float>(repeating: bound))
                while within != 0 {
                    let c = start + within.trailingZeroBitCount
                    if scores[c] < threshold { insert(scores[c], c) }
                    within &= within - 1
                }
            } else {
                for c in start..<n where scores[c] <= bound && scores[c] < threshold { insert(scores[c], c) }
            }
        }
        count = kept
    }
}

/// nearest[i] = min(nearest[i], Σ_a weights[i·dims + a] (points[i·dims + a] − centroid[a])²) for
/// i in 0..<count; returns Σ nearest (k-means++ seeding).
public func lowerNearestWeightedDistances(
    _ nearest: UnsafeMutablePointer<Float>, points: UnsafePointer<Float>, weights: UnsafePointer<Float>,
    dims: Int, count: Int, centroid: UnsafePointer<Float>
) -> Double {
    var total = 0.0
    for i in 0..<count {
        let x = points + i * dims, w = weights + i * dims
        var d: Float = 0
        for a in 0..<dims {
            let diff = x[a] - centroid[a]
            d += w[a] * diff * diff
        }
        let lowered = min(nearest[i], d)
        nearest[i] = lowered
        total += Double(lowered)
    }
    return total
}

/// destination[i] = source[i] − Σ_a coefficients[a] · rows[a · rowStride + i] for i in 0..<count.
///
/// The beam search's gradient update g ← g − H[:, group] δ (H symmetric, so the group's columns
/// are its rows). `destination` may equal `source` (in-place update). Every element, in either
/// SIMD width or the tail, is the same chain of fused multiply-adds over a, so a call over a
/// suffix of the columns gives those elements exactly as a call over all of them.
public func subtractRowCombination(
    source: UnsafePointer<Float>, destination: UnsafeMutablePointer<Float>, count: Int,
    rows: UnsafePointer<Float>, rowStride: Int, coefficients: UnsafePointer<Float>, rowCount: Int
) {
    var i = 0
    while i + 32 <= count {
        var a0 = load16(source + i), a1 = load16(source + i + 16)
        for a in 0..<rowCount {
            let k = SIMD16<Float>(repeating: -coefficients[a])
            let row = rows + a * rowStride + i
            a0 = a0.addingProduct(k, load16(row))
            a1 = a1.addingProduct(k, load16(row + 16))
        }
        store16(a0, destination + i)
        store16(a1, destination + i + 16)
        i += 32
    }
    while i + 16 <= count {
        var acc = load16(source + i)
        for a in 0..<rowCount {
            acc = acc.addingProduct(SIMD16<Float>(repeating: -coefficients[a]), load16(rows + a * rowStride + i))
        }
        store16(acc, destination + i)
        i += 16
    }
    while i < count {
        var acc = source[i]
        for a in 0..<rowCount { acc = acc.addingProduct(-coefficients[a], rows[a * rowStride + i]) }
        destination[i] = acc
        i += 1
    }
}

/// Bit k set iff lane k of the mask is set.
@inline(__always) private func bitmask(_ mask: SIMDMask<SIMD16<Int32>>) -> UInt32 {
    let bits = SIMD16<Int32>(1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7,
                             1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 14, 1 << 15)
    return UInt32(truncatingIfNeeded: SIMD16<Int32>(repeating: 0).replacing(with: bits, where: mask).wrappedSum())
}

/// The smallest lane, by halving with compare-and-blend (the stdlib's `min()` and `pointwiseMin`
/// handle NaNs lane by lane through memory and are an order of magnitude slower here).
@inline(__always) private func horizontalMinimum(_ v: SIMD16<Float>) -> Float {
    let m8 = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .< v.lowHalf)
    let m4 = m8.lowHalf.replacing(with: m8.highHalf, where: m8.highHalf .< m8.lowHalf)
    let m2 = m4.lowHalf.replacing(with: m4.highHalf, where: m4.highHalf .< m4.lowHalf)
    return m2[1] < m2[0] ? m2[1] : m2[0]
}

/// out[0..<4] = the smallest lane of a0, a1, a2 and a3. On x86-64 a three-level transpose-and-min
/// network (two-source permutes), ~14 instructions for all four instead of ~20 shuffles and blends
/// each: with 8-wide codewords the four reductions cost as much as the chunks' FMAs. Equal to
/// `horizontalMinimum` lane for lane whenever no lane is NaN.
@inline(__always) private func storeFourMinima(_ a0: SIMD16<Float>, _ a1: SIMD16<Float>, _ a2: SIMD16<Float>,
                                               _ a3: SIMD16<Float>, into out: UnsafeMutablePointer<Float>) {
    #if arch(x86_64)
    @inline(__always) func index(_ lanes: SIMD16<Int32>) -> __m512i { unsafeBitCast(lanes, to: __m512i.self) }
    // Level 1: lanes 0-7 the pairwise minima of a's halves, lanes 8-15 those of b's.
    let firstHalves = index(SIMD16(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23))
    let secondHalves = index(SIMD16(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))
    let b01 = _mm512_min_ps(_mm512_permutex2var_ps(a0, firstHalves, a1), _mm512_permutex2var_ps(a0, secondHalves, a1))
    let b23 = _mm512_min_ps(_mm512_permutex2var_ps(a2, firstHalves, a3), _mm512_permutex2var_ps(a2, secondHalves, a3))
    // Level 2: four lanes per input, in order a0, a1, a2, a3.
    let firstQuarters = index(SIMD16(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27))
    let secondQuarters = index(SIMD16(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31))
    let c = _mm512_min_ps(_mm512_permutex2var_ps(b01, firstQuarters, b23), _mm512_permutex2var_ps(b01, secondQuarters, b23))
    // Level 3: within each group of four lanes, then gather lanes 0, 4, 8, 12 to the front.
    let d = _mm512_min_ps(c, _mm512_permutexvar_ps(index(SIMD16(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)), c))
    let e = _mm512_min_ps(d, _mm512_permutexvar_ps(index(SIMD16(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14)), d))
    let front = _mm512_permutexvar_ps(index(SIMD16(0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12)), e)
    UnsafeMutableRawPointer(out).storeBytes(of: front.lowHalf.lowHalf, as: SIMD4<Float>.self)
    #else
    out[0] = horizontalMinimum(a0)
    out[1] = horizontalMinimum(a1)
    out[2] = horizontalMinimum(a2)
    out[3] = horizontalMinimum(a3)
    #endif
}

@inline(__always) private func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always) private func load16(_ p: UnsafeMutablePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always) private func store16(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
}
