import Checkpoint
import Foundation
import Tokenizer
import XCTest

/// The default model's tokenizer against llama.cpp's own output (../shared/data/reference).
final class DefaultModelTokenizerTests: XCTestCase {
    /// One tokenizer for the whole class: building it reads 49k tokens and 49k merges.
    private static let loaded = ReferenceData.loadTokenizer(ModelPaths.defaultModel)

    func tokenizer() throws -> BPETokenizer { try ReferenceData.unwrap(Self.loaded) }

    func wikiTest() throws -> [UInt8] { try ReferenceData.wikiTest() }

    func testVocabularyFacts() throws {
        let t = try tokenizer()
        XCTAssertEqual(t.vocabSize, 49152)
        XCTAssertEqual(t.bosId, 1)
        XCTAssertEqual(t.eosId, 2)
        XCTAssertFalse(t.addsBOS)
        XCTAssertEqual(t.preTokenizer, .digitsThenGPT2)
        XCTAssertEqual(t.endOfGenerationIds, [0, 2])  // <|endoftext|>, <|im_end|>
    }

    func testWholeWikiTestMatchesLlamaCpp() throws {
        let t = try tokenizer()
        let text = try wikiTest()
        let expected = try ReferenceData.ids("reference/wiki.test.raw.smollm2.ids", count: 304_830)
        ReferenceData.assertSameIds(t.encode(text), expected, tokenizer: t)
    }

    func testFirst2000CharactersGive539Ids() throws {
        let t = try tokenizer()
        let text = String(decoding: try wikiTest(), as: UTF8.self)
        XCTAssertEqual(t.encode(String(text.unicodeScalars.prefix(2000))).count, 539)
    }

    func testWholeWikiTestRoundTrips() throws {
        let t = try tokenizer()
        let text = try wikiTest()
        XCTAssertEqual(t.decodeBytes(t.encode(text)), text)
    }

    func testGreedyGenerationPrompt() throws {
        let t = try tokenizer()
        XCTAssertEqual(t.encode("Once upon a time, there was a little girl named"),
                       [6403, 1980, 253, 655, 28, 665, 436, 253, 1838, 8180, 3365])
    }

    func testTrickyStringsRoundTrip() throws {
        let t = try tokenizer()
        let samples = [
            "🦙 llamas 👩‍👩‍👧 ❤️", "日本語のテキスト、中文文本。", "e\u{301}te\u{301} Zürich",
            "مرحبا بالعالم", "tabs\tand\u{3000}ideographic\u{A0}spaces\r\n\r\n", "x² ⅷ ½ ٣",
            "   leading and trailing   ", "''quotes'' don't WON'T", "<|im_start|>user\nhi<|im_end|>",
        ]
        for s in samples {
            XCTAssertEqual(t.decode(t.encode(s)), s, s.debugDescription)
        }
    }

    func testInvalidUTF8IsReadAsLlamaCppDoes() throws {
        let t = try tokenizer()
        // A stray continuation byte and a truncated sequence each become U+FFFD; the rest survives.
        let bytes: [UInt8] = Array("ok ".utf8) + [0x80] + Array(" fine ".utf8) + [0xE2, 0x82]
        XCTAssertEqual(t.decode(t.encode(bytes)), "ok \u{FFFD} fine \u{FFFD}\u{FFFD}")
        let everyByte = (0...255).map(UInt8.init)
        XCTAssertFalse(t.encode(everyByte).isEmpty)
    }

    func testChatMarkersParsedOnlyWhenAsked() throws {
        let t = try tokenizer()
        let prompt = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        let parsed = t.encode(prompt, parseSpecial: true)
        XCTAssertEqual(parsed.filter { $0 == 1 }.count, 2)
        XCTAssertEqual(parsed.filter { $0 == 2 }.count, 1)
        XCTAssertEqual(parsed.first, 1)
        XCTAssertEqual(parsed.last, t.encode("\n").last)
        XCTAssertEqual(t.decode(parsed), prompt)
        XCTAssertEqual(t.decode(parsed, skipSpecial: true), "user\nWhat is 2+2?\nassistant\n")
        // Between the markers the text is tokenized exactly as on its own.
        let userTurn = Array(parsed[1..<parsed.firstIndex(of: 2)!])
        XCTAssertEqual(userTurn, t.encode("user\nWhat is 2+2?"))

        let plain = t.encode(prompt, parseSpecial: false)
        XCTAssertFalse(plain.contains { t.isSpecial($0) })
        XCTAssertGreaterThan(plain.count, parsed.count)
        XCTAssertEqual(t.decode(plain), prompt)
    }

    func testStreamingDecoderEmitsExactlyTheFullDecode() throws {
        let t = try tokenizer()
        let texts = ["🦙 llamas 👩‍👩‍👧 日本語 ❤️ e\u{301}", String(String(decoding: try wikiTest(), as: UTF8.self).unicodeScalars.prefix(20_000))]
        for text in texts {
            let ids = t.encode(text)
            var stream = StreamingDecoder(tokenizer: t)
            var pieces = ids.map { stream.append($0) }
            pieces.append(stream.finish())
            XCTAssertEqual(pieces.joined(), t.decode(ids))
            XCTAssertEqual(pieces.joined(), text)
            XCTAssertFalse(pieces.contains { $0.contains("\u{FFFD}") }, "a piece split a UTF-8 sequence")
        }
    }

    func testALlamaEmojiSpansSeveralTokens() throws {
        // Rare characters are byte tokens: the first pieces of "🦙" are not text on their own.
        let t = try tokenizer()
        let ids = t.encode("🦙")
        XCTAssertGreaterThan(ids.count, 1)
        XCTAssertNotEqual(String(decoding: t.tokenBytes(ids[0]), as: UTF8.self), "🦙")
        var stream = StreamingDecoder(tokenizer: t)
        XCTAssertEqual(stream.append(ids[0]), "")
        XCTAssertEqual(ids.dropFirst().map { stream.append($0) }.joined() + stream.finish(), "🦙")
    }
}

final class UTF8StreamDecoderTests: XCTestCase {
    func testHoldsAnUnfinishedSequence() {
        var d = UTF8StreamDecoder()
        let llama = Array("🦙".utf8)
        XCTAssertEqual(d.append(Array("a".utf8) + llama.prefix(1)), "a")
        XCTAssertEqual(d.append(llama[1..<3]), "")
        XCTAssertEqual(d.append(llama.suffix(1) + Array("b".utf8)), "🦙b")
        XCTAssertEqual(d.finish(), "")
    }

    func testInvalidBytesBecomeReplacementCharacters() {
        var d = UTF8StreamDecoder()
        XCTAssertEqual(d.append([0x61, 0x80, 0x62]), "a\u{FFFD}b")
        XCTAssertEqual(d.append([0xE2, 0x82]), "")
        XCTAssertEqual(d.finish(), "\u{FFFD}")
    }
}
