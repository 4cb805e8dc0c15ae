import Kernels

/// The outcome of one beam-search pass over all codes of a layer.
public struct CodeSearchResult: Sendable {
    public var code: AdditiveCode
    /// Σ_r of each row's error as tracked incrementally by the search; equals
    /// tr((W−Ŵ)H(W−Ŵ)ᵀ) of `code` up to Float32 rounding.
    public var trackedObjective: Double
    /// tr((W−Ŵ)H(W−Ŵ)ᵀ) of the input code, computed exactly at the start of the pass.
    public var initialObjective: Double
    /// How many (row, group, codebook) codes differ from the input.
    public var changedCodes: Int
}

/// One pass of AQLM's beam search over codes (paper §3.2, reference `beam_search_optimal_codes`),
/// minimising tr((W−Ŵ)H(W−Ŵ)ᵀ) exactly with codebooks and scales fixed.
///
/// Rows are independent (the objective is a sum over rows), so each row is searched on its own:
/// input groups are visited in a seeded random order and, within a group, every codebook's code is
/// re-chosen among all 2^B candidates for each of the `beamSize` best partial hypotheses. With
/// e = w − ŵ and the row's gradient g = H e, replacing code o by c in group j changes ŵ_j by
/// δ = s(C_c − C_o) and the error by −2δ·g_j + δᵀH_jjδ, which is, over all candidates c,
///   C_c·v + s²·q_c + const,  v = −2s·g_j − 2s²·H_jj C_o,  q_c = C_c H_jj C_cᵀ,
/// one small [g]×[g, 2^B] product per hypothesis. After a group is done, each hypothesis's
/// gradient is brought up to date with g ← g − H[:, group] Δ (Δ its total change of ŵ_j), but only
/// on the groups still to be visited: a pass reads each group's slice once, so the visited ones are
/// dead. Gradients and H are kept in visit order (`GroupPermutedHessian`) so that those groups
/// are one contiguous suffix; this halves the pass's d_out·d_in² term and changes no value read,
/// and the copy of H it needs is half of H.
/// Beam size 1 is greedy coordinate descent; the best hypothesis never gets worse than the input,
/// since keeping a code is always a candidate.
///
/// `selectedGroups` [dOut, dIn/g], when given, restricts the search to the (row, group) pairs
/// marked true: the other groups keep their codes and are skipped by the visit (PV-tuning's
/// subspace V step); the exact objective is still tracked over whole rows.
public func searchCodes(_ code: AdditiveCode, problem: LayerProblem, beamSize: Int, seed: UInt64,
                        selectedGroups: [Bool]? = nil) -> CodeSearchResult {
    precondition(code.dOut == problem.dOut && code.dIn == problem.dIn && beamSize >= 1)
    precondition(selectedGroups == nil || selectedGroups!.count == code.dOut * code.groupsPerRow)
    let tables = BeamSearchTables(code: code, problem: problem)
    let order = VisitOrder(groups: code.groupsPerRow, codebooks: code.scheme.codebookCount, seed: seed)
    let visitHessian = GroupPermutedHessian(problem, groupSize: code.scheme.groupSize, order: order.groups)
    // Gradients of all rows at the start, through BLAS (outside the parallel loop).
    var residual = problem.weight
    let approximation = code.dequantized()
    for i in residual.indices { residual[i] -= approximation[i] }
    let gradients = problem.timesHessian(residual)

    var codes = code.codes
    var outcomes = [RowOutcome](repeating: RowOutcome(), count: problem.dOut)
    let groups = code.groupsPerRow, books = code.scheme.codebookCount, dIn = problem.dIn
    codes.withUnsafeMutableBufferPointer { codes in
        outcomes.withUnsafeMutableBufferPointer { outcomes in
            residual.withUnsafeBufferPointer { residual in
                gradients.withUnsafeBufferPointer { gradients in
                    visitHessian.storage.withUnsafeBufferPointer { hessian in
                      (selectedGroups ?? []).withUnsafeBufferPointer { selected in
                        let codes = codes.baseAddress!, outcomes = outcomes.baseAddress!
                        let selected = selectedGroups == nil ? nil : selected.baseAddress!
                        let residual = residual.baseAddress!, gradients = gradients.baseAddress!
                        parallelRowBlocks(problem.dOut) { rows in
                            let searcher = RowBeamSearch(tables: tables, hessian: visitHessian, storage: hessian.baseAddress!,
                                                         dIn: dIn, beamSize: beamSize)
                            let visitGradient = UnsafeMutablePointer<Float>.allocate(capacity: dIn)
                            defer { visitGradient.deallocate() }
                            for r in rows {
                                let gradient = gradients + r * dIn
                                let error = dot(residual + r * dIn, gradient, count: dIn)
                                visitHessian.permuteVector(gradient, into: visitGradient)
                                let found = searcher.search(codes: codes + r * groups * books, gradient: visitGradient, error: error,
                                                            scale: code.scales[r], order: order,
                                                            selected: selected.map { $0 + r * groups })
                                outcomes[r] = RowOutcome(initialError: Double(error), error: Double(found.error),
                                                         changedCodes: found.changedCodes)
                            }
                        }
                      }
                    }
                }
            }
        }
    }
    var result = code
    result.codes = codes
    return CodeSearchResult(code: result, trackedObjective: outcomes.reduce(0) { $0 + $1.error },
                            initialObjective: outcomes.reduce(0) { $0 + $1.initialError },
                            changedCodes: outcomes.reduce(0) { $0 + $1.changedCodes })
}

