import XCTest
import Foundation
import Checkpoint

final class HuggingFaceTokenizerTests: TemporaryDirectoryTestCase {
    /// A small byte-level vocabulary: two control tokens, bytes, merged tokens, one user-defined token.
    func sampleSpec(pre: String = "smollm") -> TokenizerSpec {
        let tokens = ["<|endoftext|>", "<|im_start|>", "Ġ", "t", "h", "e", "Ġt", "he", "Ġthe", "1", "2", "<tool>", "ĊĠ"]
        return TokenizerSpec(tokens: tokens, merges: ["Ġ t", "h e", "Ġt he"], tokenTypes: [3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 1],
                             preTokenizer: pre, bosId: 1, eosId: 0, addBOS: false)
    }

    func write(_ spec: TokenizerSpec) throws -> String {
        let dir = try newDirectory()
        try HuggingFaceTokenizer.write(spec, toDirectory: dir)
        return dir
    }

    func testRoundTripEveryWritablePreTokenizer() throws {
        for pre in PreTokenizerRules.writable {
            let spec = sampleSpec(pre: pre)
            XCTAssertEqual(try HuggingFaceTokenizer.read(directory: try write(spec)), spec, pre)
        }
    }

    func testRoundTripWithAddedBOS() throws {
        var spec = sampleSpec(pre: "llama-bpe")
        spec.addBOS = true
        let dir = try write(spec)
        XCTAssertEqual(try HuggingFaceTokenizer.read(directory: dir), spec)
        // Without tokenizer_config.json, the TemplateProcessing post-processor still says BOS is added.
        try FileManager.default.removeItem(atPath: (dir as NSString).appendingPathComponent("tokenizer_config.json"))
        let back = try HuggingFaceTokenizer.read(directory: dir)
        XCTAssertEqual(back.bosId, 1)
        XCTAssertTrue(back.addBOS)
        XCTAssertNil(back.eosId)
    }

