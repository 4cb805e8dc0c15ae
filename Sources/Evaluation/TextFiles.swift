import Foundation

/// The bytes of a text file to evaluate (read as is: no newline conversion, no BOM handling),
/// refusing a missing file, a directory and an empty file with one-line errors.
public func readTextFile(_ path: String) throws -> [UInt8] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw EvaluationError.missingFile(path)
    }
    if isDirectory.boolValue { throw EvaluationError.unreadable(path, reason: "is a directory") }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw EvaluationError.unreadable(path, reason: "permission denied")
    }
    if data.isEmpty { throw EvaluationError.emptyText(path) }
    return [UInt8](data)
}

/// Token ids, one decimal per line (as `llama-tokenize --ids` or `aqlm tokenize` print them).
public func readTokenIds(_ path: String) throws -> [Int] {
    let text = String(decoding: try readTextFile(path), as: UTF8.self)
    var ids: [Int] = []
    for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let field = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if field.isEmpty { continue }
        guard let id = Int(field) else {
            throw EvaluationError.unreadable(path, reason: "line \(n + 1) is not a token id: '\(field.prefix(40))'")
        }
        ids.append(id)
    }
    if ids.isEmpty { throw EvaluationError.emptyText(path) }
    return ids
}
