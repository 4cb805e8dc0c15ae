/// Every way an evaluation can be refused, each one line naming the bad file or argument.
public enum EvaluationError: Error, CustomStringConvertible, Equatable {
    case missingFile(String)
    case unreadable(String, reason: String)
    case emptyText(String)
    case contextTooSmall(Int)
    case contextTooLarge(Int, modelContext: Int)
    case textTooShort(String, tokens: Int, context: Int)
    case invalidArgument(String)
    case badLogitsFile(String, detail: String)
    case logitsMismatch(String, detail: String)

    public var description: String {
        switch self {
        case .missingFile(let f): return "\(f): no such file"
        case .unreadable(let f, let r): return "\(f): cannot read: \(r)"
        case .emptyText(let f): return "\(f): the text is empty"
        case .contextTooSmall(let c): return "--ctx \(c): a context needs at least 2 tokens (one to read, one to predict)"
        case .contextTooLarge(let c, let m): return "--ctx \(c) exceeds the model's context length \(m)"
        case .textTooShort(let f, let n, let c):
            return "\(f): tokenizes to \(n) tokens, fewer than one chunk of --ctx \(c)"
        case .invalidArgument(let d): return d
        case .badLogitsFile(let f, let d): return "\(f): not a usable top-k log-prob file: \(d)"
        case .logitsMismatch(let f, let d): return "\(f): \(d)"
        }
    }
}
