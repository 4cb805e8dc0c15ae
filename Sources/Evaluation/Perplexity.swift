import Foundation
import Kernels
import Llama

public struct PerplexityOptions: Sendable {
    public var context: Int
    /// At most this many chunks (nil: as many as the text holds).
    public var maxChunks: Int?
    public var method: PerplexityProtocol
    /// Entries per position saved by `saveLogitsPath`.
    public var topK: Int
    /// Write the reference top-k log-probs of every scored position here.
    public var saveLogitsPath: String?
    /// Compare against reference log-probs saved earlier: KL divergence and top-1 agreement.
    public var klBasePath: String?

    public init(context: Int = 512, maxChunks: Int? = nil, method: PerplexityProtocol = .llama, topK: Int = 32,
                saveLogitsPath: String? = nil, klBasePath: String? = nil) {
        self.context = context
        self.maxChunks = maxChunks
        self.method = method
        self.topK = topK
        self.saveLogitsPath = saveLogitsPath
        self.klBasePath = klBasePath
    }
}

/// Reported after each chunk.
public struct PerplexityProgress: Sendable {
    public let chunk: Int          // 1-based
    public let chunks: Int
    public let runningPPL: Double
    public let elapsedSeconds: Double
}

public struct PerplexityResult: Codable, Sendable {
    public var ppl: Double
    /// llama.cpp's uncertainty: ppl · sqrt(Var(nll) / (n - 1)).
    public var pplStderr: Double
    public var meanNLL: Double
    public var chunks: Int
    public var ctx: Int
    public var scoredTokens: Int
    public var wallSeconds: Double
    /// Tokens run through the model (chunks · ctx) per second of evaluation.
    public var tokensPerSecond: Double
    /// Mean KL(base ‖ this model) per scored position and its standard error (with --kl-base).
    public var kldMean: Double?
    public var kldStderr: Double?
    /// Fraction of positions whose most likely token is the base's (with --kl-base).
    public var top1Agreement: Double?

    enum CodingKeys: String, CodingKey {
        case ppl, pplStderr = "ppl_stderr", meanNLL = "mean_nll", chunks, ctx, scoredTokens = "scored_tokens"
        case wallSeconds = "wall_seconds", tokensPerSecond = "tokens_per_second"
        case kldMean = "kld_mean", kldStderr = "kld_stderr", top1Agreement = "top1_agreement"
    }
}

/// Checks the arguments against the model and text before any work (each failure one line).
public func validatePerplexityInputs(tokenCount: Int, textName: String, options: PerplexityOptions,
                                     modelContext: Int, vocabSize: Int) throws {
    if tokenCount == 0 { throw EvaluationError.emptyText(textName) }
    if options.context < 2 { throw EvaluationError.contextTooSmall(options.context) }
    if options.context > modelContext { throw EvaluationError.contextTooLarge(options.context, modelContext: modelContext) }
    if tokenCount < options.context {
        throw EvaluationError.textTooShort(textName, tokens: tokenCount, context: options.context)
    }
    if let n = options.maxChunks, n < 1 { throw EvaluationError.invalidArgument("--chunks \(n): must be at least 1") }
    if options.topK < 1 || options.topK > vocabSize {
        throw EvaluationError.invalidArgument("--top-k \(options.topK): must be in 1...\(vocabSize)")
    }
}

