/// tokenizer.json (the Hugging Face `tokenizers` format) <-> `TokenizerSpec`, for byte-level BPE.
/// The pre-tokenizer is matched to the llama.cpp pre-tokenizer name whose split rules it
/// implements, and written back as the `tokenizers` pipeline that reproduces those rules.

/// The pre-tokenizer splits this module can name, as llama.cpp names them.
public enum PreTokenizerRules {
    /// GPT-2's pattern, which `ByteLevel(use_regex: true)` applies built in.
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    /// Llama 3's Split pattern: digits in runs of up to three.
    public static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    /// Qwen2's Split pattern: the Llama 3 one with single digits.
    public static let qwen2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Pre names `tokenizerJSON` can write.
    public static let writable: [String] = ["gpt2", "smollm", "llama-bpe", "qwen2"]

    static func byteLevel(useRegex: Bool) -> JSONValue {
        .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)),
                 ("trim_offsets", .bool(true)), ("use_regex", .bool(useRegex))])
    }

    static func split(_ pattern: String) -> JSONValue {
        .object([("type", .string("Split")), ("pattern", .object([("Regex", .string(pattern))])),
                 ("behavior", .string("Isolated")), ("invert", .bool(false))])
    }

    /// The `tokenizers` pre_tokenizer that splits text as llama.cpp does for `pre`.
    /// smollm: llama.cpp isolates every \p{N} character, then applies the GPT-2 pattern;
    /// Digits(individual_digits) isolates each numeric character (Rust's char::is_numeric is \p{N}).
    public static func preTokenizer(for pre: String) -> JSONValue? {
        switch pre {
        case "gpt2":
            return byteLevel(useRegex: true)
        case "smollm":
            return .object([("type", .string("Sequence")), ("pretokenizers", .array([
                .object([("type", .string("Digits")), ("individual_digits", .bool(true))]),
                byteLevel(useRegex: true),
            ]))])
        case "llama-bpe", "qwen2":
            return .object([("type", .string("Sequence")), ("pretokenizers", .array([
                split(pre == "qwen2" ? qwen2Pattern : llama3Pattern),
                byteLevel(useRegex: false),
            ]))])
        default:
            return nil
        }
    }

    /// The llama.cpp pre name for a tokenizer.json pre_tokenizer, or nil if none matches.
    public static func name(of pre: JSONValue) -> String? {
        let steps: [JSONValue]
        if pre["type"]?.string == "Sequence" {
            guard let list = pre["pretokenizers"]?.array else { return nil }
            steps = list
        } else {
            steps = [pre]
        }
        guard let last = steps.last, isByteLevel(last) else { return nil }
        let useRegex = last["use_regex"]?.bool ?? true
        switch (steps.count, useRegex) {
        case (1, true):
            return "gpt2"
        case (2, true) where isIndividualDigits(steps[0]) || isSplit(steps[0], pattern: #"\p{N}"#):
            return "smollm"
        case (2, false) where isSplit(steps[0], pattern: llama3Pattern):
            return "llama-bpe"
        case (2, false) where isSplit(steps[0], pattern: qwen2Pattern):
            return "qwen2"
        default:
            return nil
        }
    }

    static func isByteLevel(_ v: JSONValue) -> Bool {
        v["type"]?.string == "ByteLevel" && !(v["add_prefix_space"]?.bool ?? false)
    }

    static func isIndividualDigits(_ v: JSONValue) -> Bool {
        v["type"]?.string == "Digits" && v["individual_digits"]?.bool == true
    }

    static func isSplit(_ v: JSONValue, pattern: String) -> Bool {
        guard v["type"]?.string == "Split", v["behavior"]?.string == "Isolated", v["invert"]?.bool != true else { return false }
        return v["pattern"]?["Regex"]?.string == pattern || v["pattern"]?["String"]?.string == pattern
    }
}

public enum HuggingFaceTokenizer {
    public static let fileName = "tokenizer.json"
    public static let configFileName = "tokenizer_config.json"

    /// llama.cpp token types used here.
    static let normalType = 1, controlType = 3, userDefinedType = 4, unusedType = 5

    // MARK: reading

