/// Text as llama.cpp's pre-tokenizer sees it: code points decoded the way `unicode_cpts_from_utf8`
/// does, and the UTF-8 that `unicode_cpt_to_utf8` writes back for them, which is what BPE runs on.
///
/// llama.cpp's decoder checks only the lead byte's length bits and that the continuation bytes are
/// present, so overlong forms (C0 80 -> U+0000) and surrogates (ED A0 80 -> U+D800) pass as code
/// points; a byte that starts no sequence, or a sequence cut short, becomes U+FFFD and decoding
/// resumes at the next byte. Valid UTF-8 therefore comes back byte for byte; invalid bytes come
/// back as EF BF BD each. (F5-F7 leads give values above U+10FFFF, for which llama.cpp throws;
/// they become U+FFFD here.)
struct Codepoints {
    /// Decoded code points.
    var scalars: [UInt32] = []
    /// Re-encoded UTF-8 of `scalars`.
    var utf8: [UInt8] = []
    /// `utf8` offset of each code point, plus the end: word `lo..<hi` is `utf8[start[lo]..<start[hi]]`.
    var start: [Int] = []

    static let replacement: UInt32 = 0xFFFD

    init<Bytes: Collection>(decoding bytes: Bytes) where Bytes.Element == UInt8, Bytes.Index == Int {
        scalars.reserveCapacity(bytes.count)
        utf8.reserveCapacity(bytes.count)
        start.reserveCapacity(bytes.count + 1)
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let (scalar, length) = Self.decodeOne(bytes, at: i)
            i += length
            start.append(utf8.count)
            scalars.append(scalar)
            Self.appendUTF8(scalar, to: &utf8)
        }
        start.append(utf8.count)
    }

    /// One code point at `i` and the number of bytes it used (1 for an invalid byte).
    private static func decodeOne<Bytes: Collection>(_ b: Bytes, at i: Int) -> (UInt32, Int)
    where Bytes.Element == UInt8, Bytes.Index == Int {
        let lead = UInt32(b[i])
        let length: Int
        switch lead {
        case 0x00..<0x80: return (lead, 1)
        case 0xC0..<0xE0: length = 2
        case 0xE0..<0xF0: length = 3
        case 0xF0..<0xF8: length = 4
        default: return (replacement, 1)  // a continuation byte or 0xF8-0xFF as lead
        }
        guard b.endIndex - i >= length else { return (replacement, 1) }
        var value = lead & (0x7F >> UInt32(length))
        for k in 1..<length {
            let c = UInt32(b[i + k])
            guard c & 0xC0 == 0x80 else { return (replacement, 1) }
            value = value << 6 | (c & 0x3F)
        }
        return (value <= 0x10FFFF ? value : replacement, length)
    }

    /// Shortest-form encoding by value, surrogates included (as `unicode_cpt_to_utf8`).
    static func appendUTF8(_ v: UInt32, to out: inout [UInt8]) {
        switch v {
        case 0..<0x80:
            out.append(UInt8(v))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | v >> 6))
            out.append(UInt8(0x80 | v & 0x3F))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | v >> 12))
            out.append(UInt8(0x80 | v >> 6 & 0x3F))
            out.append(UInt8(0x80 | v & 0x3F))
        default:
            out.append(UInt8(0xF0 | v >> 18))
            out.append(UInt8(0x80 | v >> 12 & 0x3F))
            out.append(UInt8(0x80 | v >> 6 & 0x3F))
            out.append(UInt8(0x80 | v & 0x3F))
        }
    }
}

/// The Unicode classes the split rules test, as llama.cpp's `unicode_cpt_flags`: \p{L}, \p{N},
/// \p{P}, and whitespace = the White_Space property (llama.cpp's table comes from Python regex `\s`,
/// which is White_Space: U+0009-000D, U+0020, U+0085, U+00A0, U+1680, U+2000-200A, ...; not U+001C-001F).
struct CharClass: OptionSet {
    let rawValue: UInt8
    static let letter = CharClass(rawValue: 1)
    static let number = CharClass(rawValue: 2)
    static let whitespace = CharClass(rawValue: 4)
    static let punctuation = CharClass(rawValue: 8)
    /// Set for every code point inside the piece being scanned (llama.cpp: `flags.as_uint() != 0`),
    /// so that "outside the piece" reads as the empty class.
    static let inPiece = CharClass(rawValue: 16)

    private static let ascii: [CharClass] = (0..<128).map { classify(UInt32($0)) }

    static func of(_ v: UInt32) -> CharClass {
        v < 128 ? ascii[Int(v)] : classify(v)
    }

    /// Surrogates and unassigned code points have none of the classes (llama.cpp: control/undefined).
    private static func classify(_ v: UInt32) -> CharClass {
        guard let scalar = Unicode.Scalar(v) else { return [] }
        let p = scalar.properties
        if p.isWhitespace { return .whitespace }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return .number
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return .punctuation
        default:
            return []
        }
    }
}