private struct RowOutcome {
    var initialError = 0.0
    var error = 0.0
    var changedCodes = 0
}

/// Runs `body` over 0..<n in blocks of 16 rows, handed out dynamically: rows are searched
/// independently, and on a shared machine two static halves would wait for the slower core.
func parallelRowBlocks(_ n: Int, _ body: (Range<Int>) -> Void) {
    let blockSize = 16
    let blocks = (n + blockSize - 1) / blockSize
    parallelFor(blocks) { b in body((b * blockSize)..<min(n, (b + 1) * blockSize)) }
}

/// The order in which a pass visits input groups and, within each group, codebooks; shared by
/// all rows so a pass does not depend on how rows are split across threads.
struct VisitOrder {
    let groups: [Int]
    /// [groups, M]: the codebook order used at the k-th visited group.
    let codebooks: [Int]

    init(groups count: Int, codebooks books: Int, seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        var groups = Array(0..<count)
        groups.shuffle(using: &rng)
        var codebooks = [Int]()
        codebooks.reserveCapacity(count * books)
        for _ in 0..<count {
            var order = Array(0..<books)
            order.shuffle(using: &rng)
            codebooks += order
        }
        self.groups = groups
        self.codebooks = codebooks
    }
}

/// The part of H [dIn, dIn] a pass reads when it updates gradients, in its visit order: for the
/// group at visit position p, its g rows restricted to the columns of the groups visited after it,
/// (order[p]·g + a, order[q]·g + b) for q > p. Packed triangle by triangle, this is half of H; the
/// identity (the plain objective of V steps) is its own reordering and is used as it is.
struct GroupPermutedHessian {
    let storage: [Float]
    let order: [Int]
    let groupSize: Int, dIn: Int
    /// False when `storage` is the identity, whole and unpermuted.
    let packed: Bool

