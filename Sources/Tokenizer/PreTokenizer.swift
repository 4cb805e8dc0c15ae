/// The word-splitting rules applied before BPE, reproducing llama.cpp (`llm_tokenizer_bpe` regex
/// lists in llama-vocab.cpp, applied by `unicode_regex_split` in unicode.cpp). Each rule in a list
/// splits every piece the previous rule produced; BPE merges never cross a piece boundary.
/// llama.cpp runs the GPT-2 and Llama-3 patterns through hand-written scanners and the others
/// through std::regex; all of them are hand-written scanners here, with the same results.
public enum PreTokenizer: Sendable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    case gpt2
    /// `\p{N}` (every digit alone), then the GPT-2 pattern: llama.cpp's "smollm", "starcoder", ...
    case digitsThenGPT2
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case llama3
    /// The Llama-3 pattern with `\p{N}` (single digits) in place of `\p{N}{1,3}`.
    case qwen2
    /// llama.cpp's fallback list: `[\p{P}\$\+<=>\^~\|]+`, GPT-2, `\p{N}+`, `[0-9][0-9][0-9]`.
    case llamaDefault

    /// Maps a GGUF `tokenizer.ggml.pre` name as llama.cpp does; also whether llama.cpp sets
    /// `ignore_merges` for it (a word that is itself a token is emitted without merging).
    static func named(_ name: String) -> (PreTokenizer, ignoresMerges: Bool)? {
        switch name {
        case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b":
            return (.digitsThenGPT2, false)
        case "gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4", "jina-es", "jina-de":
            return (.gpt2, false)
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral":
            return (.llama3, true)
        case "dbrx", "smaug-bpe":
            return (.llama3, false)
        case "qwen2", "deepseek-r1-qwen", "stablelm2", "megrez":
            return (.qwen2, false)
        case "default", "":
            return (.llamaDefault, false)
        default:
            return nil
        }
    }

    static let supportedNames = "smollm, starcoder, refact, command-r, codeshell, exaone, gpt2, gpt-2, phi-2, mpt, olmo, "
        + "llama3, llama-bpe, falcon3, pixtral, dbrx, smaug-bpe, qwen2, deepseek-r1-qwen, stablelm2, default"

    /// Splits `text` into the words BPE sees (for inspection and tests; `BPETokenizer` works on bytes).
    public func split(_ text: String) -> [String] {
        let cps = Codepoints(decoding: Array(text.utf8))
        return words(cps.scalars).map { String(decoding: cps.utf8[cps.start[$0.lowerBound]..<cps.start[$0.upperBound]], as: UTF8.self) }
    }

    /// Word ranges (code point indices) covering `scalars` in order.
    func words(_ scalars: [UInt32]) -> [Range<Int>] {
        guard !scalars.isEmpty else { return [] }
        let classes = scalars.map { CharClass.of($0).rawValue }
        return scalars.withUnsafeBufferPointer { cps in
            classes.withUnsafeBufferPointer { cls in
                let text = ScanText(cps: cps, cls: cls)
                var pieces = [0..<scalars.count]
                for rule in rules { pieces = text.apply(rule, to: pieces) }
                return pieces
            }
        }
    }

    private var rules: [SplitRule] {
        switch self {
        case .gpt2: return [.gpt2]
        case .digitsThenGPT2: return [.eachNumber, .gpt2]
        case .llama3: return [.llama3(maxDigits: 3)]
        case .qwen2: return [.llama3(maxDigits: 1)]
        case .llamaDefault: return [.punctuationRuns, .gpt2, .numberRuns, .asciiDigitTriples]
        }
    }
}

/// One regex of a split list.
enum SplitRule {
    /// `\p{N}`
    case eachNumber
    /// `\p{N}+`
    case numberRuns
    /// `[\p{P}\$\+<=>\^~\|]+`
    case punctuationRuns
    /// `[0-9][0-9][0-9]`
    case asciiDigitTriples
    case gpt2
    case llama3(maxDigits: Int)
}

