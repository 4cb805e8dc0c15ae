import Checkpoint
import Kernels

/// Which tokens of a `forward` call get output logits (the head is 28M of SmolLM2-135M's
/// 135M parameters, so rows nobody reads are not computed).
public enum LogitRows: Sendable, Equatable {
    case none
    case last
    case all
    /// Token indices within the call's `tokens`.
    case range(Range<Int>)

    func tokenRange(count: Int) -> Range<Int> {
        switch self {
        case .none: return 0..<0
        case .last: return (count - 1)..<count
        case .all: return 0..<count
        case .range(let r): return r
        }
    }
}

/// The activation each linear layer reads; calibration observes these (q/k/v share the
/// normalised block input, gate/up share the normalised post-attention stream).
public enum LinearInputSite: Sendable, CaseIterable {
    /// RMSNorm(x), read by q, k, v.
    case attention
    /// The concatenated attention heads, read by o.
    case attentionOutput
    /// RMSNorm(x + attention), read by gate and up.
    case mlp
    /// silu(gate)·up, read by down.
    case mlpHidden

    public var linears: [LlamaLinear] {
        switch self {
        case .attention: return [.q, .k, .v]
        case .attentionOutput: return [.o]
        case .mlp: return [.gate, .up]
        case .mlpHidden: return [.down]
        }
    }
}

/// One observed linear input: `rows` is [tokens × width], row-major, valid only during the
/// callback (it is the forward pass's own buffer: copy or accumulate, don't keep it).
public struct LinearInput {
    public let layer: Int
    public let site: LinearInputSite
    public let tokens: Int
    public let width: Int
    public let rows: UnsafeBufferPointer<Float>
}

/// Called for each linear input as the forward pass produces it (calibration hook).
public typealias LinearInputObserver = (LinearInput) -> Void

extension LlamaModel {
    /// Runs `tokens` at positions startPosition..<startPosition+count (default: right after
    /// what the state's cache holds), extends the KV cache, and writes logits for the
    /// selected rows into the state (`state.logits(row:)`, row 0 = the first selected token).
    /// Inputs longer than `state.maxBatch` run in several steps. Returns the selected token
    /// range.
    @discardableResult
    public func forward(_ tokens: [Int], startPosition: Int? = nil, state: LlamaState,
                        logits selection: LogitRows = .last, observer: LinearInputObserver? = nil) -> Range<Int> {
        let start = startPosition ?? state.length
        let selected = selection.tokenRange(count: tokens.count)
        precondition(!tokens.isEmpty, "forward needs at least one token")
        precondition(start >= 0 && start <= state.length, "start position \(start) leaves a gap after cached \(state.length)")
        precondition(start + tokens.count <= state.maxPositions, "\(start + tokens.count) positions exceed the state's \(state.maxPositions)")
        precondition(selected.lowerBound >= 0 && selected.upperBound <= tokens.count, "logit rows \(selected) outside the \(tokens.count) tokens")
        precondition(selected.count <= state.maxLogitRows, "\(selected.count) logit rows exceed the state's \(state.maxLogitRows)")
        precondition(tokens.allSatisfy { $0 >= 0 && $0 < config.vocabSize }, "token id outside the vocabulary")

        var pieceStart = 0
        while pieceStart < tokens.count {
            let pieceEnd = min(pieceStart + state.maxBatch, tokens.count)
            let count = pieceEnd - pieceStart
            let position = start + pieceStart
            embed(tokens[pieceStart..<pieceEnd], into: state.hidden)
            for l in 0..<layers.count {
                runBlock(l, state.hidden, tokens: count, startPosition: position, state: state, observer: observer)
            }
            let rows = selected.clamped(to: pieceStart..<pieceEnd)
            if !rows.isEmpty {
                applyHead(state.hidden + (rows.lowerBound - pieceStart) * config.hiddenSize, tokens: rows.count,
                          normed: state.normed,
                          into: state.logitBuffer + (rows.lowerBound - selected.lowerBound) * config.vocabSize)
            }
            state.length = position + count
            pieceStart = pieceEnd
        }
        return selected
    }

    /// The token embeddings of `tokens`, [count × hiddenSize] (the input of block 0).
    public func embed(_ tokens: [Int]) -> [Float] {
        var out = [Float](repeating: 0, count: tokens.count * config.hiddenSize)
        out.withUnsafeMutableBufferPointer { embed(tokens[...], into: $0.baseAddress!) }
        return out
    }