    init(_ problem: LayerProblem, groupSize g: Int, order: [Int]) {
        let hessian = problem.hessian, dIn = problem.dIn
        self.order = order
        self.groupSize = g
        self.dIn = dIn
        packed = !problem.hessianIsIdentity
        guard packed else {
            storage = hessian
            return
        }
        let groups = order.count
        // At least one entry, so that the storage has an address when dIn is one group.
        var triangle = [Float](repeating: 0, count: max(1, g * (groups * dIn - g * groups * (groups + 1) / 2)))
        hessian.withUnsafeBufferPointer { h in
            triangle.withUnsafeMutableBufferPointer { out in
                let h = h.baseAddress!, out = out.baseAddress!
                parallelChunks(groups) { lo, hi in
                    for p in lo..<hi {
                        let (offset, stride) = Self.remainingRows(position: p, groupSize: g, dIn: dIn)
                        for a in 0..<g {
                            let source = h + (order[p] * g + a) * dIn, destination = out + offset + a * stride
                            for q in (p + 1)..<groups {
                                (destination + (q - p - 1) * g).update(from: source + order[q] * g, count: g)
                            }
                        }
                    }
                }
            }
        }
        storage = triangle
    }

    /// Where, in `storage`, the rows of visit position p start (at the column of position p + 1),
    /// and their stride.
    func remainingRows(position p: Int) -> (offset: Int, stride: Int) {
        if packed { return Self.remainingRows(position: p, groupSize: groupSize, dIn: dIn) }
        return (p * groupSize * dIn + (p + 1) * groupSize, dIn)
    }

    /// Packed layout: position p holds g rows of dIn − (p+1)·g entries after the Σ_{p'<p} of theirs.
    private static func remainingRows(position p: Int, groupSize g: Int, dIn: Int) -> (offset: Int, stride: Int) {
        (g * (p * dIn - g * p * (p + 1) / 2), dIn - (p + 1) * g)
    }

    /// out[p·g + a] = vector[order[p]·g + a]: a gradient row in visit order.
    func permuteVector(_ vector: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        for (p, group) in order.enumerated() { (out + p * groupSize).update(from: vector + group * groupSize, count: groupSize) }
    }
}

/// Per-layer quantities every row's search shares.
struct BeamSearchTables: @unchecked Sendable {
    let groupSize: Int, books: Int, size: Int, groups: Int
    let codebooks: [Float]
    /// [groups, g, g]: the diagonal blocks H_jj.
    let hessianBlocks: [Float]
    /// [M, g, 2^B]: codebooks transposed for the candidate-scoring kernel.
    let transposedCodebooks: [Float]
    /// [groups, M, 2^B]: q_c = C_c H_jj C_cᵀ.
    let codeEnergies: [Float]
    /// [groups, M, 2^B, g]: H_jj C_cᵀ, so a hypothesis's query and gradient update are g-vector
    /// operations; nil when it would exceed `maximumProductTable` floats (e.g. 1x16), in which
    /// case the g×g products are done per use.
    let hessianTimesCodes: [Float]?
    static let maximumProductTable = 1 << 23

    /// The tables' storage as pointers, for the hot loops that read them.
    struct Pointers {
        let codebooks: UnsafePointer<Float>
        let transposed: UnsafePointer<Float>
        let energies: UnsafePointer<Float>
        let blocks: UnsafePointer<Float>
        /// `hessianTimesCodes`, if kept.
        let products: UnsafePointer<Float>?
    }

    /// Runs `body` with pointers into the tables, valid only during the call.
    func withPointers<R>(_ body: (Pointers) throws -> R) rethrows -> R {
        try codebooks.withUnsafeBufferPointer { codebooks in
            try transposedCodebooks.withUnsafeBufferPointer { transposed in
                try codeEnergies.withUnsafeBufferPointer { energies in
                    try hessianBlocks.withUnsafeBufferPointer { blocks in
                        try (hessianTimesCodes ?? []).withUnsafeBufferPointer { products in
                            try body(Pointers(codebooks: codebooks.baseAddress!, transposed: transposed.baseAddress!,
                                              energies: energies.baseAddress!, blocks: blocks.baseAddress!,
                                              products: hessianTimesCodes == nil ? nil : products.baseAddress!))
                        }
                    }
                }
            }
        }
    }

    init(code: AdditiveCode, problem: LayerProblem) {
        self.init(code: code, hessian: problem.hessian)
    }

