import Checkpoint
import Foundation
import Kernels
import PackedFormat
import Quantizer

/// Small models in every file format the parsers read, written by the project's own writers:
/// the seeds every harness starts from and the base directories the packed harness edits.
/// Sizes are minimal (1 layer, hidden 32) so that an input is a few kilobytes.
public enum SeedModels {
    /// TinyModel's vocabulary (256 byte tokens, 10 merges, one control token) on a smaller body.
    public static func config(architecture: String = "llama", tied: Bool = true, layers: Int = 1) -> LlamaConfig {
        LlamaConfig(architecture: architecture, vocabSize: TinyModel.tokenizer.tokens.count, hiddenSize: 32,
                    intermediateSize: 32, numLayers: layers, numHeads: 2, numKVHeads: 1, contextLength: 64,
                    ropeTheta: 10000, rmsNormEps: 1e-5, tiedEmbeddings: tied, attentionBias: architecture == "qwen2")
    }

    public static let configs: [(name: String, config: LlamaConfig)] = [
        ("llama-tied", config()), ("qwen2-untied", config(architecture: "qwen2", tied: false)),
        ("mistral-2layers", config(architecture: "mistral", layers: 2)),
    ]

    public static func weights(_ config: LlamaConfig, seed: UInt64 = 1) -> ModelWeights {
        TinyModel.weights(config: config, seed: seed)
    }

    /// GGUF files of the seed configs with matrices in a few GGML types.
    public static func ggufFiles() throws -> [(name: String, bytes: [UInt8])] {
        var out: [(String, [UInt8])] = []
        let types: [GGMLType] = [.f32, .f16, .q8_0, .q4_1, .q4_0, .bf16]
        for (i, (name, config)) in configs.enumerated() {
            for type in (i == 0 ? types : [.q8_0]) {
                let path = Scratch.path("seed.gguf")
                try weights(config).writeGGUF(to: path, weightType: type, name: "seed-\(name)")
                out.append(("\(name)-\(type.name).gguf", fileBytes(path)))
            }
        }
        return out
    }

    /// Hugging Face model directories (config.json, model.safetensors, tokenizer files) of the
    /// seed configs, one per safetensors dtype for the first.
    public static func huggingFaceDirectories() throws -> [(name: String, directory: String)] {
        var out: [(String, String)] = []
        for (i, (name, config)) in configs.enumerated() {
            for dtype in (i == 0 ? [SafeTensorsDType.f32, .f16, .bf16] : [.f16]) {
                let dir = Scratch.freshDirectory("seed-hf-\(name)-\(dtype.rawValue)")
                try HuggingFaceCheckpoint.write(weights(config), toDirectory: dir, dtype: dtype)
                out.append(("\(name)-\(dtype.rawValue)", dir))
            }
        }
        return out
    }

    /// The packed AQLM model of `config`: every block linear coded with `scheme` from seeded
    /// random codes (the file format is what is fuzzed, not the quality).
    public static func packedModel(_ config: LlamaConfig = config(), scheme: AQLMScheme) -> PackedModel {
        let w = weights(config)
        var rng = SeededRandom(seed: 12345)
        var linears: [String: AdditiveCode] = [:]
        var dense = w.tensors
        for l in 0..<config.numLayers {
            for name in LlamaConfig.linearNames(layer: l) {
                let shape = w[name + ".weight"].shape
                let (dOut, dIn) = (shape[0], shape[1])
                let codes = (0..<(dOut * dIn / scheme.groupSize * scheme.codebookCount)).map { _ in
                    UInt16(rng.next() % UInt64(scheme.codebookSize))
                }
                let codebooks = (0..<(scheme.codebookCount * scheme.codebookSize * scheme.groupSize)).map { _ in
                    Float(Int(rng.next() % 2001) - 1000) / 4000
                }
                linears[name] = AdditiveCode(scheme: scheme, dOut: dOut, dIn: dIn, codes: codes, codebooks: codebooks,
                                             scales: [Float](repeating: 1, count: dOut)).roundedToFloat16()
                dense[name + ".weight"] = nil
            }
        }
        return PackedModel(config: config, tokenizer: w.tokenizer, scheme: scheme, linears: linears,
                           dense: dense.mapValues { $0.roundedForPacking() })
    }

    /// A packed checkpoint directory written by `PackedCheckpoint.write` (the directory must not exist).
    public static func writePacked(_ model: PackedModel, name: String) throws -> String {
        let dir = Scratch.path(name)
        try? FileManager.default.removeItem(atPath: dir)
        try PackedCheckpoint.write(model, to: dir)
        return dir
    }

    /// The schemes of the packed seeds: small codebooks keep the files small.
    public static let packedSchemes: [(name: String, scheme: AQLMScheme)] = [
        ("2x4", AQLMScheme(codebookCount: 2, codeBits: 4, groupSize: 8)),
        ("1x8g4", AQLMScheme(codebookCount: 1, codeBits: 8, groupSize: 4)),
        ("1x6g16", AQLMScheme(codebookCount: 1, codeBits: 6, groupSize: 16)),
    ]
}