    /// Reads `tokenizer.json` in `directory`; BOS/EOS come from `tokenizer_config.json` when it
    /// names them, else from config.json's `bos_token_id` / `eos_token_id`.
    public static func read(directory: String) throws -> TokenizerSpec {
        let path = joinPath(directory, fileName)
        var spec = try spec(try readJSONFile(path), path: path)
        let configPath = joinPath(directory, configFileName)
        let tokenizerConfig = fileExists(configPath) ? try readJSONFile(configPath) : nil
        let modelConfigPath = joinPath(directory, HuggingFaceConfig.fileName)
        let modelConfig = fileExists(modelConfigPath) ? try readJSONFile(modelConfigPath) : nil
        try applySpecialTokens(&spec, tokenizerConfig: tokenizerConfig, configPath: configPath, modelConfig: modelConfig)
        // transformers 5 saves the template as its own file instead of a tokenizer_config.json key.
        let templatePath = joinPath(directory, "chat_template.jinja")
        if spec.chatTemplate == nil, fileExists(templatePath) {
            spec.chatTemplate = try readUTF8File(templatePath)
        }
        return spec
    }

    /// The vocabulary, merges, token types and pre-tokenizer of a parsed tokenizer.json (BOS/EOS
    /// from its TemplateProcessing post-processor, if any).
    public static func spec(_ json: JSONValue, path: String) throws -> TokenizerSpec {
        let model = json["model"]
        guard let model, model["type"]?.string ?? "BPE" == "BPE" else {
            throw CheckpointError.invalid(path, detail: "tokenizer model '\(model?["type"]?.string ?? "none")' is not supported (only byte-level BPE)")
        }
        guard let preJSON = json["pre_tokenizer"], let pre = PreTokenizerRules.name(of: preJSON) else {
            let shown = json["pre_tokenizer"]?.serialized(indent: nil) ?? "null"
            throw CheckpointError.invalid(path, detail: "pre_tokenizer \(shown.prefix(200)) matches none of the supported byte-level splits (gpt2, smollm, llama-bpe, qwen2)")
        }
        let (tokens, types) = try vocabulary(model, json["added_tokens"], path: path)
        let merges = try readMerges(model["merges"], path: path)
        var spec = TokenizerSpec(tokens: tokens, merges: merges, tokenTypes: types, preTokenizer: pre,
                                 bosId: nil, eosId: nil, addBOS: false)
        if let bos = templateBOS(json["post_processor"]) {
            spec.bosId = bos
            spec.addBOS = true
        }
        return spec
    }

    /// Tokens by id from model.vocab and added_tokens; added tokens are control tokens when
    /// "special", user-defined otherwise. Every id from 0 to the largest must be given once.
    static func vocabulary(_ model: JSONValue, _ added: JSONValue?, path: String) throws -> ([String], [Int]) {
        guard let vocab = model["vocab"]?.members else { throw CheckpointError.missingKey(path, key: "model.vocab") }
        var byId: [Int: (String, Int)] = [:]
        for (token, idValue) in vocab {
            guard let id = idValue.int, id >= 0, id < 1 << 24 else {
                throw CheckpointError.invalid(path, detail: "model.vocab['\(token)'] has id \(idValue.serialized(indent: nil))")
            }
            if let other = byId[id] {
                throw CheckpointError.invalid(path, detail: "model.vocab gives id \(id) to both '\(other.0)' and '\(token)'")
            }
            byId[id] = (token, normalType)
        }
        for item in added?.array ?? [] {
            guard let id = item["id"]?.int, id >= 0, id < 1 << 24, let content = item["content"]?.string else {
                throw CheckpointError.invalid(path, detail: "added_tokens entry \(item.serialized(indent: nil).prefix(120)) lacks id or content")
            }
            if let existing = byId[id], existing.0 != content {
                throw CheckpointError.invalid(path, detail: "added token '\(content)' has id \(id), which model.vocab gives to '\(existing.0)'")
            }
            byId[id] = (content, item["special"]?.bool == true ? controlType : userDefinedType)
        }
        let count = (byId.keys.max() ?? -1) + 1
        guard count > 0 else { throw CheckpointError.invalid(path, detail: "model.vocab is empty") }
        var tokens: [String] = [], types: [Int] = []
        tokens.reserveCapacity(count)
        types.reserveCapacity(count)
        for id in 0..<count {
            guard let (token, type) = byId[id] else { throw CheckpointError.invalid(path, detail: "no token has id \(id)") }
            tokens.append(token)
            types.append(type)
        }
        return (tokens, types)
    }

