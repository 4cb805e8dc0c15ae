#if canImport(Glibc)
import Glibc
#endif
import Checkpoint
import Kernels
import Llama
import Quantizer

/// Any model the user can name, opened for running: an alias, a GGUF file, a Hugging Face
/// directory, or a packed AQLM directory (run through the fused kernels unless `dequantize`
/// asks for the Float32 reference path).
public struct OpenedModel {
    public let model: LlamaModel
    public let tokenizer: TokenizerSpec
    /// The coding scheme, when the path was a packed AQLM checkpoint.
    public let scheme: AQLMScheme?
    public let path: String

    /// The packed checkpoint, read again from `path` (the opened model keeps only what it runs
    /// on); nil unless the path was a packed AQLM checkpoint.
    public var packed: PackedModel? {
        scheme == nil ? nil : try? PackedCheckpoint.read(directory: path)
    }
}

/// - Parameter embedding: how to store the embedding table and tied head; nil keeps each
///   path's default (the stored type for dense models: see `EmbeddingTable(storedTensor:)`, `PackedModel.defaultEmbeddingPrecision` for
///   packed ones run through the kernels, Float32 for packed ones dequantized).
/// - Parameter denseMemoryBudget: bytes the block linears of a dense model (a GGUF or Hugging
///   Face checkpoint, or a packed one with `dequantize`) may hold as Float32; above it they stay
///   in their stored form and are converted on use (`DenseLinearStorage.choose`). The model's
///   `denseLinears` says which ran.
public func openModel(_ nameOrPath: String, dequantize: Bool = false, embedding: EmbeddingPrecision? = nil,
                      denseMemoryBudget: Int = DenseLinearStorage.defaultBudgetBytes) throws -> OpenedModel {
    let path = ModelPaths.resolve(nameOrPath)
    // Loading frees more than it keeps (tensors are converted, re-laid out, dequantized): hand
    // the freed heap back so resident memory is what the model holds.
    defer { releaseFreedHeap() }
    if PackedCheckpoint.isPacked(directory: path) {
        if dequantize {
            let packed = try PackedCheckpoint.read(directory: path)
            let storage = DenseLinearStorage.choose(for: packed.config, budgetBytes: denseMemoryBudget)
            let model = try packed.dequantizedLlamaModel(denseLinears: storage, source: path).withEmbedding(embedding ?? .f32)
            return OpenedModel(model: model, tokenizer: packed.tokenizer, scheme: packed.scheme, path: path)
        }
        let (model, tokenizer, scheme) = try PackedCheckpoint.readLlamaModel(directory: path, embedding: embedding)
        return OpenedModel(model: model, tokenizer: tokenizer, scheme: scheme, path: path)
    }
    let weights = try loadCheckpoint(path)
    let stored = try LlamaModel(weights: weights, denseMemoryBudget: denseMemoryBudget)
    let model = try embedding.map { try stored.withEmbedding($0) } ?? stored
    return OpenedModel(model: model, tokenizer: weights.tokenizer, scheme: nil, path: path)
}

/// Refuses a path `openModel` could not open (missing, a directory without config.json, a file
/// that is not GGUF) with the error `openModel` would give, without reading the model: for
/// commands that should fail before they start long work.
public func checkModelPath(_ nameOrPath: String) throws {
    if PackedCheckpoint.isPacked(directory: ModelPaths.resolve(nameOrPath)) { return }
    try checkCheckpointPath(nameOrPath)
}

/// Returns free heap pages to the system (glibc keeps freed small and medium blocks
/// otherwise): glibc's `malloc_trim`, looked up at run time since Swift's Glibc module does not
/// declare it; nothing where it does not exist.
private func releaseFreedHeap() {
    mallocTrim?(0)
}

private let mallocTrim: (@convention(c) (Int) -> Int32)? = {
    #if canImport(Glibc)
    guard let handle = dlopen(nil, RTLD_NOW), let address = dlsym(handle, "malloc_trim") else { return nil }
    return unsafeBitCast(address, to: (@convention(c) (Int) -> Int32).self)
    #else
    return nil
    #endif
}()
