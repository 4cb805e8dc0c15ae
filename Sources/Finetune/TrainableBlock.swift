import Checkpoint
import Kernels
import Llama
import Quantizer

/// Which continuous parameters fine-tuning changes (codes are always frozen).
public struct TrainedParameters: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// Codewords (and, with a codebook transform, the transforms).
    public static let codebooks = TrainedParameters(rawValue: 1)
    /// Row scales of the quantized linears.
    public static let scales = TrainedParameters(rawValue: 2)
    /// RMSNorm gains.
    public static let norms = TrainedParameters(rawValue: 4)
    /// The token embedding table and the head (one tensor when tied). Not quantized, so not
    /// in `.all`: end-to-end fine-tuning only, on request (AQLM's and PV-tuning's "update
    /// non-quantized parameters").
    public static let embeddings = TrainedParameters(rawValue: 8)
    public static let all: TrainedParameters = [.codebooks, .scales, .norms]
}

/// A decoder block under fine-tuning: the two RMSNorm gains and the quantized linears'
/// codebooks and scales are trainable; everything else (codes, linears left dense, biases) is
/// taken from `frozen` as is.
public struct TrainableBlock: Sendable {
    /// The block's frozen parts; its norms and quantized linears are stale and never read.
    public var frozen: LlamaBlock
    public var inputNorm: [Float]
    public var postAttentionNorm: [Float]
    public var quantized: [LlamaLinear: TrainableLinear]

    /// `codes` names the linears that are AQLM codes; any other linear of `block` stays frozen.
    public init(block: LlamaBlock, codes: [LlamaLinear: AdditiveCode], transform: CodebookTransform = .none) {
        for (linear, code) in codes {
            precondition(code.dOut == block[linear].outputSize && code.dIn == block[linear].inputSize,
                         "\(linear.rawValue): code shape [\(code.dOut), \(code.dIn)] does not match the block")
        }
        var frozen = block
        for linear in LlamaLinear.allCases where codes[linear] == nil {
            if let packed = block[linear] as? AQLMLinear {
                frozen[linear] = DenseLinear(weights: packed.dequantize(), outputSize: packed.outputSize, inputSize: packed.inputSize)
            }
            precondition(frozen[linear] is DenseLinear, "\(linear.rawValue): a frozen linear must be dense or AQLM")
        }
        self.frozen = frozen
        inputNorm = block.inputNorm
        postAttentionNorm = block.postAttentionNorm
        quantized = codes.mapValues { TrainableLinear($0, transform: transform) }
    }

    /// The block as the forward pass runs it: quantized linears materialised as dense Ŵ (the
    /// product the packed kernels compute, and the fastest on 512-token sequences).
    public func llamaBlock() -> LlamaBlock {
        var out = frozen
        out.inputNorm = inputNorm
        out.postAttentionNorm = postAttentionNorm
        for (linear, trainable) in quantized { out[linear] = trainable.denseLinear() }
        return out
    }

    /// The block as the packed file will hold it: codewords and scales rounded to fp16.
    public func roundedToFloat16() -> TrainableBlock {
        var out = self
        out.quantized = quantized.mapValues { $0.roundedToFloat16() }
        return out
    }

    /// Applies one optimizer update to every trained parameter, visiting them in a fixed order
    /// under stable names (`prefix` + "input_layernorm", + "q_proj.codebooks", ...).
    mutating func update(with gradients: BlockGradients, trained: TrainedParameters, prefix: String, optimizer: inout Adam) {
        if trained.contains(.norms) {
            optimizer.update(&inputNorm, gradient: gradients.inputNorm, name: prefix + "input_layernorm")
            optimizer.update(&postAttentionNorm, gradient: gradients.postAttentionNorm, name: prefix + "post_attention_layernorm")
        }
        for linear in LlamaLinear.allCases {
            guard var layer = quantized[linear], let gradient = gradients.linears[linear] else { continue }
            let name = prefix + linear.rawValue
            if trained.contains(.codebooks) {
                let (books, transform) = layer.parameterGradients(gradient)
                optimizer.update(&layer.codebooks, gradient: books, name: name + ".codebooks")
                if let transform {
                    optimizer.update(&layer.transform!, gradient: transform, name: name + ".codebook_transform")
                }
            }
            if trained.contains(.scales) {
                optimizer.update(&layer.scales, gradient: gradient.scales, name: name + ".scales")
            }
            quantized[linear] = layer
        }
    }
}

/// ∂L/∂(parameters) of one block, accumulated over the sequences of an optimizer step.
public struct BlockGradients: Sendable {
    public var inputNorm: [Float]
    public var postAttentionNorm: [Float]
    public var linears: [LlamaLinear: LinearGradient]

    public init(_ block: TrainableBlock, weightSums: WeightGradientSums = .none) {
        inputNorm = [Float](repeating: 0, count: block.inputNorm.count)
        postAttentionNorm = [Float](repeating: 0, count: block.postAttentionNorm.count)
        linears = block.quantized.mapValues { LinearGradient($0, weightSums: weightSums) }
    }

    public mutating func zero() {
        inputNorm.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        postAttentionNorm.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        for key in Array(linears.keys) { linears[key]!.zero() }
    }

    /// Multiplies every gradient by `factor` (averaging over a step's sequences).
    mutating func scale(by factor: Float) {
        func scaled(_ v: inout [Float]) { v.withUnsafeMutableBufferPointer { Kernels.scale($0.baseAddress!, by: factor, count: $0.count) } }
        scaled(&inputNorm)
        scaled(&postAttentionNorm)
        for key in Array(linears.keys) {
            scaled(&linears[key]!.codewords)
            scaled(&linears[key]!.scales)
        }
    }
}

extension TrainableBlock {
    /// Every trainable tensor under its stable name (`prefix` + "input_layernorm",
    /// + "self_attn.q_proj.codebooks", ".scales", ".codebook_transform"): the names Adam's
    /// moments and the resume checkpoint use.
    public func parameters(prefix: String) -> [String: [Float]] {
        var out = [prefix + "input_layernorm": inputNorm, prefix + "post_attention_layernorm": postAttentionNorm]
        for (linear, layer) in quantized {
            out[prefix + linear.rawValue + ".codebooks"] = layer.codebooks
            out[prefix + linear.rawValue + ".scales"] = layer.scales
            if let t = layer.transform { out[prefix + linear.rawValue + ".codebook_transform"] = t }
        }
        return out
    }

    /// Restores tensors saved by `parameters(prefix:)`; every one must be present with its size.
    public mutating func setParameters(_ values: [String: [Float]], prefix: String) throws {
        func take(_ name: String, count: Int) throws -> [Float] {
            guard let v = values[prefix + name], v.count == count else {
                throw FinetuneError("checkpoint lacks '\(prefix + name)' of \(count) floats")
            }
            return v
        }
        inputNorm = try take("input_layernorm", count: inputNorm.count)
        postAttentionNorm = try take("post_attention_layernorm", count: postAttentionNorm.count)
        for linear in Array(quantized.keys) {
            var layer = quantized[linear]!
            layer.codebooks = try take(linear.rawValue + ".codebooks", count: layer.codebooks.count)
            layer.scales = try take(linear.rawValue + ".scales", count: layer.scales.count)
            if let t = layer.transform { layer.transform = try take(linear.rawValue + ".codebook_transform", count: t.count) }
            quantized[linear] = layer
        }
    }
}
