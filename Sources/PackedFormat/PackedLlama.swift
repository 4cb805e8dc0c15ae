#if canImport(Glibc)
import Glibc
#endif
import Checkpoint
import Foundation
import Kernels
import Llama
import Quantizer

extension PackedModel {
    /// How `openModel` stores a packed model's embedding table and tied head unless asked
    /// otherwise: Q8_0, chosen by measurement (`aqlm bench`): it reads 30 MB per decoded token
    /// instead of 56 MB (F16) or 113 MB (Float32), and on SmolLM2-135M moves 8-chunk perplexity
    /// by 4e-8 relative (F16: 2e-5). F16 where the width is not a multiple of Q8_0's 32-value blocks.
    public static func defaultEmbeddingPrecision(hiddenSize: Int) -> EmbeddingPrecision {
        hiddenSize % q8BlockSize == 0 ? .q8 : .f16
    }

    /// The Llama model running straight from the codes: every quantized linear becomes an
    /// `AQLMLinear` (lookup-table decode, dequantize-tile prefill), so no block weight is ever
    /// expanded to Float32 as a whole. Linears left unquantized run dense. The embedding table
    /// (and the head, which a tied model reads from it) is stored at `embedding` precision
    /// (Float32 by default: exactly the checkpoint's values).
    public func llamaModel(embedding precision: EmbeddingPrecision = .f32) throws -> LlamaModel {
        let c = config
        func tensor(_ name: String) throws -> WeightTensor {
            guard let t = dense[name] else { throw PackedFormatError("packed model lacks tensor '\(name)'") }
            return t
        }
        func linear(_ name: String) throws -> any LinearOperator {
            if let code = linears[name] { return try code.kernelLayer(name: name) }
            let t = try tensor(name + ".weight")
            return DenseLinear(weights: t.values, outputSize: t.shape[0], inputSize: t.shape[1])
        }
        func table(_ name: String) throws -> EmbeddingTable {
            let t = try tensor(name)
            guard t.isMapped, precision != .f32 else {
                return try EmbeddingTable(values: t.values, rows: c.vocabSize, width: c.hiddenSize, precision: precision, name: name)
            }
            // Straight from the stored rows: no Float32 copy of the whole table on the way.
            return try EmbeddingTable(storedTensor: t, name: name).converted(to: precision, name: name)
        }
        let embedding = try table("model.embed_tokens.weight")
        return try assembleLlama(config: c, vector: { try tensor($0).values }, linear: linear, embedding: embedding,
                                 head: (c.tiedEmbeddings ? embedding : try table("lm_head.weight")).headLinear)
    }
}

extension PackedModel {
    /// The Float32 reference model (every quantized linear dequantized, the embedding table and
    /// tied head in Float32): with `.float32` each linear's Ŵ is held, with `.streamed` it is
    /// rebuilt from the codes into one shared scratch each time it is applied (the same bits).
    public func dequantizedLlamaModel(denseLinears: DenseLinearStorage, source: String) throws -> LlamaModel {
        guard denseLinears == .streamed else { return try LlamaModel(weights: dequantizedWeights(source: source)) }
        let c = config
        let scratch = ConversionScratch(capacity: LlamaModel.largestBlockLinearElements(c))
        func tensor(_ name: String) throws -> WeightTensor {
            guard let t = dense[name] else { throw PackedFormatError("packed model lacks tensor '\(name)'") }
            return t
        }
        func linear(_ name: String) throws -> any LinearOperator {
            if let code = linears[name] { return StreamedLinear(weight: code, scratch: scratch) }
            return StreamedLinear(weight: try tensor(name + ".weight"), scratch: scratch)
        }
        func table(_ name: String) throws -> EmbeddingTable {
            EmbeddingTable(float32: try tensor(name).values, rows: c.vocabSize, width: c.hiddenSize)
        }
        let embedding = try table("model.embed_tokens.weight")
        return try assembleLlama(config: c, vector: { try tensor($0).values }, linear: linear, embedding: embedding,
                                 head: (c.tiedEmbeddings ? embedding : try table("lm_head.weight")).headLinear)
    }
}

extension AdditiveCode: ConvertibleWeight {
    public var rowCount: Int { dOut }
    public var rowWidth: Int { dIn }
    public func readRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) { reconstructRows(range, into: out) }
    /// Codes stay in memory (they are what the model is): nothing to release.
    public func releasePages() {}
    public var storedByteCount: Int { Int(storageBits / 8) }
}