/// Perplexity of `model` on `tokens` under `options.method` (see PerplexityProtocol), with
/// optional saving of reference top-k log-probs and KL divergence against saved ones.
/// `bos` is written over each chunk's first token (llama protocol) when the vocabulary adds
/// BOS; pass nil otherwise.
public func evaluatePerplexity(model: LlamaModel, tokens: [Int], bos: Int?, textName: String,
                               options: PerplexityOptions,
                               progress: ((PerplexityProgress) -> Void)? = nil) throws -> PerplexityResult {
    let vocab = model.config.vocabSize
    try validatePerplexityInputs(tokenCount: tokens.count, textName: textName, options: options,
                                 modelContext: model.config.contextLength, vocabSize: vocab)
    if let bad = tokens.first(where: { $0 < 0 || $0 >= vocab }) {
        throw EvaluationError.invalidArgument("\(textName): token id \(bad) outside the model's vocabulary of \(vocab)")
    }
    let plan = ChunkPlan(tokenCount: tokens.count, context: options.context, maxChunks: options.maxChunks,
                         method: options.method)
    let evaluated = tokens[0..<(plan.chunks * plan.context)]
    let fingerprint = tokenFingerprint(evaluated)
    let base: TopKLogProbs? = try options.klBasePath.map { path in
        let b = try TopKLogProbs.read(path: path)
        try b.checkMatches(plan: plan, vocabSize: vocab, tokenFingerprint: fingerprint, path: path)
        return b
    }
    var saved = options.saveLogitsPath.map { _ in
        TopKLogProbs(method: plan.method, context: plan.context, chunks: plan.chunks, vocabSize: vocab,
                     k: options.topK, positionsPerChunk: plan.scoredPositions.count, tokenFingerprint: fingerprint)
    }

    let scored = plan.scoredPositions
    let state = model.makeState(maxPositions: plan.context, maxBatch: min(plan.context, 512), maxLogitRows: scored.count)
    var scorer = ChunkScorer(rows: scored.count, vocabSize: vocab, topK: saved == nil ? 0 : options.topK)
    var sumNLL = 0.0, sumNLL2 = 0.0, count = 0
    var sumKL = 0.0, sumKL2 = 0.0, sameTop = 0
    let clock = ContinuousClock(), started = clock.now

    for chunk in 0..<plan.chunks {
        Threads.adjustToLoad()
        let range = plan.tokenRange(chunk: chunk)
        model.forward(plan.input(chunk: chunk, of: tokens, bos: bos), startPosition: 0, state: state,
                      logits: .range(scored))
        let targets = scored.map { tokens[range.lowerBound + $0 + 1] }   // position r predicts token r + 1
        let basePosition = chunk * scored.count
        scorer.score(state: state, targets: targets, base: base, basePosition: basePosition)
        for position in scorer.scores {
            sumNLL += position.nll
            sumNLL2 += position.nll * position.nll
            if base != nil {
                sumKL += position.kl
                sumKL2 += position.kl * position.kl
                sameTop += position.sameTop ? 1 : 0
            }
            saved?.append(top: position.top, tailLogMass: position.tail)
        }
        count += scored.count
        progress?(PerplexityProgress(chunk: chunk + 1, chunks: plan.chunks, runningPPL: Foundation.exp(sumNLL / Double(count)),
                                     elapsedSeconds: seconds(clock.now - started)))
    }
    let wall = seconds(clock.now - started)
    if let saved, let path = options.saveLogitsPath { try saved.write(to: path) }

    let (meanNLL, nllError) = meanAndStandardError(sum: sumNLL, sumOfSquares: sumNLL2, count: count)
    let ppl = Foundation.exp(meanNLL)
    var result = PerplexityResult(ppl: ppl, pplStderr: ppl * nllError, meanNLL: meanNLL, chunks: plan.chunks,
                                  ctx: plan.context, scoredTokens: count, wallSeconds: wall,
                                  tokensPerSecond: Double(plan.chunks * plan.context) / wall)
    if base != nil {
        let (kl, klError) = meanAndStandardError(sum: sumKL, sumOfSquares: sumKL2, count: count)
        result.kldMean = kl
        result.kldStderr = klError
        result.top1Agreement = Double(sameTop) / Double(count)
    }
    return result
}

/// Mean and the standard error of the mean, sqrt((E[x²] - E[x]²) / (n - 1)), as llama.cpp.
func meanAndStandardError(sum: Double, sumOfSquares: Double, count: Int) -> (Double, Double) {
    guard count > 0 else { return (0, 0) }
    let mean = sum / Double(count)
    let variance = sumOfSquares / Double(count) - mean * mean
    let error = variance > 0 && count > 1 ? (variance / Double(count - 1)).squareRoot() : 0
    return (mean, error)
}

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}

