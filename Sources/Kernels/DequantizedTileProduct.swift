import CBLAS

/// y [tokens × rows] = x [tokens × width] · Wᵀ for a weight that exists only in compressed form,
/// so the dense W never exists in full. Each worker takes a contiguous share of the rows
/// (at least `minChunk`) and, tile by tile, has `dequantizeRows` write up to `tileRows`
/// Float32 rows into its own cache-resident buffer, then multiplies them with a one-thread
/// sgemm: no serial step and no synchronisation inside the call. OpenBLAS is set to one
/// thread for the call and back to `Threads.count` after (with two cores, sequential tiles
/// through a two-thread sgemm measured slower: a serial dequantize per tile and a thread
/// handshake per small sgemm). Not for concurrent use with other BLAS callers.
func multiplyByDequantizedTiles(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int,
                                rows: Int, width: Int, tileRows: Int, minChunk: Int,
                                dequantizeRows: (Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
    guard tokens > 0, rows > 0 else { return }
    let workers = min(Threads.count, max(1, rows / minChunk))
    if workers > 1 { openblas_set_num_threads(1) }
    defer { if workers > 1 { openblas_set_num_threads(Int32(Threads.count)) } }
    parallelChunks(rows, minChunk: minChunk) { lo, hi in
        let tileCapacity = min(tileRows, hi - lo)
        let tile = UnsafeMutablePointer<Float>.allocate(capacity: tileCapacity * width)
        defer { tile.deallocate() }
        var first = lo
        while first < hi {
            let range = first ..< min(first + tileCapacity, hi)
            dequantizeRows(range, tile)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(range.count), Int32(width),
                        1, x, Int32(width), tile, Int32(width), 0, y + first, Int32(rows))
            first = range.upperBound
        }
    }
}