    /// The tables from H [dIn, dIn] alone (they do not depend on W).
    init(code: AdditiveCode, hessian: [Float]) {
        let g = code.scheme.groupSize, books = code.scheme.codebookCount, size = code.scheme.codebookSize
        let groups = code.groupsPerRow, dIn = code.dIn
        groupSize = g
        self.books = books
        self.size = size
        self.groups = groups
        codebooks = code.codebooks
        var blocks = [Float](repeating: 0, count: groups * g * g)
        for j in 0..<groups {
            for a in 0..<g {
                for b in 0..<g { blocks[(j * g + a) * g + b] = hessian[(j * g + a) * dIn + j * g + b] }
            }
        }
        hessianBlocks = blocks
        var transposed = [Float](repeating: 0, count: books * g * size)
        for m in 0..<books {
            for c in 0..<size {
                for a in 0..<g { transposed[(m * g + a) * size + c] = code.codebooks[(m * size + c) * g + a] }
            }
        }
        transposedCodebooks = transposed
        let vectors = books * size
        let keepProducts = groups * vectors * g <= Self.maximumProductTable
        var energies = [Float](repeating: 0, count: groups * vectors)
        var products = [Float](repeating: 0, count: keepProducts ? groups * vectors * g : 0)
        let codebooks = code.codebooks
        energies.withUnsafeMutableBufferPointer { energies in
            products.withUnsafeMutableBufferPointer { products in
                // An empty array's buffer may still have a base address: without the product table
                // (1x16 on real widths) the pointer must be nil, or the loop writes past it.
                let energies = energies.baseAddress!, products = keepProducts ? products.baseAddress : nil
                parallelChunks(groups) { lo, hi in
                    var product = [Float](repeating: 0, count: g)
                    for j in lo..<hi {
                        for v in 0..<vectors {
                            var energy: Float = 0
                            for a in 0..<g {
                                var row: Float = 0
                                for b in 0..<g { row += blocks[(j * g + a) * g + b] * codebooks[v * g + b] }
                                product[a] = row
                                energy += codebooks[v * g + a] * row
                            }
                            energies[j * vectors + v] = energy
                            if let products { for a in 0..<g { products[(j * vectors + v) * g + a] = product[a] } }
                        }
                    }
                }
            }
        }
        codeEnergies = energies
        hessianTimesCodes = keepProducts ? products : nil
    }
}

/// Hypotheses alive inside one group visit: the slot (full gradient + codes) each descends from,
/// its codes for the current group, its current group's gradient slice and its error.
private struct GroupHypotheses {
    let root: UnsafeMutablePointer<Int>
    let codes: UnsafeMutablePointer<Int>
    let gradient: UnsafeMutablePointer<Float>
    let error: UnsafeMutablePointer<Float>

    init(beam: Int, books: Int, g: Int) {
        root = .allocate(capacity: beam)
        codes = .allocate(capacity: beam * books)
        gradient = .allocate(capacity: beam * g)
        error = .allocate(capacity: beam)
    }

    func deallocate() {
        root.deallocate()
        codes.deallocate()
        gradient.deallocate()
        error.deallocate()
    }
}

/// One worker's scratch for searching rows one at a time.
private final class RowBeamSearch {
    let beam: Int, g: Int, books: Int, size: Int, groups: Int, dIn: Int
    let tables: BeamSearchTables
    /// The rows of H the gradient updates read, in visit order, and their storage.
    let hessian: GroupPermutedHessian
    let hessianStorage: UnsafePointer<Float>
    /// [beam, dIn]: each slot's hypothesis's gradient in visit order, current on the groups not
    /// yet visited.
    let slotGradients: UnsafeMutablePointer<Float>
    /// [beam, groups·M]: full codes of each slot's hypothesis.
    let slotCodes: UnsafeMutablePointer<UInt16>
    /// Slot and error of each hypothesis between group visits.
    let slotOfHypothesis: UnsafeMutablePointer<Int>
    let hypothesisError: UnsafeMutablePointer<Float>
    var current: GroupHypotheses
    var next: GroupHypotheses
    /// [beam, scoreStride]: every hypothesis's candidate scores, padded with +∞ to whole 16-chunks.
    let scores: UnsafeMutablePointer<Float>
    let scoreStride: Int
    let chunkMinima: UnsafeMutablePointer<Float>
    let query: UnsafeMutablePointer<Float>
    let deltas: UnsafeMutablePointer<Float>
    let changed: UnsafeMutablePointer<Bool>
    let claimedBy: UnsafeMutablePointer<Int>
    let newSlot: UnsafeMutablePointer<Int>
    var selector: SmallestValues
    var live = 1

