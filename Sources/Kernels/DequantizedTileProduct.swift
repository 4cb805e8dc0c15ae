import CBLAS

/// y [tokens × rows] = x [tokens × width] · Wᵀ for a weight that exists only in compressed form,
/// so the dense W never exists in full. The rows are cut into tiles of at most `tileRows` at
/// places chosen from the shape only (never moved by the thread count, so every output bit is
/// the same at any count); each worker takes a contiguous run of tiles and, tile by tile, has `dequantizeRows` write the tile's Float32 rows into its own
/// cache-resident buffer, then multiplies them with a one-thread sgemm: no serial step and no
/// synchronisation inside the call (with two cores, sequential tiles through a two-thread sgemm
/// measured slower: a serial dequantize per tile and a thread handshake per small sgemm).
func multiplyByDequantizedTiles(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int,
                                rows: Int, width: Int, tileRows: Int, minChunk: Int,
                                dequantizeRows: (Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
    guard tokens > 0, rows > 0 else { return }
    BLASThreads.useCallingThreadOnly()
    // About 8 tiles for the workers to share (as many as the chunks the thread-dependent
    // split made before), none under `minChunk` rows, a multiple of 16 (whole SIMD kernel
    // widths): from the shape only.
    let tileRows = max(1, min(tileRows, max(minChunk, (rows / 8) & ~15)))
    let tiles = (rows + tileRows - 1) / tileRows
    parallelChunks(tiles) { firstTile, endTile in
        let tile = UnsafeMutablePointer<Float>.allocate(capacity: min(tileRows, rows) * width)
        defer { tile.deallocate() }
        for t in firstTile..<endTile {
            let range = t * tileRows ..< min((t + 1) * tileRows, rows)
            dequantizeRows(range, tile)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(range.count), Int32(width),
                        1, x, Int32(width), tile, Int32(width), 0, y + range.lowerBound, Int32(rows))
        }
    }
}
