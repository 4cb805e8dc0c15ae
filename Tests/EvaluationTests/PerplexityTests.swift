import Checkpoint
import Evaluation
import Foundation
import Kernels
import Llama
import XCTest

/// Perplexity, its two protocols and the KL machinery on a tiny random model, checked against
/// log-softmax computed here from the model's full logits.
final class PerplexityTests: XCTestCase {
    static let model = try! LlamaModel(weights: TinyModel.weights(seed: 31))
    static let other = try! LlamaModel(weights: TinyModel.weights(seed: 32))
    static let tokens: [Int] = {
        var random = SeededRandom(seed: 33)
        return (0..<45).map { _ in Int(random.next() % UInt64(TinyModel.config.vocabSize)) }
    }()
    var vocab: Int { TinyModel.config.vocabSize }

    func temporaryPath(_ name: String) -> String {
        let path = NSTemporaryDirectory() + "aqlm-eval-\(ProcessInfo.processInfo.processIdentifier)-\(name)"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    // MARK: Which positions are scored, worked out by hand

    func testProtocolPositionsByHand() {
        // ctx 8, llama: first = 8/2 = 4; logits at 4, 5, 6 predict tokens 5, 6, 7 (8 - 1 - 4 = 3).
        XCTAssertEqual(PerplexityProtocol.llama.scoredPositions(context: 8), 4..<7)
        // ctx 512: 256..<511, the 255 per chunk behind llama.cpp's 25,500 for 100 chunks.
        XCTAssertEqual(PerplexityProtocol.llama.scoredPositions(context: 512).count, 255)
        XCTAssertEqual(PerplexityProtocol.llama.scoredPositions(context: 7), 3..<6)
        // gptq: every position but the last predicts its successor.
        XCTAssertEqual(PerplexityProtocol.gptq.scoredPositions(context: 8), 0..<7)

        let plan = ChunkPlan(tokenCount: 20, context: 8, maxChunks: nil, method: .llama)
        XCTAssertEqual(plan.chunks, 2, "20 / 8 = 2 whole chunks; the 4 left over are unused")
        XCTAssertEqual(plan.tokenRange(chunk: 1), 8..<16)
        XCTAssertEqual(plan.scoredTokens, 6)
        XCTAssertEqual(ChunkPlan(tokenCount: 20, context: 8, maxChunks: 1, method: .gptq).chunks, 1)
        XCTAssertEqual(ChunkPlan(tokenCount: 20, context: 8, maxChunks: 9, method: .gptq).scoredTokens, 14)

        let stream = Array(100..<120)
        XCTAssertEqual(plan.input(chunk: 1, of: stream, bos: 1), [1, 109, 110, 111, 112, 113, 114, 115])
        XCTAssertEqual(plan.input(chunk: 1, of: stream, bos: nil), Array(108..<116))
        let gptq = ChunkPlan(tokenCount: 20, context: 8, maxChunks: nil, method: .gptq)
        XCTAssertEqual(gptq.input(chunk: 0, of: stream, bos: 1), Array(100..<108), "gptq writes nothing into windows")
    }

    /// -log p(target) for each scored position, from full logits computed here.
    func expectedNLLs(method: PerplexityProtocol, context: Int, chunks: Int, bos: Int?) -> [Double] {
        let model = Self.model
        var nlls: [Double] = []
        let state = model.makeState(maxPositions: context, maxLogitRows: context)
        for chunk in 0..<chunks {
            var input = Array(Self.tokens[(chunk * context)..<((chunk + 1) * context)])
            if let bos, method == .llama { input[0] = bos }
            model.forward(input, startPosition: 0, state: state, logits: .all)
            let first = method == .llama ? context / 2 : 0
            for position in first..<(context - 1) {
                let row = state.logits(row: position).map(Double.init)
                let m = row.max()!
                let logZ = m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
                nlls.append(logZ - row[Self.tokens[chunk * context + position + 1]])
            }
        }
        return nlls
    }

    func testPerplexityScoresExactlyTheProtocolsPositions() throws {
        for (method, bos) in [(PerplexityProtocol.llama, nil), (.llama, 266), (.gptq, nil), (.gptq, 266)] as [(PerplexityProtocol, Int?)] {
            let result = try evaluatePerplexity(model: Self.model, tokens: Self.tokens, bos: bos, textName: "tokens",
                                                options: PerplexityOptions(context: 8, maxChunks: 4, method: method))
            let nlls = expectedNLLs(method: method, context: 8, chunks: 4, bos: bos)
            XCTAssertEqual(result.scoredTokens, nlls.count)
            XCTAssertEqual(result.scoredTokens, method == .llama ? 4 * 3 : 4 * 7)
            let mean = nlls.reduce(0, +) / Double(nlls.count)
            XCTAssertEqual(result.meanNLL, mean, accuracy: 1e-5)
            XCTAssertEqual(result.ppl, Foundation.exp(mean), accuracy: 1e-4 * Foundation.exp(mean))
            // llama.cpp's uncertainty: ppl · sqrt((mean of squares - square of mean) / (n - 1)).
            let variance = nlls.reduce(0) { $0 + $1 * $1 } / Double(nlls.count) - mean * mean
            XCTAssertEqual(result.pplStderr, result.ppl * (variance / Double(nlls.count - 1)).squareRoot(), accuracy: 1e-4)
            XCTAssertEqual(result.chunks, 4)
            XCTAssertNil(result.kldMean)
        }
    }

    // MARK: KL divergence against saved top-k log-probs

    func testModelAgainstItselfHasZeroKLAndFullAgreement() throws {
        let path = temporaryPath("self.topk")
        let options = PerplexityOptions(context: 10, method: .llama, topK: 8, saveLogitsPath: path)
        let saved = try evaluatePerplexity(model: Self.model, tokens: Self.tokens, bos: nil, textName: "t", options: options)
        var compare = options
        compare.saveLogitsPath = nil
        compare.klBasePath = path
        let result = try evaluatePerplexity(model: Self.model, tokens: Self.tokens, bos: nil, textName: "t", options: compare)
        XCTAssertEqual(result.ppl, saved.ppl)
        XCTAssertEqual(try XCTUnwrap(result.kldMean), 0, accuracy: 1e-6)
        XCTAssertEqual(result.top1Agreement, 1)
    }

    /// With k = the whole vocabulary the bucketed KL is the exact KL; with a small k it is a
    /// lower bound (merging outcomes cannot increase a KL divergence).
    func testBucketedKLIsExactWithTheWholeVocabularyAndALowerBoundOtherwise() throws {
        let context = 9, chunks = 5
        var exact: [Double] = []
        var agree = 0
        let base = Self.model.makeState(maxPositions: context, maxLogitRows: context)
        let test = Self.other.makeState(maxPositions: context, maxLogitRows: context)
        for chunk in 0..<chunks {
            let input = Array(Self.tokens[(chunk * context)..<((chunk + 1) * context)])
            Self.model.forward(input, startPosition: 0, state: base, logits: .all)
            Self.other.forward(input, startPosition: 0, state: test, logits: .all)
            for position in PerplexityProtocol.llama.scoredPositions(context: context) {
                let p = logSoftmax(base.logits(row: position)), q = logSoftmax(test.logits(row: position))
                exact.append(zip(p, q).reduce(0) { $0 + Foundation.exp($1.0) * ($1.0 - $1.1) })
                agree += argmax(Array(base.logits(row: position)), count: vocab) == argmax(Array(test.logits(row: position)), count: vocab) ? 1 : 0
            }
        }
        let exactMean = exact.reduce(0, +) / Double(exact.count)
        XCTAssertGreaterThan(exactMean, 0.01, "the two random models should disagree")

        func bucketed(k: Int) throws -> PerplexityResult {
            let path = temporaryPath("base-\(k).topk")
            var options = PerplexityOptions(context: context, method: .llama, topK: k, saveLogitsPath: path)
            _ = try evaluatePerplexity(model: Self.model, tokens: Self.tokens, bos: nil, textName: "t", options: options)
            options.saveLogitsPath = nil
            options.klBasePath = path
            return try evaluatePerplexity(model: Self.other, tokens: Self.tokens, bos: nil, textName: "t", options: options)
        }
        let full = try bucketed(k: vocab)
        XCTAssertEqual(try XCTUnwrap(full.kldMean), exactMean, accuracy: 1e-4 * exactMean)
        XCTAssertEqual(try XCTUnwrap(full.top1Agreement), Double(agree) / Double(exact.count), accuracy: 1e-12)
        let small = try bucketed(k: 4)
        XCTAssertLessThanOrEqual(try XCTUnwrap(small.kldMean), exactMean * (1 + 1e-5))
        XCTAssertGreaterThan(try XCTUnwrap(small.kldMean), 0)
        XCTAssertEqual(small.top1Agreement, full.top1Agreement)
    }

    func logSoftmax(_ row: UnsafeBufferPointer<Float>) -> [Double] {
        let x = row.map(Double.init), m = x.max()!
        let logZ = m + Foundation.log(x.reduce(0) { $0 + Foundation.exp($1 - m) })
        return x.map { $0 - logZ }
    }

    func testSavedLogProbsRoundTrip() throws {
        let path = temporaryPath("roundtrip.topk")
        _ = try evaluatePerplexity(model: Self.model, tokens: Self.tokens, bos: nil, textName: "t",
                                   options: PerplexityOptions(context: 8, maxChunks: 3, method: .gptq, topK: 5, saveLogitsPath: path))
        let loaded = try TopKLogProbs.read(path: path)
        XCTAssertEqual(loaded.method, .gptq)
        XCTAssertEqual(loaded.context, 8)
        XCTAssertEqual(loaded.chunks, 3)
        XCTAssertEqual(loaded.k, 5)
        XCTAssertEqual(loaded.vocabSize, vocab)
        XCTAssertEqual(loaded.positionCount, 3 * 7)
        XCTAssertEqual(loaded.tokenFingerprint, tokenFingerprint(Self.tokens[0..<24]))
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int
        XCTAssertEqual(size, 48 + 21 * (8 * 5 + 4))
        for p in 0..<loaded.positionCount {
            let row = Array(loaded.logProbs[(p * 5)..<((p + 1) * 5)])
            XCTAssertEqual(row, row.sorted(by: >), "most likely first")
            // The top 5 and the tail hold all the probability.
            let mass = row.reduce(0.0) { $0 + Foundation.exp(Double($1)) } + Foundation.exp(Double(loaded.tailLogMass[p]))
            XCTAssertEqual(mass, 1, accuracy: 1e-5)
        }
        let copy = temporaryPath("copy.topk")
        try loaded.write(to: copy)
        XCTAssertEqual(try TopKLogProbs.read(path: copy), loaded)
        XCTAssertEqual(FileManager.default.contents(atPath: copy), FileManager.default.contents(atPath: path))
    }

    func testBaseFromADifferentRunIsRefused() throws {
        let path = temporaryPath("refuse.topk")
        let options = PerplexityOptions(context: 8, maxChunks: 3, method: .llama, topK: 4, saveLogitsPath: path)
        _ = try evaluatePerplexity(model: Self.model, tokens: Self.tokens, bos: nil, textName: "t", options: options)
        func compare(_ tokens: [Int], context: Int = 8, chunks: Int = 3, method: PerplexityProtocol = .llama) -> String {
            let o = PerplexityOptions(context: context, maxChunks: chunks, method: method, klBasePath: path)
            do {
                _ = try evaluatePerplexity(model: Self.model, tokens: tokens, bos: nil, textName: "t", options: o)
                return "accepted"
            } catch let error as EvaluationError {
                guard case .logitsMismatch = error else { return "wrong error: \(error)" }
                return error.description
            } catch {
                return "wrong error: \(error)"
            }
        }
        XCTAssertEqual(compare(Self.tokens, context: 6), "\(path): saved with --ctx 8, this run uses 6")
        XCTAssertEqual(compare(Self.tokens, chunks: 2), "\(path): saved with chunks 3, this run uses 2")
        XCTAssertEqual(compare(Self.tokens, method: .gptq), "\(path): saved with --protocol llama, this run uses gptq")
        var changed = Self.tokens
        changed[17] = (changed[17] + 1) % vocab
        XCTAssertEqual(compare(changed), "\(path): saved from different tokens (the text or tokenizer differs)")
        // Tokens past the evaluated chunks do not matter.
        changed = Self.tokens
        changed[30] = (changed[30] + 1) % vocab
        XCTAssertEqual(compare(changed), "accepted")
    }

    func testUnusableLogProbFilesAreRefused() throws {
        XCTAssertThrowsError(try TopKLogProbs.read(path: "/nonexistent/base.topk")) {
            XCTAssertEqual($0 as? EvaluationError, .missingFile("/nonexistent/base.topk"))
        }
        let garbage = temporaryPath("garbage.topk")
        _ = FileManager.default.createFile(atPath: garbage, contents: Data("not a log-prob file at all, clearly not".utf8))
        XCTAssertThrowsError(try TopKLogProbs.read(path: garbage)) {
            XCTAssertEqual(($0 as? EvaluationError)?.description, "\(garbage): not a usable top-k log-prob file: missing AQLMTOPK header")
        }
        let good = temporaryPath("good.topk")
        _ = try evaluatePerplexity(model: Self.model, tokens: Self.tokens, bos: nil, textName: "t",
                                   options: PerplexityOptions(context: 8, maxChunks: 1, topK: 3, saveLogitsPath: good))
        let truncated = temporaryPath("truncated.topk")
        _ = FileManager.default.createFile(atPath: truncated, contents: FileManager.default.contents(atPath: good)!.dropLast(5))
        XCTAssertThrowsError(try TopKLogProbs.read(path: truncated)) {
            guard case .badLogitsFile = $0 as? EvaluationError else { return XCTFail("\($0)") }
        }
    }

    // MARK: Bad inputs, each one line

    func testBadInputsAreRefusedWithOneLine() {
        func error(_ tokens: [Int], _ options: PerplexityOptions) -> String? {
            do {
                _ = try evaluatePerplexity(model: Self.model, tokens: tokens, bos: nil, textName: "wiki.txt", options: options)
                return nil
            } catch {
                return "\(error)"
            }
        }
        XCTAssertEqual(error([], PerplexityOptions(context: 8)), "wiki.txt: the text is empty")
        XCTAssertEqual(error(Self.tokens, PerplexityOptions(context: 1)),
                       "--ctx 1: a context needs at least 2 tokens (one to read, one to predict)")
        XCTAssertEqual(error(Self.tokens, PerplexityOptions(context: 129)), "--ctx 129 exceeds the model's context length 128")
        XCTAssertEqual(error(Array(Self.tokens[0..<7]), PerplexityOptions(context: 8)),
                       "wiki.txt: tokenizes to 7 tokens, fewer than one chunk of --ctx 8")
        XCTAssertEqual(error(Self.tokens, PerplexityOptions(context: 8, maxChunks: 0)), "--chunks 0: must be at least 1")
        XCTAssertEqual(error([1, 2, 999, 4], PerplexityOptions(context: 2)),
                       "wiki.txt: token id 999 outside the model's vocabulary of \(vocab)")
        XCTAssertNotNil(error(Self.tokens, PerplexityOptions(context: 8, klBasePath: "/nonexistent/base.topk")))
    }

    func testTextFilesAreRefusedWithOneLine() throws {
        XCTAssertThrowsError(try readTextFile("/nonexistent/wiki.test.raw")) {
            XCTAssertEqual("\($0)", "/nonexistent/wiki.test.raw: no such file")
        }
        let empty = temporaryPath("empty.txt")
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        XCTAssertThrowsError(try readTextFile(empty)) { XCTAssertEqual("\($0)", "\(empty): the text is empty") }
        XCTAssertThrowsError(try readTextFile(NSTemporaryDirectory())) {
            XCTAssertEqual("\($0)", "\(NSTemporaryDirectory()): cannot read: is a directory")
        }
        let ids = temporaryPath("ids.txt")
        _ = FileManager.default.createFile(atPath: ids, contents: Data("12\n 7\r\n\n300\n".utf8))
        XCTAssertEqual(try readTokenIds(ids), [12, 7, 300])
        _ = FileManager.default.createFile(atPath: ids, contents: Data("12\nseven\n".utf8))
        XCTAssertThrowsError(try readTokenIds(ids)) {
            XCTAssertEqual("\($0)", "\(ids): cannot read: line 2 is not a token id: 'seven'")
        }
    }
}
