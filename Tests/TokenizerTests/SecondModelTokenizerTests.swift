import Checkpoint
import Foundation
import Tokenizer
import XCTest

/// Qwen2.5-Coder-0.5B-Instruct's tokenizer (151,936 entries, `tokenizer.ggml.pre = "qwen2"`)
/// against llama.cpp's ids (../shared/data/reference, Qwen section).
final class SecondModelTokenizerTests: XCTestCase {
    private static let loaded = ReferenceData.loadTokenizer(ModelPaths.secondModel)

    func tokenizer() throws -> BPETokenizer { try ReferenceData.unwrap(Self.loaded) }

    func testWholeWikiTestMatchesLlamaCpp() throws {
        let t = try tokenizer()
        let expected = try ReferenceData.ids("reference/wiki.test.raw.qwen2.5-coder-0.5b.ids", count: 298_938)
        ReferenceData.assertSameIds(t.encode(try ReferenceData.wikiTest()), expected, tokenizer: t)
    }

    func testChatMarkersAreSingleSpecialIds() throws {
        let t = try tokenizer()
        XCTAssertFalse(t.addsBOS)
        let prompt = "<|im_start|>system\nYou write Python.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        let parsed = t.encode(prompt, parseSpecial: true)
        let start = try XCTUnwrap(t.encode("<|im_start|>", parseSpecial: true).first)
        let end = try XCTUnwrap(t.encode("<|im_end|>", parseSpecial: true).first)
        XCTAssertTrue(t.isSpecial(start) && t.isSpecial(end))
        XCTAssertEqual(parsed.filter { $0 == start }.count, 3)
        XCTAssertEqual(parsed.filter { $0 == end }.count, 2)
        XCTAssertTrue(t.endOfGenerationIds.contains(end), "generation stops at <|im_end|>")
        XCTAssertEqual(t.decode(parsed), prompt)
    }
}
