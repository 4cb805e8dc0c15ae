import CBLAS

/// Decode (1-4 tokens) paths of `AQLMLinear`.
extension AQLMLinear {
    /// Lookup-table matvec (B ≤ 8). The table chunks are split into parts (split-K) that the
    /// workers claim: each part builds the tables of its own input groups and sums them for
    /// every row into its own partial output, so no worker waits for another's tables; the
    /// caller adds the partials and applies the row scales. The parts are fixed by the shape,
    /// not the thread count, so the sum (and y) has the same bits at any count.
    func applyLookupTables(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        guard let codes = blockedCodes, tokens > 0 else { return }
        let chunkGroups = aqlmChunkGroups(codebookCount: scheme.codebookCount)
        let chunkCount = (groupCount + chunkGroups - 1) / chunkGroups
        let parts = lookupParts(chunkCount: chunkCount, tokens: tokens)
        let paddedRows = codes.blockCount * aqlmBlockRows
        let partialSize = tokens * paddedRows
        let partials = UnsafeMutablePointer<Float>.allocate(capacity: parts * partialSize)
        partials.initialize(repeating: 0, count: parts * partialSize)
        defer { partials.deallocate() }

        codes.bytes.withUnsafeBufferPointer { codeBytes in
            transposedCodebooks.withUnsafeBufferPointer { transposed in
                parallelFor(parts) { w in
                    lookupChunks(chunkCount * w / parts ..< chunkCount * (w + 1) / parts, x: x, tokens: tokens,
                                 codes: codeBytes.baseAddress!, transposed: transposed.baseAddress!,
                                 into: partials + w * partialSize, paddedRows: paddedRows)
                }
            }
        }
        scales.withUnsafeBufferPointer { s in
            for t in 0..<tokens {
                scaleSummedPartials(partials + t * paddedRows, count: parts, stride: partialSize, scales: s.baseAddress!,
                                    rows: outputSize, into: y + t * outputSize)
            }
        }
    }

    /// y[r] = scales[r] · Σ_w partials[w·stride + r], 16 rows per step. (The scalar loop this
    /// replaces kept its pointers on the stack: 3-4 % of a SmolLM2 decode step.)
    @inline(__always)
    private func scaleSummedPartials(_ partials: UnsafePointer<Float>, count workers: Int, stride: Int,
                                     scales: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        var r = 0
        while r + 16 <= rows {
            var sum = loadVector(partials + r)
            for w in 1..<max(1, workers) { sum += loadVector(partials + w * stride + r) }
            storeVector(loadVector(scales + r) * sum, y + r)
            r += 16
        }
        while r < rows {
            var sum: Float = 0
            for w in 0..<workers { sum += partials[w * stride + r] }
            y[r] = scales[r] * sum
            r += 1
        }
    }

    /// A second worker's wake-up through Dispatch costs 4-8 µs (measured on this machine), so
    /// only layers with ≳ 10 µs of single-core work split (decided from the shape only).
    private func lookupParts(chunkCount: Int, tokens: Int) -> Int {
        let lookups = outputSize * tableCount * tokens
        let multiplyAdds = tableCount * aqlmTableEntries * scheme.groupSize * tokens
        guard lookups + multiplyAdds / 4 >= Self.parallelDecodeWork else { return 1 }
        return max(1, min(Self.decodeParts, chunkCount))
    }

    /// Parts of a split decode: enough for up to 4 cores; each extra part costs one more
    /// partial output to zero and add (~0.1 µs per 1,536 rows).
    static let decodeParts = 4

    /// Below this many lookups plus table-build multiply-adds / 4 (single core: ~30 per ns), one
    /// core decodes alone. 250 000 splits [1536,576] and [576,1536] decoding, not [576,576].
    nonisolated(unsafe) public static var parallelDecodeWork = 250_000

    /// One worker's share: tables of `chunks` for every token, then row blocks four at a time
    /// (every token and chunk per 256 rows while their codes are in L1).
    private func lookupChunks(_ chunks: Range<Int>, x: UnsafePointer<Float>, tokens: Int, codes: UnsafePointer<UInt8>,
                              transposed: UnsafePointer<Float>, into partial: UnsafeMutablePointer<Float>, paddedRows: Int) {
        guard !chunks.isEmpty, let layout = blockedCodes else { return }
        let m = scheme.codebookCount, g = scheme.groupSize
        let chunkGroups = aqlmChunkGroups(codebookCount: m)
        func groups(ofChunk c: Int) -> Range<Int> { c * chunkGroups ..< min((c + 1) * chunkGroups, groupCount) }
        let firstTable = chunks.lowerBound * chunkGroups * m
        let tablesPerToken = groups(ofChunk: chunks.upperBound - 1).upperBound * m - firstTable

        let tables = UnsafeMutablePointer<UInt8>.allocate(capacity: tokens * tablesPerToken * aqlmTableBytes)
        let chunkSteps = UnsafeMutablePointer<Float>.allocate(capacity: tokens * chunks.count)
        defer { tables.deallocate(); chunkSteps.deallocate() }

        // The first lines the lookups read, fetched while the tables build (compute only).
        let start = codes + layout.offset(quad: 0, table: firstTable)
        for line in stride(from: 0, to: Self.prefetchDistance, by: 64) { aqlm_prefetch(start + line) }

        for t in 0..<tokens {
            for (i, c) in chunks.enumerated() {
                let cg = groups(ofChunk: c)
                let step = aqlmTableStep(x: x + t * inputSize, groupSize: g, groups: cg, largestCodewordNorm: largestCodewordNorm)
                buildTables(x: x + t * inputSize, transposed: transposed, groupSize: g, codebookCount: m, groups: cg, step: step,
                            into: tables + (t * tablesPerToken + cg.lowerBound * m - firstTable) * aqlmTableBytes)
                chunkSteps[t * chunks.count + i] = step
            }
        }

        for quad in 0..<layout.quadCount {
            let blocks = layout.blocks(inQuad: quad)
            for t in 0..<tokens {
                for (i, c) in chunks.enumerated() {
                    let cg = groups(ofChunk: c)
                    let first = cg.lowerBound * m
                    accumulateLookups(codes: codes + layout.offset(quad: quad, table: first), blocks: blocks,
                                      tables: tables + (t * tablesPerToken + first - firstTable) * aqlmTableBytes,
                                      tableCount: cg.count * m, scale: chunkSteps[t * chunks.count + i],
                                      into: partial + t * paddedRows + quad * aqlmQuadBlocks * aqlmBlockRows)
                }
            }
        }
    }

    /// Wide codes (B > 8): each worker dequantizes 32-row tiles into an L1/L2-resident buffer and
    /// takes their dot products with every token.
    func applyDequantizedDots(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        let tileRows = 32
        let tileCount = (outputSize + tileRows - 1) / tileRows
        parallelChunks(tileCount) { lo, hi in
            let tile = UnsafeMutablePointer<Float>.allocate(capacity: tileRows * inputSize)
            defer { tile.deallocate() }
            for tileIndex in lo..<hi {
                let rows = tileIndex * tileRows ..< min((tileIndex + 1) * tileRows, outputSize)
                dequantizeRows(rows, into: tile)
                for t in 0..<tokens {
                    for (i, r) in rows.enumerated() {
                        y[t * outputSize + r] = dot(tile + i * inputSize, x + t * inputSize, count: inputSize)
                    }
                }
            }
        }
    }
}
