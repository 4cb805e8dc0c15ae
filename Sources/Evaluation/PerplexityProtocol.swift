/// How a token stream is cut into chunks and which predictions are scored.
///
/// - `llama`: llama.cpp's `perplexity` tool. Chunk i is tokens [i·ctx, (i+1)·ctx); if the
///   vocabulary adds BOS, BOS overwrites the chunk's first token; only the second half is
///   scored: logits at positions first = ctx/2 ..< ctx-1 predict tokens first+1 ..< ctx, i.e.
///   ctx - 1 - ctx/2 predictions per chunk (255 at ctx 512), each with at least ctx/2 tokens of
///   context.
/// - `gptq`: the GPTQ/AQLM papers' evaluation: the same non-overlapping windows, nothing
///   written into them, every next-token prediction scored: positions 0 ..< ctx-1 predict
///   tokens 1 ..< ctx (ctx - 1 per chunk). Their exp(Σ loss·ctx / (n·ctx)) equals exp(mean NLL)
///   because every window scores the same number of tokens.
public enum PerplexityProtocol: String, Sendable, CaseIterable, Codable {
    case llama
    case gptq

    /// The positions within a chunk whose logits are scored (position r predicts token r+1).
    public func scoredPositions(context: Int) -> Range<Int> {
        switch self {
        case .llama: return (context / 2)..<(context - 1)
        case .gptq: return 0..<(context - 1)
        }
    }

    /// Whether BOS replaces each chunk's first token (when the vocabulary adds BOS at all).
    public var overwritesFirstTokenWithBOS: Bool { self == .llama }
}

/// The chunks a perplexity run evaluates: `chunks` windows of `context` tokens from the start
/// of the stream (llama.cpp: n_chunk = min(--chunks, tokens / ctx); the remainder is unused).
public struct ChunkPlan: Sendable, Equatable {
    public let context: Int
    public let chunks: Int
    public let method: PerplexityProtocol

    public init(tokenCount: Int, context: Int, maxChunks: Int?, method: PerplexityProtocol) {
        self.context = context
        self.method = method
        let available = context > 0 ? tokenCount / context : 0
        self.chunks = min(maxChunks ?? available, available)
    }

    public func tokenRange(chunk i: Int) -> Range<Int> { (i * context)..<((i + 1) * context) }
    public var scoredPositions: Range<Int> { method.scoredPositions(context: context) }
    public var scoredTokens: Int { chunks * scoredPositions.count }

    /// The input of chunk i as the model sees it (BOS written over the first token if asked).
    public func input(chunk i: Int, of tokens: [Int], bos: Int?) -> [Int] {
        var chunk = Array(tokens[tokenRange(chunk: i)])
        if let bos, method.overwritesFirstTokenWithBOS { chunk[0] = bos }
        return chunk
    }
}
