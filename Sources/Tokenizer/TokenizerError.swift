/// Why a vocabulary cannot be used, as one line; callers prefix the file it came from.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case unsupportedPreTokenizer(String)
    case invalidVocabulary(String)
    case unsupportedChatTemplate(String)

    public var description: String {
        switch self {
        case .unsupportedPreTokenizer(let name):
            return "unsupported pre-tokenizer '\(name)' (supported: \(PreTokenizer.supportedNames))"
        case .invalidVocabulary(let detail):
            return "invalid tokenizer vocabulary: \(detail)"
        case .unsupportedChatTemplate(let detail):
            return "--chat needs a ChatML chat template: \(detail)"
        }
    }
}