    /// `storage` (`hessian.storage`) must outlive the searcher.
    init(tables: BeamSearchTables, hessian: GroupPermutedHessian, storage: UnsafePointer<Float>, dIn: Int, beamSize: Int) {
        beam = beamSize
        g = tables.groupSize
        books = tables.books
        size = tables.size
        groups = tables.groups
        self.dIn = dIn
        self.tables = tables
        self.hessian = hessian
        hessianStorage = storage
        slotGradients = .allocate(capacity: beam * dIn)
        slotCodes = .allocate(capacity: beam * groups * books)
        slotOfHypothesis = .allocate(capacity: beam)
        hypothesisError = .allocate(capacity: beam)
        current = GroupHypotheses(beam: beam, books: books, g: g)
        next = GroupHypotheses(beam: beam, books: books, g: g)
        scoreStride = (size + 15) / 16 * 16
        scores = .allocate(capacity: beam * scoreStride)
        scores.initialize(repeating: .infinity, count: beam * scoreStride)
        chunkMinima = .allocate(capacity: beam * scoreStride / 16)
        query = .allocate(capacity: 4 * g)
        deltas = .allocate(capacity: beam * g)
        changed = .allocate(capacity: beam)
        claimedBy = .allocate(capacity: beam)
        newSlot = .allocate(capacity: beam)
        selector = SmallestValues(capacity: beam)
    }

    deinit {
        slotGradients.deallocate()
        slotCodes.deallocate()
        slotOfHypothesis.deallocate()
        hypothesisError.deallocate()
        current.deallocate()
        next.deallocate()
        scores.deallocate()
        chunkMinima.deallocate()
        query.deallocate()
        deltas.deallocate()
        changed.deallocate()
        claimedBy.deallocate()
        newSlot.deallocate()
        selector.deallocate()
    }

    /// Searches one row in place: `codes` [groups·M] in and out, `gradient` = H(w − ŵ) in visit
    /// order (`GroupPermutedHessian.permuteVector`) and `error`
    /// = (w − ŵ)ᵀH(w − ŵ) of the input codes; `selected` [groups], if given, the groups to
    /// visit. Returns the best hypothesis's error.
    func search(codes: UnsafeMutablePointer<UInt16>, gradient: UnsafePointer<Float>, error: Float, scale: Float,
                order: VisitOrder, selected: UnsafePointer<Bool>? = nil) -> (error: Float, changedCodes: Int) {
        slotGradients.update(from: gradient, count: dIn)
        slotCodes.update(from: codes, count: groups * books)
        slotOfHypothesis[0] = 0
        hypothesisError[0] = error
        live = 1
        tables.withPointers { t in
            let context = GroupContext(tables: t, scale: scale)
            for (visit, j) in order.groups.enumerated() {
                if let selected, !selected[j] { continue }
                beginGroup(j, position: visit)
                for k in 0..<books {
                    let m = order.codebooks[visit * books + k]
                    if beam == 1 {
                        greedyStep(group: j, codebook: m, context)
                    } else {
                        beamStep(group: j, codebook: m, context)
                    }
                }
                finishGroup(j, position: visit, context)
            }
        }
        var best = 0
        for h in 1..<live where hypothesisError[h] < hypothesisError[best] { best = h }
        let bestCodes = slotCodes + slotOfHypothesis[best] * groups * books
        var changes = 0
        for i in 0..<(groups * books) where bestCodes[i] != codes[i] { changes += 1 }
        codes.update(from: bestCodes, count: groups * books)
        return (hypothesisError[best], changes)
    }

