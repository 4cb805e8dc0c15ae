#if canImport(Glibc)
import Glibc
#endif
import Checkpoint
import Foundation
import FuzzSupport
import Tokenizer

/// The tokenizer on arbitrary bytes with a real vocabulary (SmolLM2-135M's, or the GGUF named
/// by `AQLM_FUZZ_TOKENIZER_MODEL`), loaded once. The first input byte picks the options
/// (bit 0: parse special tokens, bit 1: add BOS); the rest is the text. Checked: every id is in
/// the vocabulary; valid UTF-8 decodes back to itself; streaming decoding equals decoding at once.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked {
        let texts = [
            "Hello world! It's a test: 1234567 apples, 3.14159 pies.",
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
            "def f(x):\n\treturn x ** 2  # square\n\n\n    if x != 0:\r\n        pass",
            " = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : 戦場のヴァルキュリア3 ) ",
            "naïve café résumé Ünïcödé — “quotes” ‘single’ … ½ ² ℃ 😀👍🏽 ﷺ \u{0301}e\u{0301} 한국어 עברית العربية",
            "<|endoftext|><|endoftext|>   <|im_start|><|im_start||>  <|im_end",
            "planes 4-11, whose UTF-8 lead bytes have no token: \u{40000} \u{9F3FD}👍\u{9F3FD} \u{10FFFD}",
            String(repeating: "a", count: 300) + String(repeating: " ", count: 40) + String(repeating: "9", count: 50),
        ]
        var seeds: [(name: String, bytes: [UInt8])] = []
        for (i, text) in texts.enumerated() {
            for flags: UInt8 in [0, 1, 2, 3] { seeds.append(("text\(i)-\(flags)", [flags] + Array(text.utf8))) }
        }
        seeds.append(("invalid-utf8", [1, 0xC0, 0x80, 0xED, 0xA0, 0x80, 0xFF, 0xF5, 0x80, 0x80, 0x80, 0xE2, 0x82, 0x41, 0xF0, 0x9F]))
        return seeds
    }
    let path = ProcessInfo.processInfo.environment["AQLM_FUZZ_TOKENIZER_MODEL"] ?? ModelPaths.defaultModel
    do {
        tokenizer = try BPETokenizer(spec: try GGUFFile(path: path).tokenizerSpec())
    } catch {
        harnessFailure("cannot load the tokenizer of \(path) (run tools/setup.sh, or set AQLM_FUZZ_TOKENIZER_MODEL): \(error)")
    }
    bytesWithoutToken = Set((0...255).map(UInt8.init).filter {
        tokenizer.decodeBytes(tokenizer.encode([$0], addBOS: false)) != [$0]
    })
    return 0
}

nonisolated(unsafe) var tokenizer: BPETokenizer!
/// Bytes whose byte-level character is not in the vocabulary (SmolLM2 lacks 21, among them the
/// UTF-8 lead bytes 0xF1 and 0xF2 of planes 4-11): llama.cpp drops such a symbol, and so does
/// this tokenizer, so text holding one cannot come back whole even when it is valid UTF-8.
nonisolated(unsafe) var bytesWithoutToken: Set<UInt8> = []

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    guard let flags = input.first else { return 0 }
    let text = Array(input.dropFirst())
    let parseSpecial = flags & 1 != 0, addBOS = flags & 2 != 0
    let ids = tokenizer.encode(text, addBOS: addBOS, parseSpecial: parseSpecial)
    require(ids.allSatisfy { (0..<tokenizer.vocabSize).contains($0) }, "token id outside the vocabulary")
    let body = addBOS && tokenizer.bosId != nil ? Array(ids.dropFirst()) : ids
    let bytes = tokenizer.decodeBytes(body)
    // Runs of control characters can merge into a symbol the vocabulary lacks, which llama.cpp
    // (and so this tokenizer, to give its ids) emits as the one-byte tokens of its text's UTF-8:
    // none exist for these characters, so they are dropped. Other valid UTF-8 must come back.
    let controls = text.contains { $0 < 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D || $0 == 0x7F }
    let untokenizable = text.contains { bytesWithoutToken.contains($0) }
    if !controls, !untokenizable, String(validating: text, as: UTF8.self) != nil {
        let at = zip(bytes, text).enumerated().first { $1.0 != $1.1 }?.offset ?? min(bytes.count, text.count)
        require(bytes == text, "valid UTF-8 does not decode back to itself from byte \(at): "
                + "\(text[at...].prefix(16)) came back as \(bytes[at...].prefix(16)); ids \(ids.prefix(60))")
    }
    var stream = StreamingDecoder(tokenizer: tokenizer)
    var streamed = ""
    for id in ids { streamed += stream.append(id) }
    streamed += stream.finish()
    require(streamed == tokenizer.decode(ids), "streaming decoding differs from decoding at once")
    return 0
}
