import Foundation

/// A tiny random Llama model for fast tests of everything downstream of the reader (forward
/// pass, quantizer, packed format): 2 layers, hidden 64, 4 heads of 16, 2 KV heads, feed-forward
/// 128, tied embeddings, and a byte-level BPE vocabulary of the 256 byte tokens, a few merges and
/// one control token. Weights are drawn from a seeded generator, so a seed names one model.
public enum TinyModel {
    public static let config = LlamaConfig(
        architecture: "llama", vocabSize: tokenizer.tokens.count, hiddenSize: 64, intermediateSize: 128,
        numLayers: 2, numHeads: 4, numKVHeads: 2, contextLength: 128, ropeTheta: 10000,
        rmsNormEps: 1e-5, tiedEmbeddings: true)

    /// Merges, highest priority first, in the GPT-2 byte alphabet ("Ġ" is the space byte).
    public static let merges = ["Ġ t", "h e", "Ġt he", "i n", "e r", "a n", "Ġ a", "o n", "r e", "in g"]

    /// Ids 0..<256 are the byte tokens (id = byte value), then one token per merge in merge
    /// order, then `<|endoftext|>` (control; BOS and EOS; not added automatically).
    public static let tokenizer: TokenizerSpec = {
        let bytes = (0..<256).map { String(gpt2ByteCharacter(UInt8($0))) }
        let merged = merges.map { $0.replacingOccurrences(of: " ", with: "") }
        let special = "<|endoftext|>"
        let tokens = bytes + merged + [special]
        return TokenizerSpec(
            tokens: tokens, merges: merges,
            tokenTypes: Array(repeating: 1, count: tokens.count - 1) + [3],
            preTokenizer: "smollm", bosId: tokens.count - 1, eosId: tokens.count - 1, addBOS: false)
    }()

    /// Random weights in Hugging Face order for `config` (any Llama-family config whose
    /// vocabulary size is `tokenizer.tokens.count`): embeddings N(0, 0.1²), matrices
    /// N(0, 1/fan_in), norm weights 1 + N(0, 0.1²), biases N(0, 0.1²). Tensors are drawn in
    /// `config.expectedShapes` order.
    public static func weights<R: RandomNumberGenerator>(config: LlamaConfig = config, using rng: inout R) -> ModelWeights {
        precondition(config.vocabSize == tokenizer.tokens.count, "TinyModel: vocabSize must be \(tokenizer.tokens.count)")
        var tensors: [String: WeightTensor] = [:]
        for (name, shape) in config.expectedShapes {
            let std: Float, mean: Float
            if name.hasSuffix("embed_tokens.weight") || name.hasSuffix("lm_head.weight") {
                (mean, std) = (0, 0.1)
            } else if shape.count == 2 {
                (mean, std) = (0, 1 / Float(shape[1]).squareRoot())
            } else if name.hasSuffix("norm.weight") {
                (mean, std) = (1, 0.1)
            } else {
                (mean, std) = (0, 0.1)
            }
            let values = (0..<shape.reduce(1, *)).map { _ in mean + std * gaussian(&rng) }
            tensors[name] = WeightTensor(shape: shape, values: values)
        }
        return ModelWeights(config: config, tokenizer: tokenizer, tensors: tensors, source: "tiny model")
    }

    /// `weights(config:using:)` with a SplitMix64 generator seeded by `seed`.
    public static func weights(config: LlamaConfig = config, seed: UInt64) -> ModelWeights {
        var rng = SplitMix64(seed: seed)
        return weights(config: config, using: &rng)
    }

    /// Writes `weights(config:seed:)` as a GGUF file (matrices as `weightType`: F32, F16, BF16,
    /// Q8_0, Q4_0 or Q4_1) and returns those weights, before any encoding loss.
    @discardableResult
    public static func writeGGUF(to path: String, seed: UInt64, weightType: GGMLType = .f32,
                                 config: LlamaConfig = config) throws -> ModelWeights {
        let model = weights(config: config, seed: seed)
        try model.writeGGUF(to: path, weightType: weightType, name: "tiny-llama-\(seed)")
        return model
    }

    /// Standard normal from the top 53 bits of two draws (Box-Muller), identical on every platform.
    static func gaussian<R: RandomNumberGenerator>(_ rng: inout R) -> Float {
        let scale = 1.0 / 9_007_199_254_740_992.0
        let u1 = max(Double(rng.next() >> 11) * scale, 1e-300)
        let u2 = Double(rng.next() >> 11) * scale
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// GPT-2's byte -> printable character map: printable Latin-1 bytes map to themselves, the
    /// other 68 bytes (controls, space, 0x7f-0xa0, 0xad) to U+0100 onwards in byte order.
    static func gpt2ByteCharacter(_ b: UInt8) -> Character {
        let printable = (0x21...0x7e).contains(b) || (0xa1...0xac).contains(b) || (0xae...0xff).contains(b)
        if printable { return Character(Unicode.Scalar(b)) }
        let rank = (0..<Int(b)).filter { byte in
            !((0x21...0x7e).contains(byte) || (0xa1...0xac).contains(byte) || (0xae...0xff).contains(byte))
        }.count
        return Character(Unicode.Scalar(UInt32(256 + rank))!)
    }
}

/// SplitMix64 (Steele et al. 2014), only so that Checkpoint needs no dependency on Kernels:
/// callers with Kernels' SeededRandom pass it to `TinyModel.weights(using:)` instead.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
