/// Every way a checkpoint can be unreadable, each rendered as one line that names the file
/// (and, where it applies, the tensor or key) so the CLI can print it and exit non-zero.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case missingFile(String)
    case unreadable(String, reason: String)
    case badMagic(String, found: String)
    case unsupportedVersion(String, Int)
    case truncated(String, what: String)
    case outOfBounds(String, tensor: String, detail: String)
    case unknownTensorType(String, tensor: String, type: UInt32)
    case unsupportedTensorType(String, tensor: String, type: String)
    case unsupportedArchitecture(String, String)
    case missingKey(String, key: String)
    case missingTensor(String, tensor: String)
    case shapeMismatch(String, tensor: String, expected: [Int], found: [Int])
    case invalid(String, detail: String)

    public var description: String {
        switch self {
        case .missingFile(let f): return "\(f): no such file or directory"
        case .unreadable(let f, let r): return "\(f): cannot read: \(r)"
        case .badMagic(let f, let m): return "\(f): not a recognised checkpoint (magic \(m))"
        case .unsupportedVersion(let f, let v): return "\(f): unsupported GGUF version \(v) (supported: 2, 3)"
        case .truncated(let f, let w): return "\(f): file is truncated (while reading \(w))"
        case .outOfBounds(let f, let t, let d): return "\(f): tensor '\(t)': \(d)"
        case .unknownTensorType(let f, let t, let ty): return "\(f): tensor '\(t)' has unknown type id \(ty)"
        case .unsupportedTensorType(let f, let t, let ty): return "\(f): tensor '\(t)' has unsupported type \(ty)"
        case .unsupportedArchitecture(let f, let a): return "\(f): unsupported architecture '\(a)' (supported: llama, mistral, qwen2)"
        case .missingKey(let f, let k): return "\(f): missing metadata key '\(k)'"
        case .missingTensor(let f, let t): return "\(f): missing tensor '\(t)'"
        case .shapeMismatch(let f, let t, let e, let s): return "\(f): tensor '\(t)' has shape \(s), config expects \(e)"
        case .invalid(let f, let d): return "\(f): \(d)"
        }
    }
}
