/// Prefill (> 4 tokens) path of `AQLMLinear` and the dequantizer it is built on.
extension AQLMLinear {
    /// y = x Ŵᵀ through weight panels (`multiplyByWeightPanels`): each 32-row panel is
    /// dequantized once per column block, without the row scales (applied to the sums), straight
    /// into the column-major layout the 512-bit micro-kernel reads.
    public func applyPrefill(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        scales.withUnsafeBufferPointer { s in
            multiplyByWeightPanels(x, y, tokens: tokens, rows: outputSize, width: inputSize, columnStep: scheme.groupSize,
                                   scales: s.baseAddress!) { dequantizePanel($0, columns: $1, into: $2) }
        }
    }

    /// Rows 32·panel ..< 32·panel + 32 of Ŵ without their scales (rows past d_out repeat the
    /// last row), columns `columns` (whole groups), into out [columns.count × 32]: out[k·32 + i]
    /// = Σ_m codebooks[m][code(32·panel + i, group of column k, m)][k mod G].
    func dequantizePanel(_ panel: Int, columns: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let g = scheme.groupSize, m = scheme.codebookCount
        precondition(columns.lowerBound % g == 0 && columns.upperBound % g == 0, "columns \(columns) not whole groups of \(g)")
        let firstRow = panel * WeightPanels.rows
        precondition(firstRow >= 0 && firstRow < outputSize, "panel \(panel) outside the \(outputSize) rows")
        let groups = columns.lowerBound / g ..< columns.upperBound / g
        codebooks.withUnsafeBufferPointer { cb in
            withUnsafeTemporaryAllocation(of: Int.self, capacity: WeightPanels.rows) { offsets in
                guard g == 8 else {
                    // Other group sizes: one value at a time (no scheme in use has them).
                    for i in 0..<WeightPanels.rows {
                        let r = min(firstRow + i, outputSize - 1)
                        for k in columns {
                            var sum: Float = 0
                            for book in 0..<m {
                                sum += cb[(book * scheme.codebookSize + code(row: r, group: k / g, codebook: book)) * g + k % g]
                            }
                            out[(k - columns.lowerBound) * WeightPanels.rows + i] = sum
                        }
                    }
                    return
                }
                if let blocked = blockedCodes {
                    // Row r's codes are blocks(inQuad:) · 64 bytes apart (see AQLMBlockedCodes); a
                    // panel lies inside one 64-row block, so one stride serves its 32 rows.
                    let quad = firstRow / (aqlmQuadBlocks * aqlmBlockRows)
                    for i in 0..<WeightPanels.rows {
                        let r = min(firstRow + i, outputSize - 1)
                        offsets[i] = blocked.offset(quad: quad, table: 0) + r / aqlmBlockRows % aqlmQuadBlocks * aqlmBlockRows
                            + AQLMBlockedCodes.lane(ofRowInBlock: r % aqlmBlockRows)
                    }
                    blocked.bytes.withUnsafeBufferPointer { bytes in
                        sumCodewordsIntoPanel(codes: bytes.baseAddress!, rowOffsets: offsets.baseAddress!,
                                              codeStride: blocked.blocks(inQuad: quad) * aqlmBlockRows, codebooks: cb.baseAddress!,
                                              codebookCount: m, codebookSize: scheme.codebookSize, groups: groups, into: out)
                    }
                } else {
                    for i in 0..<WeightPanels.rows { offsets[i] = min(firstRow + i, outputSize - 1) * tableCount }
                    wideCodes.withUnsafeBufferPointer { codes in
                        sumCodewordsIntoPanel(codes: codes.baseAddress!, rowOffsets: offsets.baseAddress!, codeStride: 1,
                                              codebooks: cb.baseAddress!, codebookCount: m, codebookSize: scheme.codebookSize,
                                              groups: groups, into: out)
                    }
                }
            }
        }
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

/// G = 8: the codeword sums of 32 rows (codes of row i, table t at codes[rowOffsets[i] + t·codeStride])
/// for input groups `groups`, written column by column (out[(8·(j − first group) + k)·32 + i]).
/// Sixteen rows at a time: rows i and i + 8 share a vector (low, high half), and one 8 × 8
/// transpose per half turns the eight vectors into eight columns of 16 rows (24 shuffles per 128
/// weights, against ~1,000 FMAs per 128 weights for 128 tokens).
@inline(__always)
private func sumCodewordsIntoPanel<Code: FixedWidthInteger>(
    codes: UnsafePointer<Code>, rowOffsets: UnsafePointer<Int>, codeStride: Int, codebooks: UnsafePointer<Float>,
    codebookCount m: Int, codebookSize size: Int, groups: Range<Int>, into out: UnsafeMutablePointer<Float>
) {
    // One body per codebook count in use (1x16: 1, 2x8: 2), so the sum over books unrolls.
    switch m {
    case 1: sumCodewordsIntoPanel(codes: codes, rowOffsets: rowOffsets, codeStride: codeStride, codebooks: codebooks,
                                  books: 1, codebookSize: size, groups: groups, into: out)
    case 2: sumCodewordsIntoPanel(codes: codes, rowOffsets: rowOffsets, codeStride: codeStride, codebooks: codebooks,
                                  books: 2, codebookSize: size, groups: groups, into: out)
    default: sumCodewordsIntoPanel(codes: codes, rowOffsets: rowOffsets, codeStride: codeStride, codebooks: codebooks,
                                   books: m, codebookSize: size, groups: groups, into: out)
    }
}

@inline(__always)
private func sumCodewordsIntoPanel<Code: FixedWidthInteger>(
    codes: UnsafePointer<Code>, rowOffsets: UnsafePointer<Int>, codeStride: Int, codebooks: UnsafePointer<Float>,
    books m: Int, codebookSize size: Int, groups: Range<Int>, into out: UnsafeMutablePointer<Float>
) {
    let book = UnsafeRawPointer(codebooks), bookBytes = size * 8 * 4
    for half in 0..<2 {
        let rows = rowOffsets + 16 * half
        for j in groups {
            let group = codes + j * m * codeStride
            @inline(__always) func codeword(_ i: Int) -> SIMD8<Float> {
                let first = group + rows[i]
                var sum = book.loadUnaligned(fromByteOffset: Int(first[0]) * 32, as: SIMD8<Float>.self)
                for b in 1..<m {
                    sum += book.loadUnaligned(fromByteOffset: b * bookBytes + Int(first[b * codeStride]) * 32, as: SIMD8<Float>.self)
                }
                return sum
            }
            @inline(__always) func pair(_ i: Int) -> SIMD16<Float> { SIMD16(lowHalf: codeword(i), highHalf: codeword(i + 8)) }
            var v = (pair(0), pair(1), pair(2), pair(3), pair(4), pair(5), pair(6), pair(7))
            transposeEightByEightHalves(&v)
            storePanelColumns(v, out + (j - groups.lowerBound) * 8 * WeightPanels.rows, firstRow: 16 * half)
        }
    }
}
