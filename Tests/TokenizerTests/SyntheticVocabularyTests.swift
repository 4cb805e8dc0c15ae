import Checkpoint
import Tokenizer
import XCTest

/// BPE mechanics on small hand-made vocabularies, where the right answer follows from the rules.
final class SyntheticVocabularyTests: XCTestCase {
    /// GPT-2's byte alphabet, written out independently of the library: printable Latin-1 bytes
    /// stand for themselves, the rest take U+0100... in byte order.
    static let byteCharacters: [String] = {
        var next = 0x100
        return (0..<256).map { b in
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            defer { if !printable { next += 1 } }
            return String(Character(Unicode.Scalar(printable ? b : next)!))
        }
    }()

    func makeTokenizer(extra: [String], merges: [String], pre: String = "gpt2",
                       special: [String] = []) throws -> BPETokenizer {
        let tokens = Self.byteCharacters + extra + special
        let types = Array(repeating: 1, count: 256 + extra.count) + Array(repeating: 3, count: special.count)
        return try BPETokenizer(spec: TokenizerSpec(tokens: tokens, merges: merges, tokenTypes: types,
                                                    preTokenizer: pre, bosId: nil, eosId: nil, addBOS: false))
    }

    func id(_ byte: Character) -> Int { Int(byte.asciiValue!) }

    func testSpaceIsWrittenAsGWithDot() {
        XCTAssertEqual(Self.byteCharacters[0x20], "Ġ")
        XCTAssertEqual(Self.byteCharacters[0x0A], "Ċ")
    }

    func testWithoutMergesEveryByteIsItsOwnToken() throws {
        let t = try makeTokenizer(extra: [], merges: ["x y"])
        XCTAssertEqual(t.encode("abc"), [id("a"), id("b"), id("c")])
        XCTAssertEqual(t.encode("é"), [0xC3, 0xA9])
    }

    func testLowerRankMergesFirst() throws {
        // "b c" outranks "a b", so "abc" becomes a + bc even though "ab" is also a token.
        let t = try makeTokenizer(extra: ["ab", "bc"], merges: ["b c", "a b"])
        XCTAssertEqual(t.encode("abc"), [id("a"), 257])
        let u = try makeTokenizer(extra: ["ab", "bc"], merges: ["a b", "b c"])
        XCTAssertEqual(u.encode("abc"), [256, id("c")])
    }

    func testEqualRanksMergeLeftmostFirst() throws {
        let t = try makeTokenizer(extra: ["aa"], merges: ["a a"])
        XCTAssertEqual(t.encode("aaa"), [256, id("a")])
        XCTAssertEqual(t.encode("aaaa"), [256, 256])
    }

    func testMergesChainAcrossLevels() throws {
        let t = try makeTokenizer(extra: ["Ġt", "he", "Ġthe"], merges: ["Ġ t", "h e", "Ġt he"])
        XCTAssertEqual(t.encode(" the"), [258])
        XCTAssertEqual(t.encode("the the"), [id("t"), 257, 258])
    }

    func testMergeResultMissingFromVocabularyFallsBackToItsAsciiBytes() throws {
        // "ab" is merged but is no token; llama.cpp then emits the one-byte tokens of its text.
        let t = try makeTokenizer(extra: ["abc"], merges: ["a b", "ab c"])
        XCTAssertEqual(t.encode("abc"), [256])
        XCTAssertEqual(t.encode("ab"), [id("a"), id("b")])
    }

    func testMergesNeverCrossWords() throws {
        // GPT-2 splits "a b" into "a" and " b", so the rule joining "a" and a space never applies.
        let t = try makeTokenizer(extra: ["aĠ"], merges: ["a Ġ"])
        XCTAssertEqual(t.encode("a b"), [id("a"), 0x20, id("b")])
    }

    func testControlTokensAreTextUnlessParsed() throws {
        let t = try makeTokenizer(extra: [], merges: ["x y"], special: ["<s>"])
        let special = 256
        XCTAssertEqual(t.encode("a<s>b", parseSpecial: true), [id("a"), special, id("b")])
        XCTAssertEqual(t.encode("a<s>b", parseSpecial: false), "a<s>b".map(id))
        XCTAssertEqual(t.decode([id("a"), special]), "a<s>")
        XCTAssertEqual(t.decode([id("a"), special], skipSpecial: true), "a")
        XCTAssertTrue(t.isSpecial(special))
    }

    func testLongerSpecialTokenWinsOverItsPrefix() throws {
        let t = try makeTokenizer(extra: [], merges: ["x y"], special: ["<a>", "<a>>"])
        XCTAssertEqual(t.encode("<a>><a>", parseSpecial: true), [257, 256])
    }

    func testUnknownPreTokenizerIsAClearError() {
        XCTAssertThrowsError(try makeTokenizer(extra: [], merges: ["x y"], pre: "no-such-split")) { error in
            XCTAssertTrue(String(describing: error).contains("unsupported pre-tokenizer 'no-such-split'"))
        }
    }

    func testDuplicateTokenIsAClearError() {
        XCTAssertThrowsError(try makeTokenizer(extra: ["a"], merges: ["x y"])) { error in
            XCTAssertTrue(String(describing: error).contains("duplicate token 'a'"))
        }
    }

    func testOutOfRangeIdsDecodeToNothing() throws {
        let t = try makeTokenizer(extra: [], merges: ["x y"])
        XCTAssertEqual(t.decode([-1, 99_999, id("a")]), "a")
    }
}