    /// Runs block `layer` in place on `hidden` ([tokens × hiddenSize], rows at positions
    /// startPosition...), reading and writing that layer's KV cache in `state` (positions
    /// before startPosition must already hold this sequence's keys/values). This is the unit
    /// calibration works in: block inputs -> block outputs, with `observer` seeing the
    /// inputs of the seven linears. Does not change `state.length`.
    public func forwardBlock(layer: Int, hidden: inout [Float], startPosition: Int = 0, state: LlamaState,
                             observer: LinearInputObserver? = nil) {
        let tokens = hidden.count / config.hiddenSize
        precondition(tokens * config.hiddenSize == hidden.count && tokens > 0, "hidden is not [tokens × \(config.hiddenSize)]")
        precondition(tokens <= state.maxBatch, "\(tokens) tokens exceed the state's batch of \(state.maxBatch)")
        precondition(startPosition + tokens <= state.maxPositions, "positions exceed the state's \(state.maxPositions)")
        hidden.withUnsafeMutableBufferPointer {
            runBlock(layer, $0.baseAddress!, tokens: tokens, startPosition: startPosition, state: state, observer: observer)
        }
    }

    /// Final RMSNorm and output head on hidden states [tokens × hiddenSize] -> [tokens × vocabSize].
    public func logits(hidden: [Float], state: LlamaState) -> [Float] {
        let tokens = hidden.count / config.hiddenSize
        precondition(tokens * config.hiddenSize == hidden.count && tokens <= state.maxBatch, "hidden is not [tokens × hidden] within the batch")
        var out = [Float](repeating: 0, count: tokens * config.vocabSize)
        hidden.withUnsafeBufferPointer { h in
            out.withUnsafeMutableBufferPointer { o in
                applyHead(h.baseAddress!, tokens: tokens, normed: state.normed, into: o.baseAddress!)
            }
        }
        return out
    }

    // MARK: - The block, step by step

    /// From this many rows on, attention runs as sgemm per head (prefill); below, one query
    /// row at a time against the cache (decoding), where BLAS call overhead would dominate.
    static let gemmAttentionRows = 16

    func embed(_ tokens: ArraySlice<Int>, into x: UnsafeMutablePointer<Float>) {
        for (row, token) in tokens.enumerated() {
            embeddingTable.row(token, into: x + row * config.hiddenSize)
        }
    }

