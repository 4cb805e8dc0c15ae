import Checkpoint
import Kernels
import Quantizer

/// A model whose block linears are AQLM codes: what `aqlm quantize` writes and every reader
/// path (`perplexity`, `generate`, `inspect`, `bench`) opens.
public struct PackedModel: Sendable {
    public var config: LlamaConfig
    public var tokenizer: TokenizerSpec
    public var scheme: AQLMScheme
    /// Quantized linears by layer name without the `.weight` suffix
    /// (`model.layers.0.self_attn.q_proj`).
    public var linears: [String: AdditiveCode]
    /// Everything kept in floating point: embeddings, norms, the head, and any linear left
    /// unquantized, in Hugging Face naming with `.weight`.
    public var dense: [String: WeightTensor]

    public init(config: LlamaConfig, tokenizer: TokenizerSpec, scheme: AQLMScheme,
                linears: [String: AdditiveCode], dense: [String: WeightTensor]) {
        self.config = config
        self.tokenizer = tokenizer
        self.scheme = scheme
        self.linears = linears
        self.dense = dense
    }

    /// Every block linear's name (without `.weight`) in forward order.
    public var blockLinearNames: [String] {
        (0..<config.numLayers).flatMap { LlamaConfig.linearNames(layer: $0) }
    }

    /// All weights as Float32 (quantized linears dequantized): the exact weights the packed
    /// kernels compute with, for the dense reference path and for tests.
    public func dequantizedWeights(source: String) throws -> ModelWeights {
        var tensors = dense
        for (name, code) in linears {
            tensors[name + ".weight"] = WeightTensor(shape: [code.dOut, code.dIn], values: code.dequantized())
        }
        let weights = ModelWeights(config: config, tokenizer: tokenizer, tensors: tensors, source: source)
        try weights.validate()
        return weights
    }

    /// Storage accounting (the file's own precisions: codes at B bits, codebooks and scales
    /// at 16 bits, everything else at its stored width).
    public var bitsPerWeightOfQuantizedLinears: Double {
        let (bits, params) = linears.values.reduce((0.0, 0)) { acc, c in
            (acc.0 + c.storageBits, acc.1 + c.dOut * c.dIn)
        }
        return params > 0 ? bits / Double(params) : 0
    }
}

extension AdditiveCode {
    /// Bits this layer occupies in the packed file: B-bit codes, fp16 codebooks, fp16 scales.
    public var storageBits: Double { scheme.storageBits(dOut: dOut, dIn: dIn) }
}

extension AQLMScheme {
    /// Bits a [dOut, dIn] layer in this scheme occupies in the packed file.
    public func storageBits(dOut: Int, dIn: Int) -> Double {
        let codeBits = Double(dOut * (dIn / groupSize) * codebookCount * codeBits)
        let codebookBits = Double(codebookCount * codebookSize * groupSize * 16)
        return codeBits + codebookBits + Double(dOut * 16)
    }
}

extension AdditiveCode {
    /// The same code with codebooks and scales rounded to fp16, exactly what the packed file
    /// stores: quantize with this before reporting errors so the report describes the file.
    public func roundedToFloat16() -> AdditiveCode {
        var copy = self
        copy.codebooks = codebooks.map { halfToFloat(floatToHalf($0)) }
        copy.scales = scales.map { halfToFloat(floatToHalf($0)) }
        return copy
    }
}

extension WeightTensor {
    /// The tensor as the packed file stores it (matrices fp16, vectors fp32).
    public func roundedForPacking() -> WeightTensor {
        shape.count == 1 ? self : WeightTensor(shape: shape, values: values.map { halfToFloat(floatToHalf($0)) })
    }
}