    struct GroupContext {
        let tables: BeamSearchTables.Pointers
        let scale: Float
    }

    private func beginGroup(_ j: Int, position p: Int) {
        for h in 0..<live {
            let slot = slotOfHypothesis[h]
            current.root[h] = slot
            current.error[h] = hypothesisError[h]
            for m in 0..<books { current.codes[h * books + m] = Int(slotCodes[slot * groups * books + j * books + m]) }
            (current.gradient + h * g).update(from: slotGradients + slot * dIn + p * g, count: g)
        }
    }

    /// Fills `query` with v = −2s·g_j − 2s²·H_jj C_o and returns the candidate-independent part
    /// of the new error, err + 2s·C_o·g_j + s²·q_o.
    @inline(__always)
    private func prepareQuery(hypothesis h: Int, group j: Int, codebook m: Int, old o: Int, _ context: GroupContext) -> Float {
        let s = context.scale
        let oldVector = context.tables.codebooks + (m * size + o) * g
        let gradient = current.gradient + h * g
        let hc = hessianTimesCode(group: j, codebook: m, code: o, context)
        var oldDotGradient: Float = 0
        for a in 0..<g {
            query[a] = -2 * s * gradient[a] - 2 * s * s * hc[a]
            oldDotGradient += oldVector[a] * gradient[a]
        }
        let oldEnergy = context.tables.energies + (j * books + m) * size + o
        return current.error[h] + 2 * s * oldDotGradient + s * s * oldEnergy.pointee
    }

    /// H_jj C_cᵀ, from the table or computed into scratch (`query[2g..<3g]` / `[3g..<4g]` by `slot`).
    @inline(__always)
    private func hessianTimesCode(group j: Int, codebook m: Int, code c: Int, slot: Int = 0, _ context: GroupContext) -> UnsafePointer<Float> {
        if let products = context.tables.products { return products + ((j * books + m) * size + c) * g }
        let vector = context.tables.codebooks + (m * size + c) * g, block = context.tables.blocks + j * g * g
        let out = query + (2 + slot) * g
        for a in 0..<g {
            var sum: Float = 0
            for b in 0..<g { sum += block[a * g + b] * vector[b] }
            out[a] = sum
        }
        return UnsafePointer(out)
    }

    /// gradient_j ← gradient_j − H_jj · s(C_new − C_old).
    @inline(__always)
    private func updateGroupGradient(_ gradient: UnsafeMutablePointer<Float>, group j: Int, codebook m: Int,
                                     old o: Int, new c: Int, _ context: GroupContext) {
        let s = context.scale
        let oldProduct = hessianTimesCode(group: j, codebook: m, code: o, slot: 0, context)
        let newProduct = hessianTimesCode(group: j, codebook: m, code: c, slot: 1, context)
        for a in 0..<g { gradient[a] -= s * (newProduct[a] - oldProduct[a]) }
    }

    private func greedyStep(group j: Int, codebook m: Int, _ context: GroupContext) {
        let o = current.codes[m]
        let offset = prepareQuery(hypothesis: 0, group: j, codebook: m, old: o, context)
        let energies = context.tables.energies + (j * books + m) * size, s2 = context.scale * context.scale
        let best = nearestCandidate(query: query, dims: g, table: context.tables.transposed + m * g * size, count: size,
                                    bias: energies, biasScale: s2, offset: offset)
        guard best.index != o else { return }
        // Keeping o scores exactly the current error up to rounding; move only on a real gain.
        guard best.value < current.error[0] else { return }
        updateGroupGradient(current.gradient, group: j, codebook: m, old: o, new: best.index, context)
        current.codes[m] = best.index
        current.error[0] = best.value
    }