    /// x += Attention(RMSNorm(x)); x += MLP(RMSNorm(x)), for `tokens` rows at positions
    /// startPosition..., writing this layer's keys/values into the cache.
    func runBlock(_ l: Int, _ x: UnsafeMutablePointer<Float>, tokens t: Int, startPosition: Int,
                  state s: LlamaState, observer: LinearInputObserver?) {
        let block = layers[l]
        let c = config
        let d = c.hiddenSize, qDim = c.numHeads * c.headDim, kvDim = c.numKVHeads * c.headDim, m = c.intermediateSize
        func observe(_ site: LinearInputSite, _ rows: UnsafeMutablePointer<Float>, width: Int) {
            observer?(LinearInput(layer: l, site: site, tokens: t, width: width,
                                  rows: UnsafeBufferPointer(start: rows, count: t * width)))
        }

        // Attention: q, k, v from the normalised stream; k and v go straight into the cache.
        let keys = s.keys[l] + startPosition * kvDim, values = s.values[l] + startPosition * kvDim
        block.inputNorm.withUnsafeBufferPointer {
            rmsNormRows(x, weight: $0.baseAddress!, into: s.normed, rows: t, count: d, epsilon: c.rmsNormEps)
        }
        observe(.attention, s.normed, width: d)
        applyAll([(block.q, s.query), (block.k, keys), (block.v, values)], to: s.normed, tokens: t)
        addBias(block.qBias, to: s.query, tokens: t)
        addBias(block.kBias, to: keys, tokens: t)
        addBias(block.vBias, to: values, tokens: t)
        s.rope.apply(s.query, rowStride: qDim, heads: c.numHeads, tokens: t, startPosition: startPosition)
        s.rope.apply(keys, rowStride: kvDim, heads: c.numKVHeads, tokens: t, startPosition: startPosition)
        if s.kvCache == .f16 {
            // Rounded into the fp16 cache; sgemm attention reads the whole layer widened back
            // (so both paths see the same rounded values), decode steps read fp16 directly.
            let visible = (startPosition + t) * kvDim, new = startPosition * kvDim
            narrowToHalves(keys, count: t * kvDim, into: s.halfKeys[l] + new)
            narrowToHalves(values, count: t * kvDim, into: s.halfValues[l] + new)
            if t >= Self.gemmAttentionRows {
                widenHalves(s.halfKeys[l], count: visible, into: s.keys[l])
                widenHalves(s.halfValues[l], count: visible, into: s.values[l])
            }
        }
        if t >= Self.gemmAttentionRows {
            causalAttentionGEMM(queries: s.query, keys: s.keys[l], values: s.values[l], into: s.attention,
                                tokens: t, startPosition: startPosition,
                                heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim, scores: s.scores)
        } else if s.kvCache == .f16 {
            causalAttention(queries: s.query, keys: UnsafePointer(s.halfKeys[l]), values: UnsafePointer(s.halfValues[l]),
                            into: s.attention, tokens: t, startPosition: startPosition,
                            heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim)
        } else {
            causalAttention(queries: s.query, keys: s.keys[l], values: s.values[l], into: s.attention,
                            tokens: t, startPosition: startPosition,
                            heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim)
        }
        observe(.attentionOutput, s.attention, width: qDim)
        block.o.apply(s.attention, s.projected, tokens: t)
        addResidual(s.projected, into: x, count: t * d)

        // MLP: down(silu(gate(x̂)) · up(x̂)), x̂ = RMSNorm(x).
        block.postAttentionNorm.withUnsafeBufferPointer {
            rmsNormRows(x, weight: $0.baseAddress!, into: s.normed, rows: t, count: d, epsilon: c.rmsNormEps)
        }
        observe(.mlp, s.normed, width: d)
        applyAll([(block.gate, s.gate), (block.up, s.up)], to: s.normed, tokens: t)
        parallelChunks(t * m, minChunk: 16_384) { lo, hi in
            swiGLU(gate: s.gate + lo, up: s.up + lo, into: s.mlpHidden + lo, count: hi - lo)
        }
        observe(.mlpHidden, s.mlpHidden, width: m)
        block.down.apply(s.mlpHidden, s.projected, tokens: t)
        addResidual(s.projected, into: x, count: t * d)
    }

    /// Decoding batches up to this size run linears that share an input in one parallel loop (0: never).
    nonisolated(unsafe) public static var concurrentLinearTokens = 4

    /// y = linear(x) for each (linear, y), largest first. Decoding, linears that share an input
    /// run in one parallel loop (one wait for the other cores per group instead of one per
    /// linear): lookup-table layers as the split-K parts of all of them, longest first
    /// (`AQLMLinear.applyLookupTablesTogether`; the parts and so the bits do not depend on the
    /// thread count); other packed layers side by side, one per core. Dense layers run their own
    /// parallel loops, which are not run concurrently (streamed ones also share one conversion
    /// scratch).
    private func applyAll(_ outputs: [(linear: any LinearOperator, y: UnsafeMutablePointer<Float>)],
                          to x: UnsafePointer<Float>, tokens: Int) {
        let decoding = tokens <= Self.concurrentLinearTokens && tokens <= AQLMLinear.decodeTokenLimit
        let lookups = outputs.compactMap { output in
            (output.linear as? AQLMLinear).flatMap { $0.decodesWithLookupTables ? ($0, output.y) : nil }
        }
        if decoding && lookups.count == outputs.count {
            AQLMLinear.applyLookupTablesTogether(lookups, to: x, tokens: tokens)
        } else if decoding && Threads.count > 1 && !outputs.contains(where: { $0.linear is DenseLinear || $0.linear is StreamedLinear }) {
            parallelFor(outputs.count) { outputs[$0].linear.apply(x, outputs[$0].y, tokens: tokens) }
        } else {
            for (linear, y) in outputs { linear.apply(x, y, tokens: tokens) }
        }
    }

    /// logits = head(RMSNorm(x)) for `tokens` rows; `normed` is scratch of the same size as x.
    func applyHead(_ x: UnsafePointer<Float>, tokens: Int, normed: UnsafeMutablePointer<Float>,
                   into logits: UnsafeMutablePointer<Float>) {
        finalNorm.withUnsafeBufferPointer {
            rmsNormRows(x, weight: $0.baseAddress!, into: normed, rows: tokens, count: config.hiddenSize,
                        epsilon: config.rmsNormEps)
        }
        head.apply(normed, logits, tokens: tokens)
    }
}
