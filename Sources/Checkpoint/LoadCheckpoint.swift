/// The one entry point for "a model the user named": an alias, a Hugging Face model directory,
/// or a GGUF file, each read into the same Float32 `ModelWeights` in Hugging Face naming.
public func loadCheckpoint(_ path: String) throws -> ModelWeights {
    let resolved = try checkCheckpointPath(path)
    if directoryExists(resolved) {
        return try HuggingFaceCheckpoint.modelWeights(directory: resolved)
    }
    return try GGUFFile(path: resolved).modelWeights()
}

/// What `loadCheckpoint` checks before it reads anything (the path exists, a directory holds
/// config.json, a file starts with GGUF's magic), for commands that should refuse a bad model
/// path before they start long work or create their output. Returns the resolved path.
@discardableResult
public func checkCheckpointPath(_ path: String) throws -> String {
    let resolved = ModelPaths.resolve(path)
    if directoryExists(resolved) {
        guard HuggingFaceCheckpoint.isCheckpoint(directory: resolved) else {
            throw CheckpointError.missingFile(joinPath(resolved, HuggingFaceConfig.fileName))
        }
        return resolved
    }
    guard fileExists(resolved) else { throw CheckpointError.missingFile(resolved) }
    let magic = try fileMagic(resolved)
    if magic == Array("GGUF".utf8) { return resolved }
    let shown = magic.map { (32...126).contains($0) ? String(UnicodeScalar($0)) : "." }.joined()
    let hint = resolved.hasSuffix(".safetensors") || resolved.hasSuffix(".json")
        ? "; pass the Hugging Face model directory that holds it" : ""
    throw CheckpointError.badMagic(resolved, found: "'\(shown)', expected a GGUF file or a Hugging Face model directory\(hint)")
}

/// The first four bytes of a file (fewer if it is shorter).
private func fileMagic(_ path: String) throws -> [UInt8] {
    let file = try MappedFile(path: path)
    return Array(file.bytes.prefix(4))
}