/// What one scored position contributes.
struct PositionScore {
    var nll = 0.0
    /// KL(base ‖ model) and whether both pick the same most likely token (with a base).
    var kl = 0.0
    var sameTop = false
    /// This model's top k (id, log-prob) and the log of the remaining mass (when saving).
    var top: [(index: Int, value: Float)] = []
    var tail: Float = 0
}

/// Scores the rows of one chunk in parallel; each row's result lands in its own slot, so the
/// sums taken afterwards in row order are the same whatever the thread count.
struct ChunkScorer {
    let vocabSize: Int
    /// Entries to keep per row for a saved reference (0: not saving).
    let topK: Int
    private(set) var scores: [PositionScore]

    init(rows: Int, vocabSize: Int, topK: Int) {
        self.vocabSize = vocabSize
        self.topK = topK
        scores = Array(repeating: PositionScore(), count: rows)
    }

    /// Row r of the state's logits predicts targets[r]; `base` rows start at basePosition.
    mutating func score(state: LlamaState, targets: [Int], base: TopKLogProbs?, basePosition: Int) {
        let vocab = vocabSize, k = topK
        scores.withUnsafeMutableBufferPointer { scores in
            parallelChunks(scores.count) { lo, hi in
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: vocab)
                defer { scratch.deallocate() }
                for r in lo..<hi {
                    let logits = state.logits(row: r)
                    let normaliser = logSumExp(logits.baseAddress!, count: vocab)
                    var score = PositionScore(nll: Double(normaliser - logits[targets[r]]))
                    if k > 0 {
                        let best = topKEntries(logits, k: k)
                        score.top = best.map { ($0.index, $0.value - normaliser) }
                        score.tail = tailLogMass(logits, excluding: best.map(\.index), logSumExp: normaliser, scratch: scratch)
                    }
                    if let base {
                        score.kl = klDivergence(base: base, position: basePosition + r, logits: logits,
                                                logSumExp: normaliser, scratch: scratch)
                        score.sameTop = argmax(logits.baseAddress!, count: vocab) == Int(base.ids[(basePosition + r) * base.k])
                    }
                    scores[r] = score
                }
            }
        }
    }
}

/// KL(P ‖ Q) = Σ_i p_i (log p_i - log q_i) with P the saved base distribution and Q this
/// model's softmax(logits), evaluated on the base's top k tokens plus one bucket holding all
/// other tokens: Σ_{i ∈ top k} p_i (log p_i - log q_i) + P_tail (log P_tail - log Q_tail).
/// Merging tokens into a bucket can only lose information, so (log-sum inequality) this is a
/// lower bound on the full KL; the gap is the KL within the tail, weighted by P_tail, which
/// is small when the base's top 32 hold almost all of its mass. llama.cpp instead stores
/// every token's log-prob quantised to 16 bits over the 16 nats below the maximum and drops
/// tokens below e^-16 from the sum; both agree to the extent the tail is negligible.
func klDivergence(base: TopKLogProbs, position p: Int, logits: UnsafeBufferPointer<Float>, logSumExp normaliser: Float,
                  scratch: UnsafeMutablePointer<Float>) -> Double {
    let k = base.k
    var ids = [Int](repeating: 0, count: k)
    var kl = 0.0
    for j in 0..<k {
        let id = Int(base.ids[p * k + j])
        ids[j] = id
        let logP = Double(base.logProbs[p * k + j])
        let logQ = Double(logits[id] - normaliser)
        kl += Foundation.exp(logP) * (logP - logQ)
    }
    let tailP = Double(base.tailLogMass[p])
    if tailP > -.infinity {
        let tailQ = Double(tailLogMass(logits, excluding: ids, logSumExp: normaliser, scratch: scratch))
        kl += Foundation.exp(tailP) * (tailP - tailQ)
    }
    return kl
}
