import CBLAS

/// Prefill (> 4 tokens) path of `AQLMLinear` and the dequantizer it is built on.
extension AQLMLinear {
    /// Rows of the dequantized weight per sgemm tile: 128 × d_in Float32 is 288 KB at d_in 576
    /// (L2-resident), while sgemm on 128-row panels still runs near its large-matrix rate.
    nonisolated(unsafe) public static var prefillTileRows = 128

    /// y = x Ŵᵀ through dequantized row tiles, so the dense weight never exists in full. Each
    /// tile is dequantized by all workers, then multiplied by OpenBLAS (itself multi-threaded).
    public func applyPrefill(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        guard tokens > 0 else { return }
        let tileRows = min(Self.prefillTileRows, outputSize)
        let tile = UnsafeMutablePointer<Float>.allocate(capacity: tileRows * inputSize)
        defer { tile.deallocate() }
        var first = 0
        while first < outputSize {
            let rows = first ..< min(first + tileRows, outputSize)
            parallelChunks(rows.count, minChunk: 16) { lo, hi in
                dequantizeRows(rows.lowerBound + lo ..< rows.lowerBound + hi, into: tile + lo * inputSize)
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(rows.count), Int32(inputSize),
                        1, x, Int32(inputSize), tile, Int32(inputSize), 0, y + first, Int32(outputSize))
            first = rows.upperBound
        }
    }

    /// Ŵ[rows] into `out` [rows.count, d_in], row-major.
    public func dequantizeRows(_ rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= outputSize, "rows \(rows) outside 0..<\(outputSize)")
        let g = scheme.groupSize, m = scheme.codebookCount, size = scheme.codebookSize
        codebooks.withUnsafeBufferPointer { cb in
            var codes = [Int](repeating: 0, count: m)
            for (i, r) in rows.enumerated() {
                let rowOut = out + i * inputSize
                for j in 0..<groupCount {
                    for k in 0..<m { codes[k] = (k * size + code(row: r, group: j, codebook: k)) * g }
                    sumCodewords(cb.baseAddress!, offsets: codes, count: g, scale: scales[r], into: rowOut + j * g)
                }
            }
        }
    }
}

/// out[0..<count] = scale · Σ_i codebooks[offsets[i] ..< offsets[i] + count].
@inline(__always)
private func sumCodewords(_ codebooks: UnsafePointer<Float>, offsets: [Int], count: Int, scale: Float,
                          into out: UnsafeMutablePointer<Float>) {
    let src = UnsafeRawPointer(codebooks)
    let dst = UnsafeMutableRawPointer(out)
    var k = 0
    while k + 8 <= count {
        var sum = SIMD8<Float>()
        for o in offsets { sum += src.loadUnaligned(fromByteOffset: (o + k) * 4, as: SIMD8<Float>.self) }
        dst.storeBytes(of: sum * scale, toByteOffset: k * 4, as: SIMD8<Float>.self)
        k += 8
    }
    while k < count {
        var sum: Float = 0
        for o in offsets { sum += codebooks[o + k] }
        out[k] = sum * scale
        k += 1
    }
}