    /// Merges as "a b" strings, from either spelling: "a b" (older files) or ["a", "b"].
    static func readMerges(_ value: JSONValue?, path: String) throws -> [String] {
        guard let list = value?.array else { throw CheckpointError.missingKey(path, key: "model.merges") }
        return try list.enumerated().map { i, item in
            if let s = item.string {
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw CheckpointError.invalid(path, detail: "merge \(i) '\(s)' is not two tokens separated by a space")
                }
                return s
            }
            guard let pair = item.array, pair.count == 2, let a = pair[0].string, let b = pair[1].string,
                  !a.isEmpty, !b.isEmpty else {
                throw CheckpointError.invalid(path, detail: "merge \(i) \(item.serialized(indent: nil)) is not a pair of tokens")
            }
            return a + " " + b
        }
    }

    /// The id of a special token that a TemplateProcessing post-processor puts before "$A".
    static func templateBOS(_ post: JSONValue?) -> Int? {
        guard let post else { return nil }
        let processors = post["type"]?.string == "Sequence" ? (post["processors"]?.array ?? []) : [post]
        for p in processors where p["type"]?.string == "TemplateProcessing" {
            guard let first = p["single"]?.array?.first, let name = first["SpecialToken"]?["id"]?.string else { continue }
            if let id = p["special_tokens"]?[name]?["ids"]?.array?.first?.int { return id }
        }
        return nil
    }

    /// BOS/EOS ids and add_bos from tokenizer_config.json (token strings) or config.json (ids).
    static func applySpecialTokens(_ spec: inout TokenizerSpec, tokenizerConfig: JSONValue?, configPath: String,
                                   modelConfig: JSONValue?) throws {
        func tokenId(_ key: String) throws -> Int? {
            guard let value = tokenizerConfig?[key], !value.isNull else { return nil }
            guard let content = value.string ?? value["content"]?.string else {
                throw CheckpointError.invalid(configPath, detail: "\(key) is neither a string nor an added token")
            }
            guard let id = spec.tokens.firstIndex(of: content) else {
                throw CheckpointError.invalid(configPath, detail: "\(key) '\(content)' is not in the vocabulary")
            }
            return id
        }
        let configBOS = modelConfig?["bos_token_id"]?.int
        let configEOS = modelConfig?["eos_token_id"]?.int ?? modelConfig?["eos_token_id"]?.array?.first?.int
        spec.bosId = try tokenId("bos_token") ?? spec.bosId ?? configBOS
        spec.eosId = try tokenId("eos_token") ?? configEOS
        if let add = tokenizerConfig?["add_bos_token"]?.bool { spec.addBOS = add }
        spec.chatTemplate = chatTemplate(tokenizerConfig?["chat_template"])
        for id in [spec.bosId, spec.eosId].compactMap({ $0 }) where id < 0 || id >= spec.tokens.count {
            throw CheckpointError.invalid(configPath, detail: "special token id \(id) is outside the vocabulary (\(spec.tokens.count) tokens)")
        }
    }

    /// `chat_template` is one string, or (newer files) a list of named templates, of which the
    /// one named "default" is what `apply_chat_template` uses.
    static func chatTemplate(_ value: JSONValue?) -> String? {
        if let text = value?.string { return text }
        return value?.array?.first { $0["name"]?.string == "default" }?["template"]?.string
    }

    // MARK: writing

    /// tokenizer.json for `spec`: control tokens become special added tokens, user-defined ones
    /// non-special added tokens, and trailing unused ("[PAD]") tokens, which llama.cpp appends to
    /// fill the embedding, are left out (the loader appends them again from config.json).
    public static func tokenizerJSON(_ spec: TokenizerSpec) throws -> JSONValue {
        guard let pre = PreTokenizerRules.preTokenizer(for: spec.preTokenizer) else {
            throw CheckpointError.invalid(fileName, detail: "pre-tokenizer '\(spec.preTokenizer)' cannot be written (supported: \(PreTokenizerRules.writable.joined(separator: ", ")))")
        }
        guard spec.tokenTypes.count == spec.tokens.count else {
            throw CheckpointError.invalid(fileName, detail: "\(spec.tokens.count) tokens but \(spec.tokenTypes.count) token types")
        }
        var count = spec.tokens.count
        while count > 0 && spec.tokenTypes[count - 1] == unusedType { count -= 1 }
        var vocab: [(String, JSONValue)] = []
        vocab.reserveCapacity(count)
        var added: [JSONValue] = []
        for id in 0..<count {
            let token = spec.tokens[id]
            vocab.append((token, .int(id)))
            let type = spec.tokenTypes[id]
            if type == controlType || type == userDefinedType {
                added.append(.object([
                    ("id", .int(id)), ("content", .string(token)), ("single_word", .bool(false)),
                    ("lstrip", .bool(false)), ("rstrip", .bool(false)), ("normalized", .bool(type != controlType)),
                    ("special", .bool(type == controlType)),
                ]))
            }
        }
        let merges: [JSONValue] = try spec.merges.enumerated().map { i, m in
            let parts = m.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw CheckpointError.invalid(fileName, detail: "merge \(i) '\(m)' is not two tokens") }
            return .array([.string(String(parts[0])), .string(String(parts[1]))])
        }
        let model: JSONValue = .object([
            ("type", .string("BPE")), ("dropout", .null), ("unk_token", .null), ("continuing_subword_prefix", .null),
            ("end_of_word_suffix", .null), ("fuse_unk", .bool(false)), ("byte_fallback", .bool(false)),
            ("ignore_merges", .bool(false)), ("vocab", .object(vocab)), ("merges", .array(merges)),
        ])
        return .object([
            ("version", .string("1.0")), ("truncation", .null), ("padding", .null),
            ("added_tokens", .array(added)), ("normalizer", spec.preTokenizer == "qwen2" ? .object([("type", .string("NFC"))]) : .null),
            ("pre_tokenizer", pre), ("post_processor", postProcessor(spec)),
            ("decoder", .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(true)),
                                 ("trim_offsets", .bool(true)), ("use_regex", .bool(true))])),
            ("model", model),
        ])
    }

    /// ByteLevel offsets handling, preceded by BOS insertion when the spec adds a BOS.
    static func postProcessor(_ spec: TokenizerSpec) -> JSONValue {
        let byteLevel: JSONValue = .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(true)),
                                            ("trim_offsets", .bool(false)), ("use_regex", .bool(true))])
        guard spec.addBOS, let bos = spec.bosId, bos < spec.tokens.count else { return byteLevel }
        let name = spec.tokens[bos]
        func piece(_ s: String, _ typeId: Int) -> JSONValue {
            .object([(s == "A" || s == "B" ? "Sequence" : "SpecialToken",
                      .object([("id", .string(s)), ("type_id", .int(typeId))]))])
        }
        let template: JSONValue = .object([
            ("type", .string("TemplateProcessing")),
            ("single", .array([piece(name, 0), piece("A", 0)])),
            ("pair", .array([piece(name, 0), piece("A", 0), piece(name, 1), piece("B", 1)])),
            ("special_tokens", .object([(name, .object([("id", .string(name)), ("ids", .array([.int(bos)])),
                                                         ("tokens", .array([.string(name)]))]))])),
        ])
        return .object([("type", .string("Sequence")), ("processors", .array([byteLevel, template]))])
    }

    /// tokenizer_config.json naming BOS/EOS, whether BOS is added, and the chat template if any.
    public static func tokenizerConfigJSON(_ spec: TokenizerSpec) -> JSONValue {
        func name(_ id: Int?) -> JSONValue {
            guard let id, id >= 0, id < spec.tokens.count else { return .null }
            return .string(spec.tokens[id])
        }
        var fields: [(String, JSONValue)] = [
            ("add_bos_token", .bool(spec.addBOS)), ("add_eos_token", .bool(false)),
            ("bos_token", name(spec.bosId)), ("eos_token", name(spec.eosId)),
            ("clean_up_tokenization_spaces", .bool(false)),
            ("tokenizer_class", .string("PreTrainedTokenizerFast")),
        ]
        if let template = spec.chatTemplate { fields.append(("chat_template", .string(template))) }
        return .object(fields)
    }

    /// Writes tokenizer.json and tokenizer_config.json into `directory`.
    public static func write(_ spec: TokenizerSpec, toDirectory directory: String) throws {
        try writeJSONFile(try tokenizerJSON(spec), to: joinPath(directory, fileName))
        try writeJSONFile(tokenizerConfigJSON(spec), to: joinPath(directory, configFileName))
    }
}

extension TokenizerSpec {
    /// Appends llama.cpp's "[PAD<i>]" unused tokens up to `vocabSize` (the embedding's row count),
    /// as its converter does when a tokenizer is smaller than the model's vocabulary.
    public func padded(toVocabSize vocabSize: Int) -> TokenizerSpec {
        guard tokens.count < vocabSize else { return self }
        var out = self
        for i in tokens.count..<vocabSize {
            out.tokens.append("[PAD\(i)]")
            out.tokenTypes.append(HuggingFaceTokenizer.unusedType)
        }
        return out
    }
}
