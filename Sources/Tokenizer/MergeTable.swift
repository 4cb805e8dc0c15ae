/// Byte-level BPE merging as llama.cpp's `llm_tokenizer_bpe_session`: a word starts as one symbol
/// per byte, and the adjacent pair whose merge rule has the lowest rank is merged first, the
/// leftmost pair among equal ranks, until no adjacent pair has a rule.
///
/// Symbols are ids: vocabulary tokens keep their token id, and the few strings a merge can produce
/// that are not tokens ("virtual" symbols) get ids from `vocabularySize` up. llama.cpp compares
/// symbol texts; since every symbol text has exactly one id here, comparing ids is the same test.
struct MergeTable: Sendable {
    struct Merge: Sendable {
        var rank: Int32
        var result: Int32
    }

    /// (left id << 32 | right id) -> the rule merging that pair.
    let rules: [UInt64: Merge]

    init(rules: [UInt64: Merge]) {
        self.rules = rules
    }

    @inline(__always) static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    /// Merges `symbols` (one per byte) down to the final symbol sequence.
    func apply(_ symbols: [Int32]) -> [Int32] {
        let n = symbols.count
        guard n > 1 else { return symbols }
        var symbol = symbols
        var next = (0..<n).map { Int32($0 + 1) }
        var prev = (0..<n).map { Int32($0 - 1) }
        next[n - 1] = -1
        var queue = PairQueue()
        for i in 0..<(n - 1) { push(&queue, Int32(i), Int32(i + 1), symbol) }

        while let pair = queue.popMin() {
            let l = Int(pair.left), r = Int(pair.right)
            // A pair is stale once either side has been merged into something else.
            guard symbol[l] == pair.leftSymbol, symbol[r] == pair.rightSymbol, next[l] == pair.right else { continue }
            symbol[l] = pair.result
            symbol[r] = -1
            next[l] = next[r]
            if next[r] >= 0 { prev[Int(next[r])] = pair.left }
            if prev[l] >= 0 { push(&queue, prev[l], pair.left, symbol) }
            if next[l] >= 0 { push(&queue, pair.left, next[l], symbol) }
        }

        var out: [Int32] = []
        var i: Int32 = 0  // the first symbol only ever absorbs its right neighbours
        while i >= 0 {
            out.append(symbol[Int(i)])
            i = next[Int(i)]
        }
        return out
    }

    private func push(_ queue: inout PairQueue, _ l: Int32, _ r: Int32, _ symbol: [Int32]) {
        let a = symbol[Int(l)], b = symbol[Int(r)]
        guard let merge = rules[Self.key(a, b)] else { return }
        queue.push(.init(order: UInt64(UInt32(merge.rank)) << 32 | UInt64(UInt32(l)),
                         left: l, right: r, leftSymbol: a, rightSymbol: b, result: merge.result))
    }
}

/// Candidate merges ordered by (rank, left position): llama.cpp's `llm_bigram_bpe::comparator`.
struct PairQueue {
    struct Pair {
        var order: UInt64
        var left: Int32
        var right: Int32
        var leftSymbol: Int32
        var rightSymbol: Int32
        var result: Int32
    }

    private var heap: [Pair] = []

    mutating func push(_ p: Pair) {
        heap.append(p)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].order < heap[parent].order else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func popMin() -> Pair? {
        guard let last = heap.popLast() else { return nil }
        guard !heap.isEmpty else { return last }
        let top = heap[0]
        heap[0] = last
        var parent = 0
        while true {
            let l = 2 * parent + 1, r = l + 1
            var smallest = parent
            if l < heap.count && heap[l].order < heap[smallest].order { smallest = l }
            if r < heap.count && heap[r].order < heap[smallest].order { smallest = r }
            if smallest == parent { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}