extension AdditiveCode {
    /// This layer as the fused-kernel operator.
    func kernelLayer(name: String) throws -> AQLMLinear {
        try AQLMLinear(codes: codes, codebooks: codebooks, scales: scales, outputSize: dOut, inputSize: dIn,
                       scheme: scheme, name: name)
    }
}

extension PackedCheckpoint {
    /// The runnable model straight from a packed checkpoint directory, one tensor at a time:
    /// each linear's codes go into the kernels' layout (`AQLMLinear`) before the next linear is
    /// read, the fp16 embedding goes into its table row by row (`embedding` precision, default
    /// `PackedModel.defaultEmbeddingPrecision`), and the file's pages are given back as they are
    /// consumed. Peak memory is the model plus one layer, where `read` + `llamaModel` also hold
    /// the whole checkpoint (codes as UInt16, embedding in Float32) and its mapped file.
    public static func readLlamaModel(directory: String, embedding: EmbeddingPrecision? = nil) throws
        -> (model: LlamaModel, tokenizer: TokenizerSpec, scheme: AQLMScheme) {
        let scheme = try codingScheme(directory: directory)
        let config = try HuggingFaceConfig(path: (directory as NSString).appendingPathComponent(HuggingFaceConfig.fileName)).llama
        let st = try SafeTensorsCheckpoint(directory: directory)
        let tokenizer = try HuggingFaceCheckpoint.tokenizer(directory: directory, config: config, checkpoint: st)
        let shapes = Dictionary(uniqueKeysWithValues: config.expectedShapes.map { ($0.0, $0.1) })

        func info(_ name: String) throws -> (SafeTensorInfo, SafeTensorsFile) {
            guard let info = st.info(name), let file = st.file(for: name) else {
                throw PackedFormatError("\(st.path): missing tensor '\(name)'")
            }
            if let shape = shapes[name], info.shape != shape {
                throw CheckpointError.shapeMismatch(file.path, tensor: name, expected: shape, found: info.shape)
            }
            return (info, file)
        }
        func vector(_ name: String) throws -> [Float] {
            let (info, file) = try info(name)
            defer { releaseMappedPages(file.rawBytes(info)) }
            return try file.floats(info)
        }
        func linear(_ base: String) throws -> any LinearOperator {
            let name = base + ".weight", shape = shapes[name] ?? []
            guard shape.count == 2 else { throw PackedFormatError("\(st.path): '\(name)' is not a linear layer of this model") }
            if st.info(name) != nil {
                let values = try vector(name)
                return DenseLinear(weights: values, outputSize: shape[0], inputSize: shape[1])
            }
            return try kernelLayer(base, dOut: shape[0], dIn: shape[1], scheme: scheme, info: info)
        }
        func table(_ name: String) throws -> EmbeddingTable {
            let (info, file) = try info(name)
            let bytes = file.rawBytes(info)
            defer { releaseMappedPages(bytes) }
            let precision = embedding ?? PackedModel.defaultEmbeddingPrecision(hiddenSize: config.hiddenSize)
            if info.dtype == .f16 {
                return try EmbeddingTable(float16Bytes: bytes, rows: config.vocabSize, width: config.hiddenSize,
                                          precision: precision, name: name, consumed: releaseMappedPages)
            }
            return try EmbeddingTable(values: try file.floats(info), rows: config.vocabSize, width: config.hiddenSize,
                                      precision: precision, name: name)
        }

        let embeddingTable = try table("model.embed_tokens.weight")
        let model = try assembleLlama(config: config, vector: vector, linear: linear, embedding: embeddingTable,
                                      head: (config.tiedEmbeddings ? embeddingTable : try table("lm_head.weight")).headLinear)
        return (model, tokenizer, scheme)
    }

