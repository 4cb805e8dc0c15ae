import Checkpoint
import Foundation
import Tokenizer
import XCTest

/// The default model's tokenizer against llama.cpp's own output (../shared/data/reference).
final class DefaultModelTokenizerTests: XCTestCase {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let dataDirectory = packageRoot.appendingPathComponent("../shared/data").standardized

    /// One tokenizer for the whole class: building it reads 49k tokens and 49k merges.
    private static let loaded: Result<BPETokenizer, Error>? = {
        let path = ModelPaths.defaultModel
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return Result { try BPETokenizer(spec: GGUFFile(path: path).tokenizerSpec()) }
    }()

    func tokenizer() throws -> BPETokenizer {
        guard let loaded = Self.loaded else { throw XCTSkip("default model not installed: run tools/setup.sh") }
        return try loaded.get()
    }

    func dataFile(_ relative: String) throws -> [UInt8] {
        let url = Self.dataDirectory.appendingPathComponent(relative)
        guard let data = FileManager.default.contents(atPath: url.path) else { throw XCTSkip("\(url.path) absent") }
        return [UInt8](data)
    }

    func wikiTest() throws -> [UInt8] { try dataFile("wikitext-2/wiki.test.raw") }

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
        let reference = try dataFile("reference/wiki.test.raw.smollm2.ids")
        let expected = String(decoding: reference, as: UTF8.self).split(whereSeparator: \.isNewline).map { Int($0)! }
        XCTAssertEqual(expected.count, 304_830)
        let ids = t.encode(text)
        guard ids != expected else { return }
        let common = min(ids.count, expected.count)
        let i = (0..<common).first { ids[$0] != expected[$0] } ?? common
        let around = max(0, i - 8)..<min(i + 8, expected.count)
        XCTFail("""
            \(ids.count) ids vs \(expected.count) reference ids; first difference at index \(i)
            ours:      \(Array(ids[around.clamped(to: 0..<ids.count)]))
            reference: \(Array(expected[around]))
            text:      \(t.decode(Array(expected[around])).debugDescription)
            """)
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
