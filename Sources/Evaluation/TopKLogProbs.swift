import Foundation

/// Reference log-probabilities saved by `aqlm perplexity --save-logits` and read back by
/// `--kl-base`: for every scored position, the base model's k most likely next tokens with
/// their log-probabilities, plus the log of the probability mass of all other tokens (the
/// "tail"), so that KL(base ‖ model) can be computed later without the full distribution.
///
/// File layout (little-endian):
///   "AQLMTOPK", UInt32 version (1), UInt32 protocol (0 llama, 1 gptq), UInt32 ctx,
///   UInt32 chunks, UInt32 vocab, UInt32 k, UInt32 positions per chunk, UInt32 0,
///   UInt64 token fingerprint (FNV-1a of the evaluated chunks' token ids),
///   then per position: k × Int32 ids, k × Float32 log-probs (most likely first),
///   Float32 tail log-mass.
/// 8k + 4 bytes per position: 260 at k = 32 (6.6 MB for 100 chunks of 512 under llama).
public struct TopKLogProbs: Equatable, Sendable {
    public static let magic = Array("AQLMTOPK".utf8)
    public static let version: UInt32 = 1
    static let headerSize = 8 + 8 * 4 + 8

    public var method: PerplexityProtocol
    public var context: Int
    public var chunks: Int
    public var vocabSize: Int
    public var k: Int
    public var positionsPerChunk: Int
    public var tokenFingerprint: UInt64
    /// [positions × k] token ids and their log-probabilities, most likely first.
    public var ids: [Int32] = []
    public var logProbs: [Float] = []
    /// [positions] log Σ of the probabilities of every token not in the row's top k.
    public var tailLogMass: [Float] = []

    public init(method: PerplexityProtocol, context: Int, chunks: Int, vocabSize: Int, k: Int,
                positionsPerChunk: Int, tokenFingerprint: UInt64) {
        self.method = method
        self.context = context
        self.chunks = chunks
        self.vocabSize = vocabSize
        self.k = k
        self.positionsPerChunk = positionsPerChunk
        self.tokenFingerprint = tokenFingerprint
    }

    public var positionCount: Int { tailLogMass.count }

    /// Appends one position: `top` must hold exactly k (id, log-prob) pairs, most likely first.
    public mutating func append(top: [(index: Int, value: Float)], tailLogMass tail: Float) {
        precondition(top.count == k, "a row needs exactly k = \(k) entries")
        for entry in top {
            ids.append(Int32(entry.index))
            logProbs.append(entry.value)
        }
        tailLogMass.append(tail)
    }

    public func write(to path: String) throws {
        var data = Data(capacity: Self.headerSize + positionCount * (8 * k + 4))
        data.append(contentsOf: Self.magic)
        for field in [Self.version, method == .llama ? 0 : 1, UInt32(context), UInt32(chunks), UInt32(vocabSize),
                      UInt32(k), UInt32(positionsPerChunk), 0] {
            appendLittleEndian(field, to: &data)
        }
        appendLittleEndian(tokenFingerprint, to: &data)
        for p in 0..<positionCount {
            for j in 0..<k { appendLittleEndian(UInt32(bitPattern: ids[p * k + j]), to: &data) }
            for j in 0..<k { appendLittleEndian(logProbs[p * k + j].bitPattern, to: &data) }
            appendLittleEndian(tailLogMass[p].bitPattern, to: &data)
        }
        do {
            try data.write(to: URL(fileURLWithPath: path))
        } catch {
            throw EvaluationError.unreadable(path, reason: "cannot write: \(error.localizedDescription)")
        }
    }

