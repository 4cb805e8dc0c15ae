import Checkpoint
import Llama

/// Any model the user can name, opened for running: an alias, a GGUF file, a Hugging Face
/// directory, or a packed AQLM directory (run through the fused kernels unless `dequantize`
/// asks for the Float32 reference path).
public struct OpenedModel {
    public let model: LlamaModel
    public let tokenizer: TokenizerSpec
    /// The packed model, when the path was a packed AQLM checkpoint.
    public let packed: PackedModel?
    public let path: String
}

public func openModel(_ nameOrPath: String, dequantize: Bool = false) throws -> OpenedModel {
    let path = ModelPaths.resolve(nameOrPath)
    if PackedCheckpoint.isPacked(directory: path) {
        let packed = try PackedCheckpoint.read(directory: path)
        let model = dequantize ? try LlamaModel(weights: packed.dequantizedWeights(source: path)) : try packed.llamaModel()
        return OpenedModel(model: model, tokenizer: packed.tokenizer, packed: packed, path: path)
    }
    let weights = try loadCheckpoint(path)
    return OpenedModel(model: try LlamaModel(weights: weights), tokenizer: weights.tokenizer, packed: nil, path: path)
}
