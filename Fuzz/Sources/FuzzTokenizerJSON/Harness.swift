import Checkpoint
import FuzzSupport
import Tokenizer

/// tokenizer.json on arbitrary bytes: the vocabulary, added tokens, merges in both spellings,
/// pre-tokenizer recognition and post-processor BOS, then the BPE tables built from them and
/// a sample text encoded and decoded.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked {
        var seeds: [(name: String, bytes: [UInt8])] = []
        for pre in ["smollm", "gpt2", "llama-bpe", "qwen2"] {
            for addBOS in [false, true] {
                var spec = TinyModel.tokenizer
                spec.preTokenizer = pre
                spec.addBOS = addBOS
                let json = try HuggingFaceTokenizer.tokenizerJSON(spec)
                seeds.append(("\(pre)\(addBOS ? "-bos" : "").json", Array(json.serialized().utf8)))
                if !addBOS {
                    // Older files spell merges as "a b" strings.
                    let merges = JSONValue.array(spec.merges.map(JSONValue.string))
                    let old = json.setting("model", json["model"]!.setting("merges", merges))
                    seeds.append(("\(pre)-string-merges.json", Array(old.serialized(indent: nil).utf8)))
                }
            }
        }
        return seeds
    }
    return 0
}

let sample = Array("Hello world, it's 2024: 12345 tokens <|endoftext|> héllo\n\n  wörld 日本 🙂".utf8)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let json = try? JSONValue(parsing: fuzzInput(data, size)),
          let spec = try? HuggingFaceTokenizer.spec(json, path: "tokenizer.json") else { return 0 }
    require(spec.tokens.count == spec.tokenTypes.count, "\(spec.tokens.count) tokens, \(spec.tokenTypes.count) types")
    if let bos = spec.bosId { require(bos >= 0, "negative BOS id \(bos)") }
    guard let tokenizer = try? BPETokenizer(spec: spec) else { return 0 }
    for parseSpecial in [false, true] {
        let ids = tokenizer.encode(sample, parseSpecial: parseSpecial)
        require(ids.allSatisfy { (0..<tokenizer.vocabSize).contains($0) }, "token id outside the vocabulary")
        _ = tokenizer.decodeBytes(ids)
    }
    if let written = try? HuggingFaceTokenizer.tokenizerJSON(spec) {
        _ = try? HuggingFaceTokenizer.spec(written, path: "tokenizer.json (written)")
    }
    return 0
}
