/// llama.cpp's token types (GGUF `tokenizer.ggml.token_type`), which decide how a token is
/// matched in input text and how it is rendered.
enum TokenKind: Sendable, Equatable {
    case normal, unknown, control, userDefined, unused, byte, undefined

    init(ggufType: Int) {
        switch ggufType {
        case 1: self = .normal
        case 2: self = .unknown
        case 3: self = .control
        case 4: self = .userDefined
        case 5: self = .unused
        case 6: self = .byte
        default: self = .undefined
        }
    }

    /// Matched as a whole in input text before pre-tokenization (control and unknown only when
    /// special parsing is on; user-defined always, as in Hugging Face tokenizers).
    func isMatchedInText(parseSpecial: Bool) -> Bool {
        switch self {
        case .userDefined: return true
        case .control, .unknown: return parseSpecial
        default: return false
        }
    }

    /// Rendered only when special tokens are wanted in the output.
    var isHiddenUnlessSpecial: Bool { self == .control || self == .unknown }

    /// Token texts that end generation; llama.cpp recognises these by text and makes them
    /// control tokens whatever type the file gives (llama-vocab.cpp, `special_eog_ids`).
    static let endOfGenerationTexts: Set<String> = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
        "<EOT>", "<|end_of_text|>", "<end_of_utterance>",
    ]
}