/// Code points and their classes for the whole text; scanners look at one piece at a time.
struct ScanText {
    let cps: UnsafeBufferPointer<UInt32>
    let cls: UnsafeBufferPointer<UInt8>

    func apply(_ rule: SplitRule, to pieces: [Range<Int>]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        out.reserveCapacity(pieces.count * 2)
        for piece in pieces {
            let p = Piece(text: self, lo: piece.lowerBound, hi: piece.upperBound)
            switch rule {
            case .eachNumber: p.isolateMatches(&out) { p.cls($0).contains(.number) ? 1 : 0 }
            case .numberRuns: p.isolateMatches(&out) { i in p.run(from: i) { $0.contains(.number) } - i }
            case .punctuationRuns: p.isolateMatches(&out) { i in p.run(from: i, p.isPunctuationOrMathAscii) - i }
            case .asciiDigitTriples: p.isolateMatches(&out) { i in (i..<(i + 3)).allSatisfy(p.isAsciiDigit) ? 3 : 0 }
            case .gpt2: p.words(&out) { p.gpt2WordEnd(at: $0) }
            case .llama3(let maxDigits): p.words(&out) { p.llama3WordEnd(at: $0, maxDigits: maxDigits) }
            }
        }
        return out
    }
}

/// A piece `lo..<hi`: positions outside it read as the empty class and as no code point, as in
/// llama.cpp's `_get_flags` / `_get_cpt` (so `(?!\S)` holds at a piece's end).
struct Piece {
    let text: ScanText
    let lo: Int
    let hi: Int

    static let outside: UInt32 = .max

    @inline(__always) func cp(_ i: Int) -> UInt32 { i >= lo && i < hi ? text.cps[i] : Self.outside }
    @inline(__always) func cls(_ i: Int) -> CharClass {
        i >= lo && i < hi ? CharClass(rawValue: text.cls[i]).union(.inPiece) : []
    }
    @inline(__always) func isAsciiDigit(_ i: Int) -> Bool { (0x30...0x39).contains(cp(i)) }

    /// \p{P} or one of $ + < = > ^ ~ | (llama.cpp's default list adds these ASCII symbols).
    func isPunctuationOrMathAscii(_ c: CharClass, at i: Int) -> Bool {
        if c.contains(.punctuation) { return true }
        switch cp(i) {
        case 0x24, 0x2B, 0x3C, 0x3D, 0x3E, 0x5E, 0x7E, 0x7C: return true
        default: return false
        }
    }

    /// End of the run of positions from `i` whose class satisfies `test`.
    @inline(__always) func run(from i: Int, _ test: (CharClass) -> Bool) -> Int {
        var j = i
        while test(cls(j)) { j += 1 }
        return j
    }

    func run(from i: Int, _ test: (CharClass, Int) -> Bool) -> Int {
        var j = i
        while j < hi && test(cls(j), j) { j += 1 }
        return j
    }

    /// std::regex_iterator splitting: leftmost matches (length from `matchLength`, 0 = none at
    /// that position) become pieces, and so do the gaps between them.
    func isolateMatches(_ out: inout [Range<Int>], _ matchLength: (Int) -> Int) {
        var gapStart = lo, i = lo
        while i < hi {
            let n = matchLength(i)
            if n > 0 {
                if gapStart < i { out.append(gapStart..<i) }
                out.append(i..<(i + n))
                i += n
                gapStart = i
            } else {
                i += 1
            }
        }
        if gapStart < hi { out.append(gapStart..<hi) }
    }

    private static func isContractionS_T_M_D(_ c: UInt32) -> Bool {
        c == 0x73 || c == 0x74 || c == 0x6D || c == 0x64  // s t m d
    }

    private static func isContraction_RE_VE_LL(_ c1: UInt32, _ c2: UInt32) -> Bool {
        (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C)  // re ve ll
    }