    /// One quantized linear straight into the kernels' operator: the codes' low B bits (the
    /// index, whatever the int8/int16 container, as `readLinear`) copied from the file's bytes,
    /// codebooks and scales widened from fp16; then the file's pages of all three are released.
    private static func kernelLayer(_ base: String, dOut: Int, dIn: Int, scheme s: AQLMScheme,
                                    info: (String) throws -> (SafeTensorInfo, SafeTensorsFile)) throws -> AQLMLinear {
        let tensors = try [".codes", ".codebooks", ".scales"].map { try info(base + $0) }
        defer { for (i, file) in tensors { releaseMappedPages(file.rawBytes(i)) } }
        guard dIn % s.groupSize == 0 else {
            throw PackedFormatError("\(tensors[0].1.path): '\(base)' has d_in \(dIn), not a multiple of in_group_size \(s.groupSize)")
        }
        let expected = [[dOut, dIn / s.groupSize, s.codebookCount], [s.codebookCount, s.codebookSize, 1, s.groupSize], [dOut, 1, 1, 1]]
        for ((i, file), shape) in zip(tensors, expected) where i.shape != shape {
            throw CheckpointError.shapeMismatch(file.path, tensor: i.name, expected: shape, found: i.shape)
        }
        let (codeInfo, codeFile) = tensors[0]
        let raw = codeFile.rawBytes(codeInfo)
        let mask = UInt16((1 << s.codeBits) - 1)
        let codes: [UInt16]
        switch codeInfo.dtype {
        case .i8: codes = raw.map { UInt16($0) & mask }
        case .i16:
            codes = (0..<(raw.count / 2)).map { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) & mask }
        default:
            throw PackedFormatError("\(codeFile.path): '\(codeInfo.name)' has dtype \(codeInfo.dtype.rawValue), expected I8 or I16")
        }
        return try AQLMLinear(codes: codes, codebooks: try tensors[1].1.floats(tensors[1].0), scales: try tensors[2].1.floats(tensors[2].0),
                              outputSize: dOut, inputSize: dIn, scheme: s, name: base)
    }

    /// quantization_config's scheme, validated as `read` validates it.
    static func codingScheme(directory: String) throws -> AQLMScheme {
        let q = try quantizationSummary(directory: directory)
        let configPath = (directory as NSString).appendingPathComponent(HuggingFaceConfig.fileName)
        guard q.method == "aqlm" else {
            throw PackedFormatError("\(configPath): quantization_config.quant_method is '\(q.method)', not \"aqlm\"")
        }
        // Each layout we do not run is refused naming its field, before any tensor is read.
        func refuse(_ key: String, _ value: Int, _ supported: String) -> PackedFormatError {
            PackedFormatError("\(configPath): quantization_config.\(key) \(value) is not supported (\(supported))")
        }
        guard q.outGroupSize == 1 else { throw refuse("out_group_size", q.outGroupSize, "only 1: each code covers one output row") }
        guard q.nbitsPerCodebook <= 16 else { throw refuse("nbits_per_codebook", q.nbitsPerCodebook, "1...16: int8/int16 codes") }
        guard q.numCodebooks <= 8 else { throw refuse("num_codebooks", q.numCodebooks, "1...8") }
        guard AQLMScheme.supportedGroupSizes.contains(q.inGroupSize) else {
            throw refuse("in_group_size", q.inGroupSize, "one of \(AQLMScheme.supportedGroupSizes.map(String.init).joined(separator: ", "))")
        }
        do {
            return try AQLMScheme.validated(codebookCount: q.numCodebooks, codeBits: q.nbitsPerCodebook, groupSize: q.inGroupSize)
        } catch let e as QuantizerError {
            throw PackedFormatError("\(configPath): \(e.description)")
        }
    }
}

/// The Llama model from its parts: `vector(name)` gives a norm or bias, `linear(base)` a block
/// linear (name without `.weight`); blocks are built in order, so a reader may stream them.
private func assembleLlama(config c: LlamaConfig, vector: (String) throws -> [Float],
                           linear: (String) throws -> any LinearOperator, embedding: EmbeddingTable,
                           head: any LinearOperator) throws -> LlamaModel {
    let layers = try (0..<c.numLayers).map { l -> LlamaBlock in
        let p = "model.layers.\(l)."
        return LlamaBlock(
            inputNorm: try vector(p + "input_layernorm.weight"),
            postAttentionNorm: try vector(p + "post_attention_layernorm.weight"),
            q: try linear(p + LlamaLinear.q.rawValue), k: try linear(p + LlamaLinear.k.rawValue),
            v: try linear(p + LlamaLinear.v.rawValue), o: try linear(p + LlamaLinear.o.rawValue),
            gate: try linear(p + LlamaLinear.gate.rawValue), up: try linear(p + LlamaLinear.up.rawValue),
            down: try linear(p + LlamaLinear.down.rawValue),
            qBias: c.attentionBias ? try vector(p + "self_attn.q_proj.bias") : nil,
            kBias: c.attentionBias ? try vector(p + "self_attn.k_proj.bias") : nil,
            vBias: c.attentionBias ? try vector(p + "self_attn.v_proj.bias") : nil)
    }
    return LlamaModel(config: c, embeddingTable: embedding, finalNorm: try vector("model.norm.weight"), layers: layers,
                      head: head)
}
