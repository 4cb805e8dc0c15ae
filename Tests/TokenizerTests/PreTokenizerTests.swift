import Tokenizer
import XCTest

/// Word splits of each pre-tokenizer, worked out from the regex lists llama.cpp applies
/// (llama-vocab.cpp) with regex semantics: leftmost alternative first, greedy quantifiers.
final class PreTokenizerTests: XCTestCase {
    func testGPT2() {
        let s = PreTokenizer.gpt2
        XCTAssertEqual(s.split("Hello world"), ["Hello", " world"])
        XCTAssertEqual(s.split("abc 123"), ["abc", " 123"])
        // \s+(?!\S) leaves the last space of a run to the next word.
        XCTAssertEqual(s.split("a   b"), ["a", "  ", " b"])
        XCTAssertEqual(s.split("a \n b"), ["a", " \n", " b"])
        XCTAssertEqual(s.split("end  "), ["end", "  "])
        // Contractions are lowercase only in GPT-2's pattern.
        XCTAssertEqual(s.split("don't I'M"), ["don", "'t", " I", "'", "M"])
        XCTAssertEqual(s.split("x?!, (y)"), ["x", "?!,", " (", "y", ")"])
        XCTAssertEqual(s.split(""), [])
    }

    func testSmolLMSplitsEveryDigitBeforeGPT2() {
        let s = PreTokenizer.digitsThenGPT2
        XCTAssertEqual(s.split("abc 123"), ["abc", " ", "1", "2", "3"])
        // The digit split runs first, so " \r\n 1" keeps its whitespace whole (Hugging Face's
        // plain ByteLevel would give " \r\n" + " 1"): this is where the two disagree on wikitext.
        XCTAssertEqual(s.split("a \r\n 1"), ["a", " \r\n ", "1"])
        XCTAssertEqual(s.split("in 1997,"), ["in", " ", "1", "9", "9", "7", ","])
        XCTAssertEqual(s.split("x²"), ["x", "²"])
    }

    func testLlama3() {
        let s = PreTokenizer.llama3
        XCTAssertEqual(s.split("abc 12345"), ["abc", " ", "123", "45"])
        XCTAssertEqual(s.split("Hello\r\n\r\nWorld"), ["Hello", "\r\n\r\n", "World"])
        XCTAssertEqual(s.split("I'M here"), ["I", "'M", " here"])
        XCTAssertEqual(s.split("(hi)"), ["(hi", ")"])
        XCTAssertEqual(s.split("a...\n\nb"), ["a", "...\n\n", "b"])
        XCTAssertEqual(s.split("x  \n y"), ["x", "  \n", " y"])
    }

    func testQwen2SplitsSingleDigits() {
        XCTAssertEqual(PreTokenizer.qwen2.split("x 2024"), ["x", " ", "2", "0", "2", "4"])
    }

    func testLlamaCppDefaultList() {
        let s = PreTokenizer.llamaDefault
        XCTAssertEqual(s.split("a+b=c"), ["a", "+", "b", "=", "c"])
        XCTAssertEqual(s.split("12345"), ["123", "45"])
        XCTAssertEqual(s.split("x 1234567"), ["x", " ", "123", "456", "7"])
    }

    func testUnicodeClassesAsLlamaCpp() {
        let s = PreTokenizer.gpt2
        // Letters of any script join a word; \p{N} includes other numbers such as "²".
        XCTAssertEqual(s.split("Über straße"), ["Über", " straße"])
        XCTAssertEqual(s.split("日本語です"), ["日本語です"])
        XCTAssertEqual(s.split("x² 5"), ["x", "²", " 5"])
        // Non-ASCII White_Space (no-break space, ideographic space) is whitespace; U+001C is not.
        // (only a plain space joins the following word).
        XCTAssertEqual(s.split("a\u{A0}\u{A0}b"), ["a", "\u{A0}", "\u{A0}", "b"])
        XCTAssertEqual(s.split("a\u{3000}b"), ["a", "\u{3000}", "b"])
        XCTAssertEqual(s.split("a\u{1C}b"), ["a", "\u{1C}", "b"])
        // A combining mark is not a letter, so it breaks a word.
        XCTAssertEqual(s.split("e\u{301}t"), ["e", "\u{301}", "t"])
    }
}
