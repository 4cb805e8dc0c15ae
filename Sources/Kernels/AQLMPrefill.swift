import CBLAS

/// Prefill (> 4 tokens) path of `AQLMLinear` and the dequantizer it is built on.
extension AQLMLinear {
    /// Rows of the dequantized weight per sgemm tile: 256 × d_in Float32 is 576 KB at d_in 576
    /// (L2-resident). Measured at 128 tokens on one core: 64-row tiles reach 89-94% of dense
    /// sgemm, 128-row 91-100%, 256-row 91-103%.
    nonisolated(unsafe) public static var prefillTileRows = 256

    /// y = x Ŵᵀ through dequantized row tiles (`multiplyByDequantizedTiles`; dequantizing takes
    /// ~12 µs per 256×576 tile, ~6% of its sgemm at 128 tokens).
    public func applyPrefill(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        multiplyByDequantizedTiles(x, y, tokens: tokens, rows: outputSize, width: inputSize,
                                   tileRows: Self.prefillTileRows, minChunk: 64) { dequantizeRows($0, into: $1) }
    }

    /// Ŵ[rows] into `out` [rows.count, d_in], row-major.
    public func dequantizeRows(_ rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= outputSize, "rows \(rows) outside 0..<\(outputSize)")
        codebooks.withUnsafeBufferPointer { cb in
            if let blocked = blockedCodes {
                blocked.bytes.withUnsafeBufferPointer { bytes in
                    for (i, r) in rows.enumerated() {
                        // Row r's codes are blocks(inQuad:) · 64 bytes apart (see AQLMBlockedCodes).
                        let quad = r / (aqlmQuadBlocks * aqlmBlockRows)
                        let block = r / aqlmBlockRows % aqlmQuadBlocks
                        let first = blocked.offset(quad: quad, table: 0) + block * aqlmBlockRows
                            + AQLMBlockedCodes.lane(ofRowInBlock: r % aqlmBlockRows)
                        dequantizeRow(codes: bytes.baseAddress! + first, codeStride: blocked.blocks(inQuad: quad) * aqlmBlockRows,
                                      codebooks: cb.baseAddress!, scale: scales[r], into: out + i * inputSize)
                    }
                }
            } else {
                wideCodes.withUnsafeBufferPointer { codes in
                    for (i, r) in rows.enumerated() {
                        dequantizeRow(codes: codes.baseAddress! + r * tableCount, codeStride: 1, codebooks: cb.baseAddress!,
                                      scale: scales[r], into: out + i * inputSize)
                    }
                }
            }
        }
    }

    /// One row: codes of table t = j·M + m at codes[t · codeStride].
    @inline(__always)
    private func dequantizeRow<Code: FixedWidthInteger>(codes: UnsafePointer<Code>, codeStride: Int, codebooks: UnsafePointer<Float>,
                                                        scale: Float, into out: UnsafeMutablePointer<Float>) {
        let m = scheme.codebookCount, size = scheme.codebookSize, groups = groupCount
        switch scheme.groupSize {
        case 4: sumCodewords(SIMD4<Float>.self, codes: codes, codeStride: codeStride, codebooks: codebooks,
                             codebookCount: m, codebookSize: size, groups: groups, scale: scale, into: out)
        case 8: sumCodewords(SIMD8<Float>.self, codes: codes, codeStride: codeStride, codebooks: codebooks,
                             codebookCount: m, codebookSize: size, groups: groups, scale: scale, into: out)
        case 16: sumCodewords(SIMD16<Float>.self, codes: codes, codeStride: codeStride, codebooks: codebooks,
                              codebookCount: m, codebookSize: size, groups: groups, scale: scale, into: out)
        default:
            let g = scheme.groupSize
            for j in 0..<groups {
                for k in 0..<g { out[j * g + k] = 0 }
                for book in 0..<m {
                    let codeword = codebooks + (book * size + Int(codes[(j * m + book) * codeStride])) * g
                    for k in 0..<g { out[j * g + k] += codeword[k] }
                }
                for k in 0..<g { out[j * g + k] *= scale }
            }
        }
    }
}

/// out[j·G ..< (j+1)·G] = scale · Σ_m codebooks[m][codes[(j·M + m)·codeStride]] for G = V.scalarCount.
/// M = 1 and 2 (1x16, 2x8) get straight-line bodies: a loop over one or two codebooks costs
/// more than the two loads and an add it runs.
@inline(__always)
private func sumCodewords<V: SIMD, Code: FixedWidthInteger>(
    _: V.Type, codes: UnsafePointer<Code>, codeStride: Int, codebooks: UnsafePointer<Float>, codebookCount m: Int,
    codebookSize size: Int, groups: Int, scale: Float, into out: UnsafeMutablePointer<Float>
) where V.Scalar == Float {
    let g = V.scalarCount
    let first = UnsafeRawPointer(codebooks)
    let target = UnsafeMutableRawPointer(out)
    @inline(__always) func codeword(_ book: UnsafeRawPointer, _ table: Int) -> V {
        book.loadUnaligned(fromByteOffset: Int(codes[table * codeStride]) * g * 4, as: V.self)
    }
    switch m {
    case 1:
        for j in 0..<groups {
            target.storeBytes(of: codeword(first, j) * scale, toByteOffset: j * g * 4, as: V.self)
        }
    case 2:
        let second = first + size * g * 4
        for j in 0..<groups {
            let sum = codeword(first, 2 * j) + codeword(second, 2 * j + 1)
            target.storeBytes(of: sum * scale, toByteOffset: j * g * 4, as: V.self)
        }
    default:
        for j in 0..<groups {
            var sum = codeword(first, j * m)
            for book in 1..<m {
                sum += codeword(first + book * size * g * 4, j * m + book)
            }
            target.storeBytes(of: sum * scale, toByteOffset: j * g * 4, as: V.self)
        }
    }
}
