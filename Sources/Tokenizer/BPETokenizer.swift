import Checkpoint

/// Byte-level BPE tokenizer (GPT-2 style) reproducing llama.cpp's `llama_tokenize` for BPE
/// vocabularies: special-token partition, pre-tokenizer split, byte-level merges by rank.
/// Immutable after `init`, so one instance can serve any number of threads.
public final class BPETokenizer: Sendable {
    public let vocabSize: Int
    public let bosId: Int?
    public let eosId: Int?
    /// Whether `encode` puts BOS first when the caller does not say (GGUF `add_bos_token`).
    public let addsBOS: Bool
    public let preTokenizer: PreTokenizer
    /// Tokens that end generation: EOS and tokens with an end-of-turn text such as "<|im_end|>".
    public let endOfGenerationIds: Set<Int>

    private let kinds: [TokenKind]
    /// What each token decodes to.
    private let pieces: [[UInt8]]
    /// Tokens matched in input text before splitting, longest text first (llama.cpp's order).
    private let specialTokens: [(id: Int, text: [UInt8])]
    /// Symbol id of each byte value.
    private let byteSymbols: [Int32]
    private let merges: MergeTable
    /// Output for a merged symbol that is not a token (ids from `vocabSize` on).
    private let virtualSymbolTokens: [[Int32]]
    /// Raw bytes -> token where a word that is itself a token is emitted unmerged (llama.cpp's
    /// `ignore_merges`, set for the Llama-3 split).
    private let wholeWordTokens: [[UInt8]: Int32]?

    public init(spec: TokenizerSpec) throws {
        guard let named = PreTokenizer.named(spec.preTokenizer) else {
            throw TokenizerError.unsupportedPreTokenizer(spec.preTokenizer)
        }
        let (pre, ignoresMerges) = named
        let n = spec.tokens.count
        guard n > 0 else { throw TokenizerError.invalidVocabulary("no tokens") }
        guard !spec.merges.isEmpty else { throw TokenizerError.invalidVocabulary("no merges") }
        guard spec.tokenTypes.isEmpty || spec.tokenTypes.count >= n else {
            throw TokenizerError.invalidVocabulary("\(spec.tokenTypes.count) token types for \(n) tokens")
        }
        // llama.cpp names empty token texts so that they stay unique and unmatchable.
        let texts = spec.tokens.enumerated().map { $1.isEmpty ? "[EMPTY_\($0)]" : $1 }
        let textBytes = texts.map { Array($0.utf8) }
        let idForText = try Self.index(textBytes, texts)

        var kinds = spec.tokenTypes.isEmpty ? Array(repeating: TokenKind.normal, count: n)
                                            : spec.tokenTypes.prefix(n).map(TokenKind.init(ggufType:))
        var endOfGeneration = Set<Int>()
        for (id, text) in texts.enumerated() where TokenKind.endOfGenerationTexts.contains(text) {
            endOfGeneration.insert(id)
            kinds[id] = .control
        }
        let validId: (Int?) -> Int? = { id in id.flatMap { (0..<n).contains($0) ? $0 : nil } }
        if let eos = validId(spec.eosId) { endOfGeneration.insert(eos) }

        vocabSize = n
        bosId = validId(spec.bosId)
        eosId = validId(spec.eosId)
        addsBOS = spec.addBOS
        preTokenizer = pre
        endOfGenerationIds = endOfGeneration
        self.kinds = kinds
        pieces = zip(texts, kinds).map { Self.piece(text: $0, kind: $1) }
        specialTokens = (0..<n).filter { kinds[$0].isMatchedInText(parseSpecial: true) }
            .map { (id: $0, text: textBytes[$0]) }
            .sorted { ($0.text.count, -$0.id) > ($1.text.count, -$1.id) }

        var symbols = SymbolTable(tokens: idForText, vocabSize: n)
        byteSymbols = (0...255).map { symbols.id(for: ByteLevel.encodedUTF8(UInt8($0))) }
        merges = Self.mergeTable(spec.merges, symbols: &symbols)
        virtualSymbolTokens = symbols.virtualTexts.map { text in
            // llama.cpp looks each byte of an unknown symbol's text up as a one-byte token.
            text.compactMap { idForText[[$0]] }
        }
        wholeWordTokens = ignoresMerges ? Self.rawBytesIndex(texts) : nil
    }

    // MARK: Encoding

