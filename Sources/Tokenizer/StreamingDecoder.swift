/// Turns a byte stream into text piece by piece without splitting a UTF-8 sequence: a sequence
/// cut at the end of what has arrived is held back until its remaining bytes come. What it emits,
/// joined, equals decoding all the bytes at once (a held sequence starts at a lead byte, where
/// any UTF-8 decoder starts afresh, so cutting there changes nothing).
public struct UTF8StreamDecoder: Sendable {
    private var pending: [UInt8] = []

    public init() {}

    /// The complete text that `bytes` finish; invalid bytes become U+FFFD.
    public mutating func append<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        pending.append(contentsOf: bytes)
        let cut = Self.completePrefixLength(pending)
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Whatever is still held, decoded as is (an unfinished sequence becomes U+FFFD).
    public mutating func finish() -> String {
        defer { pending = [] }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of `bytes` without a trailing lead byte whose sequence is not complete yet.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        var i = bytes.count
        // Step back over at most three continuation bytes (10xxxxxx) to a possible lead byte.
        while i > 0 && bytes.count - i < 3 && bytes[i - 1] & 0xC0 == 0x80 { i -= 1 }
        guard i > 0 else { return bytes.count }
        let lead = bytes[i - 1]
        let length: Int
        switch lead {
        case 0xC0..<0xE0: length = 2
        case 0xE0..<0xF0: length = 3
        case 0xF0..<0xF8: length = 4
        default: return bytes.count
        }
        return bytes.count - (i - 1) < length ? i - 1 : bytes.count
    }
}

/// Streaming detokenizer for generation: feed ids as they are sampled, print what comes back.
public struct StreamingDecoder: Sendable {
    public let tokenizer: BPETokenizer
    public let skipSpecial: Bool
    private var utf8 = UTF8StreamDecoder()

    public init(tokenizer: BPETokenizer, skipSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecial = skipSpecial
    }

    public mutating func append(_ id: Int) -> String {
        utf8.append(tokenizer.tokenBytes(id, skipSpecial: skipSpecial))
    }

    public mutating func finish() -> String {
        utf8.finish()
    }
}
