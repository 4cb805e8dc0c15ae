import Foundation

/// A conversation in ChatML (`<|im_start|>role\n…<|im_end|>\n`), the chat format of both models
/// this project runs. Recognised from the model's own chat template (a Jinja program we do not
/// interpret): a template that writes `<|im_start|>` … `<|im_end|>` turns and opens an
/// `<|im_start|>assistant` turn is ChatML; anything else is refused rather than guessed at.
public struct ChatML: Sendable, Equatable {
    /// The system message the template writes when the conversation has none (SmolLM2's and
    /// Qwen2.5's templates each carry one as a string literal), so `--chat` without `--system`
    /// gives the prompt Hugging Face's `apply_chat_template` gives.
    public let defaultSystem: String?

    public static let start = "<|im_start|>", end = "<|im_end|>"

    /// - Parameter template: the model's `tokenizer.chat_template` (nil: the model has none).
    /// - Throws: `TokenizerError.unsupportedChatTemplate` for a missing or non-ChatML template.
    public init(template: String?) throws {
        guard let template, !template.isEmpty else {
            throw TokenizerError.unsupportedChatTemplate("the model has no chat template")
        }
        guard template.contains(Self.start), template.contains(Self.end), template.contains(Self.start + "assistant") else {
            let shown = template.prefix(60).replacingOccurrences(of: "\n", with: "\\n")
            throw TokenizerError.unsupportedChatTemplate("the model's chat template is not ChatML (it starts \"\(shown)…\")")
        }
        defaultSystem = Self.literalSystemMessage(in: template)
    }

    /// The text of a system turn written as one string literal, `'<|im_start|>system\n…<|im_end|>`,
    /// if the template has one; a turn built from a variable (`+ messages[0]['content'] +`) does not match.
    static func literalSystemMessage(in template: String) -> String? {
        // The newline after the role is a real newline or a Jinja `\n` escape, depending on how the
        // template was stored; the message itself is a plain literal (no quote, brace or marker).
        let pattern = #"<\|im_start\|>system(?:\n|\\n)([^'"{}<\\]*)<\|im_end\|>"#
        guard let regex = try? NSRegularExpression(pattern: pattern),
              let match = regex.firstMatch(in: template, range: NSRange(template.startIndex..., in: template)),
              let range = Range(match.range(at: 1), in: template) else { return nil }
        return String(template[range])
    }

    /// The token ids of a one-turn conversation ending in an open assistant turn:
    /// `<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n`.
    /// The markers are their special ids; the messages are tokenized as plain text, so a message
    /// that spells `<|im_end|>` cannot close its turn early.
    public func encode(system: String?, user: String, with tokenizer: BPETokenizer) throws -> [Int] {
        let start = try tokenizer.specialTokenId(Self.start), end = try tokenizer.specialTokenId(Self.end)
        let newline = tokenizer.encode("\n", addBOS: false)
        var ids = tokenizer.addsBOS ? tokenizer.bosId.map { [$0] } ?? [] : []
        let turns = [("system", system ?? defaultSystem), ("user", user)].compactMap { role, text in text.map { (role, $0) } }
        for (role, text) in turns {
            ids += [start] + tokenizer.encode(role + "\n" + text, addBOS: false) + [end] + newline
        }
        return ids + [start] + tokenizer.encode("assistant\n", addBOS: false)
    }
}

extension BPETokenizer {
    /// The id of a special (control) token spelled `text`, e.g. `<|im_end|>`.
    public func specialTokenId(_ text: String) throws -> Int {
        let ids = encode(text, addBOS: false, parseSpecial: true)
        guard ids.count == 1, let id = ids.first, isSpecial(id) else {
            throw TokenizerError.invalidVocabulary("no special token \(text)")
        }
        return id
    }
}