    public func encode(_ text: String, addBOS: Bool? = nil, parseSpecial: Bool = false) -> [Int] {
        encode(Array(text.utf8), addBOS: addBOS, parseSpecial: parseSpecial)
    }

    /// Token ids of `bytes` (any bytes: invalid UTF-8 is read as llama.cpp reads it).
    /// With `parseSpecial`, control-token texts such as "<|im_start|>" become those tokens;
    /// without, they are tokenized as plain text (llama-tokenize --no-parse-special).
    public func encode(_ bytes: [UInt8], addBOS: Bool? = nil, parseSpecial: Bool = false) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(bytes.count / 3)
        if addBOS ?? addsBOS, let bos = bosId { out.append(bos) }
        var cache: [ArraySlice<UInt8>: [Int32]] = [:]
        for fragment in fragments(of: bytes, parseSpecial: parseSpecial) {
            switch fragment {
            case .token(let id): out.append(id)
            case .text(let range): appendTokens(ofText: bytes[range], to: &out, cache: &cache)
            }
        }
        return out
    }

    private enum Fragment {
        case text(Range<Int>)
        case token(Int)
    }

    /// llama.cpp's `tokenizer_st_partition`: each special token in turn, longest first, is cut
    /// out of every text fragment left by the previous ones, leftmost occurrence first.
    private func fragments(of bytes: [UInt8], parseSpecial: Bool) -> [Fragment] {
        var fragments: [Fragment] = bytes.isEmpty ? [] : [.text(0..<bytes.count)]
        for special in specialTokens where kinds[special.id].isMatchedInText(parseSpecial: parseSpecial) {
            var split: [Fragment] = []
            for fragment in fragments {
                guard case .text(var rest) = fragment else { split.append(fragment); continue }
                while let at = Self.firstOccurrence(of: special.text, in: bytes, within: rest) {
                    if at > rest.lowerBound { split.append(.text(rest.lowerBound..<at)) }
                    split.append(.token(special.id))
                    rest = (at + special.text.count)..<rest.upperBound
                }
                if !rest.isEmpty { split.append(.text(rest)) }
            }
            fragments = split
        }
        return fragments
    }

    private static func firstOccurrence(of needle: [UInt8], in bytes: [UInt8], within range: Range<Int>) -> Int? {
        guard let first = needle.first, needle.count <= range.count else { return nil }
        var i = range.lowerBound
        let last = range.upperBound - needle.count
        while i <= last {
            if bytes[i] == first && bytes[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }

    /// Pre-tokenizes a text fragment and BPE-encodes each word; `cache` holds words seen before.
    private func appendTokens(ofText bytes: ArraySlice<UInt8>, to out: inout [Int],
                              cache: inout [ArraySlice<UInt8>: [Int32]]) {
        let text = Codepoints(decoding: bytes)
        for word in preTokenizer.words(text.scalars) {
            let wordBytes = text.utf8[text.start[word.lowerBound]..<text.start[word.upperBound]]
            if let ids = cache[wordBytes] {
                out.append(contentsOf: ids.lazy.map(Int.init))
                continue
            }
            let ids = tokens(ofWord: wordBytes)
            cache[wordBytes] = ids
            out.append(contentsOf: ids.lazy.map(Int.init))
        }
    }

    private func tokens(ofWord word: ArraySlice<UInt8>) -> [Int32] {
        if let whole = wholeWordTokens?[Array(word)] { return [whole] }
        let symbols = merges.apply(word.map { byteSymbols[Int($0)] })
        var ids: [Int32] = []
        ids.reserveCapacity(symbols.count)
        for s in symbols {
            if Int(s) < vocabSize { ids.append(s) } else { ids.append(contentsOf: virtualSymbolTokens[Int(s) - vocabSize]) }
        }
        return ids
    }

    // MARK: Decoding

    /// The bytes token `id` stands for (empty for an id outside the vocabulary). A token may end
    /// inside a UTF-8 sequence; `StreamingDecoder` joins such pieces. With `skipSpecial`, control
    /// and unknown tokens give nothing (llama.cpp's `token_to_piece` with special = false).
    public func tokenBytes(_ id: Int, skipSpecial: Bool = false) -> [UInt8] {
        guard id >= 0 && id < vocabSize else { return [] }
        if skipSpecial && kinds[id].isHiddenUnlessSpecial { return [] }
        return pieces[id]
    }

    public func decodeBytes(_ ids: [Int], skipSpecial: Bool = false) -> [UInt8] {
        var bytes: [UInt8] = []
        for id in ids { bytes.append(contentsOf: tokenBytes(id, skipSpecial: skipSpecial)) }
        return bytes
    }

    /// The text of `ids`; bytes that do not form UTF-8 become U+FFFD.
    public func decode(_ ids: [Int], skipSpecial: Bool = false) -> String {
        String(decoding: decodeBytes(ids, skipSpecial: skipSpecial), as: UTF8.self)
    }

    /// Control, unknown or user-defined: a token matched as a whole rather than built by merges.
    public func isSpecial(_ id: Int) -> Bool {
        id >= 0 && id < vocabSize && kinds[id].isMatchedInText(parseSpecial: true)
    }

    // MARK: Building

    private static func index(_ textBytes: [[UInt8]], _ texts: [String]) throws -> [[UInt8]: Int32] {
        var index: [[UInt8]: Int32] = [:]
        index.reserveCapacity(textBytes.count)
        for (id, bytes) in textBytes.enumerated() {
            if let other = index.updateValue(Int32(id), forKey: bytes) {
                throw TokenizerError.invalidVocabulary("duplicate token '\(texts[id])' has ids \(other) and \(id)")
            }
        }
        return index
    }

    /// Normal tokens are byte-level text; special ones render as written; byte tokens are "<0xXX>".
    private static func piece(text: String, kind: TokenKind) -> [UInt8] {
        switch kind {
        case .normal:
            // llama.cpp marks a character outside the byte alphabet as unknown; keep its UTF-8.
            return text.unicodeScalars.flatMap { scalar -> [UInt8] in
                ByteLevel.byte(for: scalar).map { [$0] } ?? Array(String(scalar).utf8)
            }
        case .control, .unknown, .userDefined:
            return Array(text.utf8)
        case .byte:
            let hex = text.dropFirst(3).prefix(2)
            guard text.hasPrefix("<0x"), let value = UInt8(hex, radix: 16) else { return [] }
            return [value]
        case .unused, .undefined:
            return []
        }
    }

    /// Parses "left right" rules (split at the first space after the first byte, as llama.cpp);
    /// the first rule for a pair wins. Pairs of symbols that merges can never produce are dropped.
    private static func mergeTable(_ lines: [String], symbols: inout SymbolTable) -> MergeTable {
        var parsed: [(left: [UInt8], right: [UInt8])] = []
        parsed.reserveCapacity(lines.count)
        for line in lines {
            let bytes = Array(line.utf8)
            guard let space = bytes.indices.dropFirst().first(where: { bytes[$0] == 0x20 }) else {
                parsed.append(([], []))  // keeps ranks aligned with line numbers
                continue
            }
            let pair = (left: Array(bytes[..<space]), right: Array(bytes[(space + 1)...]))
            parsed.append(pair)
            _ = symbols.id(for: pair.left + pair.right)
        }
        var rules: [UInt64: MergeTable.Merge] = [:]
        rules.reserveCapacity(parsed.count)
        for (rank, pair) in parsed.enumerated() {
            guard let l = symbols.existingId(for: pair.left), let r = symbols.existingId(for: pair.right),
                  let result = symbols.existingId(for: pair.left + pair.right) else { continue }
            let key = MergeTable.key(l, r)
            if rules[key] == nil { rules[key] = .init(rank: Int32(rank), result: result) }
        }
        return MergeTable(rules: rules)
    }

    /// Raw bytes of every token whose text is byte-level (first id wins).
    private static func rawBytesIndex(_ texts: [String]) -> [[UInt8]: Int32] {
        var index: [[UInt8]: Int32] = [:]
        for (id, text) in texts.enumerated() {
            if let raw = ByteLevel.decode(text), index[raw] == nil { index[raw] = Int32(id) }
        }
        return index
    }
}

/// Ids for every string a BPE symbol can hold: token texts keep their token ids, other strings
/// (merge results or byte characters missing from the vocabulary) are numbered after them.
private struct SymbolTable {
    private var ids: [[UInt8]: Int32]
    private let vocabSize: Int
    private(set) var virtualTexts: [[UInt8]] = []

    init(tokens: [[UInt8]: Int32], vocabSize: Int) {
        ids = tokens
        self.vocabSize = vocabSize
    }

    func existingId(for text: [UInt8]) -> Int32? { ids[text] }

    mutating func id(for text: [UInt8]) -> Int32 {
        if let id = ids[text] { return id }
        let id = Int32(vocabSize + virtualTexts.count)
        virtualTexts.append(text)
        ids[text] = id
        return id
    }
}
