import CBLAS

/// Decode (1-4 tokens) paths of `AQLMLinear`.
extension AQLMLinear {
    /// Lookup-table matvec (B ≤ 8): `applyLookupTablesTogether` with this layer alone.
    func applyLookupTables(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        Self.applyLookupTablesTogether([(self, y)], to: x, tokens: tokens)
    }

    /// Whether decoding runs the lookup-table kernel (B ≤ 8), which `applyLookupTablesTogether` needs.
    public var decodesWithLookupTables: Bool { blockedCodes != nil }

    /// y = layer(x) for linears that read the same input (q/k/v, gate/up), all B ≤ 8, in one
    /// parallel loop. Each layer's table chunks are split into parts (split-K, `lookupParts`):
    /// a part builds the tables of its own input groups and sums them for every row into its
    /// own partial output, so no worker waits for another's tables. The loop runs the parts of
    /// all the layers, most work first, so two cores finish together (q alone on one core against
    /// k then v on the other took ~13 % longer than an even split) with one hand-off per group
    /// instead of one per layer; then each layer's partials are added and scaled. The parts are fixed by
    /// the shapes, not the thread count, so every y has the same bits at any count.
    public static func applyLookupTablesTogether(_ outputs: [(layer: AQLMLinear, y: UnsafeMutablePointer<Float>)],
                                                 to x: UnsafePointer<Float>, tokens: Int) {
        guard tokens > 0, !outputs.isEmpty else { return }
        precondition(outputs.allSatisfy { $0.layer.decodesWithLookupTables && $0.layer.inputSize == outputs[0].layer.inputSize },
                     "lookup decoding together needs B ≤ 8 layers of one input width")
        struct Part { let layer: Int, part: Int, work: Int }
        var parts: [Part] = []
        var partCounts: [Int] = [], partialOffsets: [Int] = [], partialSizes: [Int] = []
        var partialTotal = 0
        for (i, (layer, _)) in outputs.enumerated() {
            let count = layer.lookupParts(tokens: tokens)
            let work = layer.decodeWork(tokens: tokens) / count
            partCounts.append(count)
            partialSizes.append(tokens * layer.blockedCodes!.blockCount * aqlmBlockRows)
            partialOffsets.append(partialTotal)
            partialTotal += count * partialSizes[i]
            for w in 0..<count { parts.append(Part(layer: i, part: w, work: work)) }
        }
        // Longest first (ties in layer order): the dynamic schedule then balances the cores.
        parts.sort { ($0.work, -$0.layer, -$0.part) > ($1.work, -$1.layer, -$1.part) }
        let partials = UnsafeMutablePointer<Float>.allocate(capacity: partialTotal)
        partials.initialize(repeating: 0, count: partialTotal)
        defer { partials.deallocate() }

        parallelFor(parts.count) { p in
            let part = parts[p]
            outputs[part.layer].layer.lookupPart(part.part, of: partCounts[part.layer], x: x, tokens: tokens,
                                                 into: partials + partialOffsets[part.layer] + part.part * partialSizes[part.layer])
        }
        for (i, (layer, y)) in outputs.enumerated() {
            let paddedRows = partialSizes[i] / tokens
            layer.scales.withUnsafeBufferPointer { s in
                for t in 0..<tokens {
                    layer.scaleSummedPartials(partials + partialOffsets[i] + t * paddedRows, count: partCounts[i],
                                              stride: partialSizes[i], scales: s.baseAddress!, rows: layer.outputSize,
                                              into: y + t * layer.outputSize)
                }
            }
        }
    }

    /// Part `w` of `parts` of the table chunks (see `applyLookupTablesTogether`), into `partial`
    /// [tokens × padded rows], zeroed.
    private func lookupPart(_ w: Int, of parts: Int, x: UnsafePointer<Float>, tokens: Int, into partial: UnsafeMutablePointer<Float>) {
        guard let codes = blockedCodes else { return }
        let chunkGroups = aqlmChunkGroups(codebookCount: scheme.codebookCount)
        let chunkCount = (groupCount + chunkGroups - 1) / chunkGroups
        codes.bytes.withUnsafeBufferPointer { codeBytes in
            transposedCodebooks.withUnsafeBufferPointer { transposed in
                lookupChunks(chunkCount * w / parts ..< chunkCount * (w + 1) / parts, x: x, tokens: tokens,
                             codes: codeBytes.baseAddress!, transposed: transposed.baseAddress!,
                             into: partial, paddedRows: codes.blockCount * aqlmBlockRows)
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

    /// Single-core work of one decode call in lookups plus table-build multiply-adds / 4 (per a
    /// one-thread profile, one lookup costs about as much as four multiply-adds of the build).
    private func decodeWork(tokens: Int) -> Int {
        let lookups = outputSize * tableCount * tokens
        let multiplyAdds = tableCount * aqlmTableEntries * scheme.groupSize * tokens
        return lookups + multiplyAdds / 4
    }

    /// Split-K parts of a decode call: one per `parallelDecodeWork` of work, at most
    /// `decodeParts` and one per table chunk. Fixed by the shape alone (determinism). Each extra
    /// part costs only a partial output to zero and add (~0.1 µs per 1,536 rows): the parts
    /// build disjoint tables.
    private func lookupParts(tokens: Int) -> Int {
        let chunkGroups = aqlmChunkGroups(codebookCount: scheme.codebookCount)
        let chunkCount = (groupCount + chunkGroups - 1) / chunkGroups
        let byWork = Self.parallelDecodeWork > 0 ? decodeWork(tokens: tokens) / Self.parallelDecodeWork : Self.decodeParts
        return max(1, min(Self.decodeParts, chunkCount, byWork))
    }

    /// Parts of a split decode: enough for up to 4 cores.
    static let decodeParts = 4

    /// Work (see `decodeWork`) per split-K part. 75 000 splits SmolLM2's q/o [576,576] in 2,
    /// leaves k/v [192,576] whole (q's two halves then pair with k and v on two cores), gate/up
    /// [1536,576] in 3 and down [576,1536] in 4. (Before the parts of layers sharing an input ran
    /// in one loop, this was 250 000 and o ran on one core.)
    nonisolated(unsafe) public static var parallelDecodeWork = 75_000

    /// One worker's share: tables of `chunks` for every token, then row blocks four at a time
    /// (every token and chunk per 256 rows while their codes are in L1). Not inlined: inside the
    /// loop of `applyLookupTablesTogether` the optimiser stopped inlining the table build's
    /// vector loads and stores (one thread, SmolLM2 2x8: 12 → 19-26 ms per token).
    @inline(never)
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