    private func beamStep(group j: Int, codebook m: Int, _ context: GroupContext) {
        let energies = context.tables.energies + (j * books + m) * size, s2 = context.scale * context.scale
        let chunksPerHypothesis = scoreStride / 16
        for h in 0..<live {
            let o = current.codes[h * books + m]
            let offset = prepareQuery(hypothesis: h, group: j, codebook: m, old: o, context)
            scoreCandidates(query: query, dims: g, table: context.tables.transposed + m * g * size, count: size,
                            bias: energies, biasScale: s2, offset: offset,
                            into: scores + h * scoreStride, chunkMinima: chunkMinima + h * chunksPerHypothesis)
        }
        selector.select(scores, chunkMinima: chunkMinima, count: live * scoreStride)
        let kept = selector.count
        for rank in 0..<kept {
            let parent = selector.index(rank) / scoreStride, c = selector.index(rank) % scoreStride
            next.root[rank] = current.root[parent]
            next.error[rank] = selector.value(rank)
            (next.codes + rank * books).update(from: current.codes + parent * books, count: books)
            next.codes[rank * books + m] = c
            let gradient = next.gradient + rank * g
            gradient.update(from: current.gradient + parent * g, count: g)
            let o = current.codes[parent * books + m]
            if c != o { updateGroupGradient(gradient, group: j, codebook: m, old: o, new: c, context) }
        }
        swap(&current, &next)
        live = kept
    }

    /// Writes the group's new codes into slots and brings each slot's gradient up to date on the
    /// groups after visit position p, g ← g_root − H[:, group] Δ. A slot is updated in place by its
    /// first descendant; further descendants are copied (with the update fused) into slots no
    /// hypothesis descends from, before any in-place update touches their source.
    private func finishGroup(_ j: Int, position p: Int, _ context: GroupContext) {
        let rowCodes = groups * books
        for h in 0..<live {
            let root = current.root[h]
            let delta = deltas + h * g
            for a in 0..<g { delta[a] = 0 }
            var differs = false
            for m in 0..<books {
                let new = current.codes[h * books + m], old = Int(slotCodes[root * rowCodes + j * books + m])
                if new == old { continue }
                differs = true
                let newVector = context.tables.codebooks + (m * size + new) * g, oldVector = context.tables.codebooks + (m * size + old) * g
                for a in 0..<g { delta[a] += context.scale * (newVector[a] - oldVector[a]) }
            }
            changed[h] = differs
        }
        for slot in 0..<beam { claimedBy[slot] = -1 }
        for h in 0..<live where claimedBy[current.root[h]] < 0 {
            claimedBy[current.root[h]] = h
            newSlot[h] = current.root[h]
        }
        var freeSlot = 0
        let start = (p + 1) * g, remaining = dIn - start
        let (offset, rowStride) = hessian.remainingRows(position: p)
        let groupRows = hessianStorage + offset
        for h in 0..<live where claimedBy[current.root[h]] != h {
            while claimedBy[freeSlot] >= 0 { freeSlot += 1 }
            claimedBy[freeSlot] = h
            newSlot[h] = freeSlot
            let source = current.root[h]
            subtractRowCombination(source: slotGradients + source * dIn + start,
                                   destination: slotGradients + freeSlot * dIn + start, count: remaining,
                                   rows: groupRows, rowStride: rowStride, coefficients: deltas + h * g, rowCount: g)
            (slotCodes + freeSlot * rowCodes).update(from: slotCodes + source * rowCodes, count: rowCodes)
        }
        for h in 0..<live where newSlot[h] == current.root[h] && changed[h] {
            let slot = slotGradients + newSlot[h] * dIn + start
            subtractRowCombination(source: slot, destination: slot, count: remaining, rows: groupRows, rowStride: rowStride,
                                   coefficients: deltas + h * g, rowCount: g)
        }
        for h in 0..<live {
            for m in 0..<books { slotCodes[newSlot[h] * rowCodes + j * books + m] = UInt16(current.codes[h * books + m]) }
            slotOfHypothesis[h] = newSlot[h]
            hypothesisError[h] = current.error[h]
        }
    }
}
