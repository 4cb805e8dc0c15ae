import CBLAS

/// `EmbeddingTable` as the tied output head: y[t] = Table · x[t] for each token row.
extension EmbeddingTable {
    /// Rows per work item of the row-dot path (~0.6 MB of Q8_0 at width 576): small enough that
    /// a worker the OS deschedules holds up at most one item while the other takes the rest.
    static let rowsPerItem = 1024
    /// How far ahead of the row dots (bytes of stored rows) the next rows are prefetched. Four
    /// rows of 576 values are only 2.3 KB (Q8_0), and the hardware prefetchers alone left one
    /// core at half the streaming rate: measured single-thread, 49152 × 576 Q8_0 row dots, under
    /// load: 1826 µs without, 965 µs at 4 KB, 899 µs at 8 KB, 908 µs at 16 KB. The Q8_0 row tiles
    /// are one sequential stream, where it matters less: the head's share of a decode step
    /// (perf, 512 steps) was 22.8-23.0 % without and 19.9-21.2 % at 8 KB.
    nonisolated(unsafe) public static var prefetchDistance = 8192

    public func apply(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        guard tokens > 0 else { return }
        if case .f32(let values) = storage {
            applyFloat32(values, x, y, tokens: tokens)
        } else if case .q8(let tiles) = storage, tokens <= Self.smallBatchLimit {
            applyInt8Dots(tiles, x, y, tokens: tokens)
        } else if tokens <= Self.smallBatchLimit {
            applyRowDots(x, y, tokens: tokens)
        } else {
            applyTiles(x, y, tokens: tokens)
        }
    }

    /// sgemv / sgemm on the stored Float32 values: exactly `DenseLinear`'s arithmetic.
    private func applyFloat32(_ values: [Float], _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        values.withUnsafeBufferPointer { w in
            if tokens == 1 {
                denseMatvec(w.baseAddress!, rows: rows, columns: width, x, y)
            } else {
                sgemm(.noTrans, .trans, tokens, rows, width, 1, x, width, w.baseAddress!, width, 0, y, rows)
            }
        }
    }

    /// Few tokens: each work item streams its rows once, four at a time, and takes their dot
    /// products with every token (the second and later tokens read the four rows from L1).
    private func applyRowDots(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        let items = (rows + Self.rowsPerItem - 1) / Self.rowsPerItem
        parallelFor(items) { item in
            let range = item * Self.rowsPerItem ..< min(rows, (item + 1) * Self.rowsPerItem)
            rowDots(range, x, y, tokens: tokens)
        }
    }

    private func rowDots(_ range: Range<Int>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        switch storage {
        case .f32: preconditionFailure("Float32 tables run through BLAS")
        case .f16(let bits):
            bits.withUnsafeBufferPointer { h in
                let base = h.baseAddress!
                var r = range.lowerBound
                while r + 4 <= range.upperBound {
                    prefetch(UnsafeRawPointer(base + r * width) + Self.prefetchDistance, bytes: 4 * width * 2)
                    for t in 0..<tokens {
                        let sums = dotFourRows(base + r * width, rowStride: width, x: x + t * width, count: width)
                        store(sums, y + t * rows + r)
                    }
                    r += 4
                }
                for row in r..<range.upperBound {
                    for t in 0..<tokens { y[t * rows + row] = dotRow(base + row * width, x: x + t * width, count: width) }
                }
            }
        case .q8: preconditionFailure("Q8_0 tables run through applyInt8Dots")
        }
    }

    /// Few tokens on a Q8_0 table: the activations quantized to int8 per 32-value block (as
    /// llama.cpp's Q8_0 × Q8_0 dot products; the error bound is at `Q8Activations`), then VNNI
    /// integer dot products over the row tiles, `rowsPerItem` rows per work item.
    private func applyInt8Dots(_ tiles: Q8RowTiles, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        let activations = Q8Activations(x, tokens: tokens, width: width)
        defer { activations.deallocate() }
        let tilesPerItem = Self.rowsPerItem / Q8RowTiles.tileRows
        let items = (tiles.tiles + tilesPerItem - 1) / tilesPerItem
        parallelFor(items) { item in
            tiles.multiply(tiles: item * tilesPerItem ..< min(tiles.tiles, (item + 1) * tilesPerItem), activations, y, tokens: tokens)
        }
    }

    /// Many tokens: weight panels, as AQLM prefill: 32 whole rows dequantized at a time, turned
    /// into one panel and multiplied with every token by the 512-bit micro-kernel.
    private func applyTiles(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        multiplyByWeightPanels(x, y, tokens: tokens, rows: rows, width: width, columnStep: width, scales: nil) { panel, _, out in
            let first = panel * WeightPanels.rows, count = min(WeightPanels.rows, rows - first)
            let natural = UnsafeMutablePointer<Float>.allocate(capacity: count * width)
            defer { natural.deallocate() }
            dequantizeRows(first ..< first + count, into: natural)
            transposeRowsIntoPanel(natural, count: count, width: width, into: out)
        }
    }
}

extension EmbeddingTable {
    /// Table rows widened per step of `applyTransposed` (16 MB of Float32 at width 1024).
    public static let transposedPanelRows = 4096

    /// y[t] = Σ_r g[t][r] · Table[r] for each of `tokens` rows of g [tokens × rows]: the head's
    /// backward, ∂L/∂x = ∂L/∂logits · W. A Float32 table is one sgemm; any other is widened
    /// `transposedPanelRows` rows at a time (both cores) into one scratch panel whose product is
    /// added to y, so the table is read once per call and never held in Float32 as a whole.
    public func applyTransposed(_ g: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        guard tokens > 0 else { return }
        if case .f32(let values) = storage {
            values.withUnsafeBufferPointer { w in
                sgemm(.noTrans, .noTrans, tokens, width, rows, 1, g, rows, w.baseAddress!, width, 0, y, width)
            }
            return
        }
        let panelRows = min(rows, Self.transposedPanelRows)
        let panel = UnsafeMutablePointer<Float>.allocate(capacity: panelRows * width)
        defer { panel.deallocate() }
        var first = 0
        while first < rows {
            let count = min(panelRows, rows - first)
            parallelChunks(count, minChunk: 256) { lo, hi in
                dequantizeRows(first + lo ..< first + hi, into: panel + lo * width)
            }
            sgemm(.noTrans, .noTrans, tokens, width, count, 1, g + first, rows, panel, width, first == 0 ? 0 : 1, y, width)
            first += count
        }
    }
}

/// Prefetches the cache lines of `bytes` bytes from `start` (the hardware prefetchers do not run
/// far enough ahead of short rows).
@inline(__always)
private func prefetch(_ start: UnsafeRawPointer, bytes: Int) {
    for line in stride(from: 0, to: bytes, by: 64) { aqlm_prefetch(start + line) }
}

@inline(__always)
private func store(_ v: SIMD4<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD4<Float>.self)
}