    /// Length of `'s|'t|'re|'ve|'m|'ll|'d` at `i` (0 if none); `fold` lowercases ASCII for `(?i:...)`.
    private func contraction(at i: Int, fold: Bool) -> Int {
        guard cp(i) == 0x27, i + 1 < hi else { return 0 }
        let lower: (UInt32) -> UInt32 = { fold && (0x41...0x5A).contains($0) ? $0 + 0x20 : $0 }
        let c1 = lower(cp(i + 1))
        if Self.isContractionS_T_M_D(c1) { return 2 }
        if i + 2 < hi, Self.isContraction_RE_VE_LL(c1, lower(cp(i + 2))) { return 3 }
        return 0
    }

    /// Neither whitespace, letter nor number, but inside the piece: `[^\s\p{L}\p{N}]`.
    @inline(__always) private static func isOther(_ c: CharClass) -> Bool {
        c.isDisjoint(with: [.whitespace, .letter, .number]) && c.contains(.inPiece)
    }

    /// Whitespace ending: `\s+(?!\S)` leaves the last space of a run that precedes a non-space to
    /// the next word; `\s+` takes the whole run otherwise (or when the run is one space).
    private func whitespaceEnd(from i: Int, count n: Int) -> Int {
        n > 1 && cp(i + n) != Self.outside ? i + n - 1 : i + n
    }

    /// Cuts the piece into consecutive words, each ending where `wordEnd` says.
    func words(_ out: inout [Range<Int>], _ wordEnd: (Int) -> Int) {
        var i = lo
        while i < hi {
            let end = wordEnd(i)
            out.append(i..<end)
            i = end
        }
    }

    /// End of the word starting at `i` under the GPT-2 pattern (llama.cpp's
    /// `unicode_regex_split_custom_gpt2`).
    func gpt2WordEnd(at i: Int) -> Int {
        let contractionLength = contraction(at: i, fold: false)
        if contractionLength > 0 { return i + contractionLength }
        let space = cp(i) == 0x20 ? 1 : 0
        let first = cls(i + space)  // the class after an optional leading space
        if first.contains(.letter) { return run(from: i + space) { $0.contains(.letter) } }
        if first.contains(.number) { return run(from: i + space) { $0.contains(.number) } }
        if Self.isOther(first) { return run(from: i + space, Self.isOther) }
        let n = run(from: i) { $0.contains(.whitespace) } - i
        return n > 0 ? whitespaceEnd(from: i, count: n) : i + 1
    }

    /// End of the word starting at `i` under the Llama-3 pattern (llama.cpp's
    /// `unicode_regex_split_custom_llama3`); with `maxDigits` 1 it is the Qwen2 pattern, which
    /// llama.cpp runs through std::regex with the same outcome.
    func llama3WordEnd(at i: Int, maxDigits: Int) -> Int {
        let contractionLength = contraction(at: i, fold: true)
        if contractionLength > 0 { return i + contractionLength }
        let c = cp(i), here = cls(i)
        let isNewline: (UInt32) -> Bool = { $0 == 0x0D || $0 == 0x0A }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !isNewline(c) && !here.contains(.number) && (here.contains(.letter) || cls(i + 1).contains(.letter)) {
            return run(from: i + 1) { $0.contains(.letter) }
        }
        // \p{N}{1,maxDigits}: a longer run is cut into groups from the left
        if here.contains(.number) { return min(run(from: i) { $0.contains(.number) }, i + maxDigits) }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (a lone space at the piece end also lands here, as in llama.cpp)
        let space = c == 0x20 ? 1 : 0
        if cls(i + space).isDisjoint(with: [.whitespace, .letter, .number]) {
            var end = run(from: i + space, Self.isOther)
            while isNewline(cp(end)) { end += 1 }
            return end
        }
        var n = 0, lastNewlineEnd: Int?
        while cls(i + n).contains(.whitespace) {
            if isNewline(cp(i + n)) { lastNewlineEnd = i + n + 1 }
            n += 1
        }
        if let end = lastNewlineEnd { return end }  // \s*[\r\n]+
        return n > 0 ? whitespaceEnd(from: i, count: n) : i + 1
    }
}