    public static func read(path: String) throws -> TopKLogProbs {
        guard FileManager.default.fileExists(atPath: path) else { throw EvaluationError.missingFile(path) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EvaluationError.unreadable(path, reason: "permission denied or not a file")
        }
        let bytes = [UInt8](data)
        guard bytes.count >= headerSize, Array(bytes[0..<8]) == magic else {
            throw EvaluationError.badLogitsFile(path, detail: "missing AQLMTOPK header")
        }
        var reader = LittleEndianReader(bytes: bytes, offset: 8)
        let version = reader.uint32()
        guard version == Self.version else {
            throw EvaluationError.badLogitsFile(path, detail: "version \(version), expected \(Self.version)")
        }
        let methodCode = reader.uint32()
        guard methodCode <= 1 else { throw EvaluationError.badLogitsFile(path, detail: "unknown protocol code \(methodCode)") }
        let context = Int(reader.uint32()), chunks = Int(reader.uint32()), vocab = Int(reader.uint32())
        let k = Int(reader.uint32()), perChunk = Int(reader.uint32())
        _ = reader.uint32()
        var result = TopKLogProbs(method: methodCode == 0 ? .llama : .gptq, context: context, chunks: chunks,
                                  vocabSize: vocab, k: k, positionsPerChunk: perChunk, tokenFingerprint: reader.uint64())
        let positions = chunks * perChunk
        guard k > 0, bytes.count == headerSize + positions * (8 * k + 4) else {
            throw EvaluationError.badLogitsFile(path, detail: "size \(bytes.count) bytes does not match \(positions) positions of k = \(k)")
        }
        result.ids.reserveCapacity(positions * k)
        result.logProbs.reserveCapacity(positions * k)
        result.tailLogMass.reserveCapacity(positions)
        for _ in 0..<positions {
            for _ in 0..<k {
                let id = Int32(bitPattern: reader.uint32())
                guard id >= 0 && Int(id) < vocab else {
                    throw EvaluationError.badLogitsFile(path, detail: "token id \(id) outside the vocabulary of \(vocab)")
                }
                result.ids.append(id)
            }
            for _ in 0..<k { result.logProbs.append(Float(bitPattern: reader.uint32())) }
            result.tailLogMass.append(Float(bitPattern: reader.uint32()))
        }
        return result
    }

    /// Refuses a base saved from a different evaluation than `plan` over `fingerprint`.
    public func checkMatches(plan: ChunkPlan, vocabSize: Int, tokenFingerprint fingerprint: UInt64, path: String) throws {
        func mismatch(_ what: String, _ saved: Any, _ now: Any) -> EvaluationError {
            .logitsMismatch(path, detail: "saved with \(what) \(saved), this run uses \(now)")
        }
        if method != plan.method { throw mismatch("--protocol", method.rawValue, plan.method.rawValue) }
        if context != plan.context { throw mismatch("--ctx", context, plan.context) }
        if chunks != plan.chunks { throw mismatch("chunks", chunks, plan.chunks) }
        if self.vocabSize != vocabSize { throw mismatch("a vocabulary of", self.vocabSize, vocabSize) }
        if tokenFingerprint != fingerprint {
            throw EvaluationError.logitsMismatch(path, detail: "saved from different tokens (the text or tokenizer differs)")
        }
    }
}

/// FNV-1a (64-bit) over the token ids, each as 4 little-endian bytes.
public func tokenFingerprint<C: Collection>(_ tokens: C) -> UInt64 where C.Element == Int {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for token in tokens {
        var v = UInt32(truncatingIfNeeded: token)
        for _ in 0..<4 {
            hash = (hash ^ UInt64(v & 0xFF)) &* 0x0000_0100_0000_01b3
            v >>= 8
        }
    }
    return hash
}

private func appendLittleEndian<T: FixedWidthInteger>(_ value: T, to data: inout Data) {
    withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) }
}

private struct LittleEndianReader {
    let bytes: [UInt8]
    var offset: Int

    mutating func uint32() -> UInt32 {
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
        offset += 4
        return v
    }

    mutating func uint64() -> UInt64 {
        let lo = UInt64(uint32()), hi = UInt64(uint32())
        return lo | hi << 32
    }
}