    func testWrittenSmolLMPreTokenizerIsDigitsThenByteLevel() throws {
        let json = try HuggingFaceTokenizer.tokenizerJSON(sampleSpec())
        XCTAssertEqual(json["pre_tokenizer"]?.serialized(indent: nil),
                       #"{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}]}"#)
        XCTAssertEqual(json["model"]?["merges"]?.array?.first, .array([.string("Ġ"), .string("t")]))
        XCTAssertEqual(json["added_tokens"]?.array?.map { $0["special"]?.bool }, [true, true, false])
        XCTAssertThrowsError(try HuggingFaceTokenizer.tokenizerJSON(sampleSpec(pre: "default")))
    }

    func testTrailingUnusedTokensAreLeftOutAndRepadded() throws {
        var spec = sampleSpec()
        spec.tokens += ["[PAD13]", "[PAD14]"]
        spec.tokenTypes += [5, 5]
        let dir = try write(spec)
        let back = try HuggingFaceTokenizer.read(directory: dir)
        XCTAssertEqual(back.tokens.count, 13)
        XCTAssertEqual(back.padded(toVocabSize: 15), spec)
    }

    /// tokenizer.json as published by various models, reduced to the parts that matter.
    func tokenizerJSON(pre: String, merges: String, added: String = "[]", post: String = "null") -> String {
        """
        {"version": "1.0", "added_tokens": \(added), "normalizer": null, "pre_tokenizer": \(pre), "post_processor": \(post),
         "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "<s>": 4}, "merges": \(merges)}}
        """
    }

    func spec(_ text: String) throws -> TokenizerSpec {
        try HuggingFaceTokenizer.spec(try JSONValue(parsing: text), path: "tok.json")
    }

    func testPreTokenizerNames() throws {
        let byteLevel = #"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"#
        let byteLevelNoRegex = #"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}"#
        func split(_ pattern: String) -> String {
            "{\"type\": \"Split\", \"pattern\": {\"Regex\": \(JSONValue.quoted(pattern))}, \"behavior\": \"Isolated\", \"invert\": false}"
        }
        let cases: [(String, String)] = [
            (byteLevel, "gpt2"),
            (#"{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, \#(byteLevel)]}"#, "smollm"),
            (#"{"type": "Sequence", "pretokenizers": [\#(split(#"\p{N}"#)), \#(byteLevel)]}"#, "smollm"),
            (#"{"type": "Sequence", "pretokenizers": [\#(split(PreTokenizerRules.llama3Pattern)), \#(byteLevelNoRegex)]}"#, "llama-bpe"),
            (#"{"type": "Sequence", "pretokenizers": [\#(split(PreTokenizerRules.qwen2Pattern)), \#(byteLevelNoRegex)]}"#, "qwen2"),
        ]
        for (pre, name) in cases {
            XCTAssertEqual(try spec(tokenizerJSON(pre: pre, merges: #"["a b"]"#)).preTokenizer, name)
        }
        let unsupported = [
            #"{"type": "Whitespace"}"#,
            #"{"type": "ByteLevel", "add_prefix_space": true, "use_regex": true}"#,
            #"{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": false}, \#(byteLevel)]}"#,
            #"{"type": "Sequence", "pretokenizers": [\#(split(PreTokenizerRules.llama3Pattern)), \#(byteLevel)]}"#,
            "null",
        ]
        for pre in unsupported {
            XCTAssertThrowsError(try spec(tokenizerJSON(pre: pre, merges: #"["a b"]"#)), pre) { error in
                guard case .invalid("tok.json", let d)? = error as? CheckpointError else { return XCTFail("\(error)") }
                XCTAssertTrue(d.hasPrefix("pre_tokenizer"), d)
            }
        }
    }

    func testMergesInBothSpellingsAndAddedTokens() throws {
        let pre = #"{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}"#
        let added = #"[{"id": 4, "content": "<s>", "special": true}, {"id": 5, "content": "<extra>", "special": false}]"#
        let post = #"{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [4], "tokens": ["<s>"]}}}"#
        let old = try spec(tokenizerJSON(pre: pre, merges: #"["a b", "Ġ ab"]"#, added: added, post: post))
        let new = try spec(tokenizerJSON(pre: pre, merges: #"[["a", "b"], ["Ġ", "ab"]]"#, added: added, post: post))
        XCTAssertEqual(old, new)
        XCTAssertEqual(old.merges, ["a b", "Ġ ab"])
        XCTAssertEqual(old.tokens, ["a", "b", "ab", "Ġ", "<s>", "<extra>"])
        XCTAssertEqual(old.tokenTypes, [1, 1, 1, 1, 3, 4])
        XCTAssertEqual(old.bosId, 4)
        XCTAssertTrue(old.addBOS)
    }

    func testMalformedVocabularies() {
        let pre = #"{"type": "ByteLevel", "use_regex": true}"#
        let cases = [
            tokenizerJSON(pre: pre, merges: #"["a b c"]"#),
            tokenizerJSON(pre: pre, merges: #"[["a"]]"#),
            tokenizerJSON(pre: pre, merges: #"["a b"]"#, added: #"[{"id": 7, "content": "<x>", "special": true}]"#),
            tokenizerJSON(pre: pre, merges: #"["a b"]"#, added: #"[{"id": 0, "content": "<x>", "special": true}]"#),
            #"{"pre_tokenizer": \#(pre), "model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}}"#,
            #"{"pre_tokenizer": \#(pre), "model": {"type": "Unigram", "vocab": [["a", 0.0]]}}"#,
            #"{"pre_tokenizer": \#(pre), "model": {"type": "BPE", "vocab": {"a": 0}}}"#,
        ]
        for text in cases {
            XCTAssertThrowsError(try spec(text), text) { error in
                guard let e = error as? CheckpointError else { return XCTFail("\(error)") }
                XCTAssertTrue(e.description.hasPrefix("tok.json: "), e.description)
            }
        }
    }

    func testSpecialTokensFromTokenizerConfigThenModelConfig() throws {
        let spec = sampleSpec()
        let dir = try write(spec)
        let tokCfg = (dir as NSString).appendingPathComponent("tokenizer_config.json")
        try #"{"bos_token": {"content": "<|endoftext|>", "__type": "AddedToken"}, "eos_token": "<|im_start|>", "add_bos_token": true}"#
            .write(toFile: tokCfg, atomically: true, encoding: .utf8)
        var back = try HuggingFaceTokenizer.read(directory: dir)
        XCTAssertEqual([back.bosId, back.eosId], [0, 1])
        XCTAssertTrue(back.addBOS)

        try FileManager.default.removeItem(atPath: tokCfg)
        try #"{"bos_token_id": 2, "eos_token_id": [12, 0]}"#.write(toFile: (dir as NSString).appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        back = try HuggingFaceTokenizer.read(directory: dir)
        XCTAssertEqual([back.bosId, back.eosId], [2, 12])
        XCTAssertFalse(back.addBOS)

        try #"{"bos_token": "<not-a-token>"}"#.write(toFile: tokCfg, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try HuggingFaceTokenizer.read(directory: dir)) { error in
            guard case .invalid(tokCfg, let d)? = error as? CheckpointError else { return XCTFail("\(error)") }
            XCTAssertTrue(d.contains("<not-a-token>"), d)
        }
    }

    func testChatTemplateRoundTripsThroughTokenizerConfigInBothSpellings() throws {
        var spec = sampleSpec()
        spec.chatTemplate = "{{ '<|im_start|>' + m['role'] + '\n' }}"
        let dir = try write(spec)
        XCTAssertEqual(try HuggingFaceTokenizer.read(directory: dir), spec)
        // Newer files list named templates; "default" is the one apply_chat_template uses.
        let tokCfg = (dir as NSString).appendingPathComponent("tokenizer_config.json")
        try #"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#
            .write(toFile: tokCfg, atomically: true, encoding: .utf8)
        XCTAssertEqual(try HuggingFaceTokenizer.read(directory: dir).chatTemplate, "D")
        try FileManager.default.removeItem(atPath: tokCfg)
        XCTAssertNil(try HuggingFaceTokenizer.read(directory: dir).chatTemplate)
    }
}
