import Calibration
import Finetune
import Kernels
import Quantizer

/// What to do to each block linear: AQLM or one of the baselines the sweep compares it with.
public enum QuantizationChoice: Hashable, Sendable, CustomStringConvertible {
    case aqlm(AQLMScheme)
    /// Residual VQ: AQLM's residual k-means initialisation alone.
    case rvq(AQLMScheme)
    /// Product quantization: M codebooks over disjoint slices of each group.
    case pq(AQLMScheme)
    /// Scalar round-to-nearest, per-group fp16 scale and minimum (group 64).
    case rtn(bits: Int)

    /// "2x8", "1x16", "2x8g16" (AQLM); "rvq2x8", "pq2x8"; "rtn2", "rtn3", "rtn4".
    public init(parsing text: String) throws {
        let t = text.lowercased()
        if t.hasPrefix("rtn") {
            guard let bits = Int(t.dropFirst(3)), (2...8).contains(bits) else {
                throw QuantizerError("scheme '\(text)': rtn needs a bit width 2...8, e.g. rtn2")
            }
            self = .rtn(bits: bits)
        } else if t.hasPrefix("rvq") {
            self = .rvq(try AQLMScheme(parsing: String(t.dropFirst(3))))
        } else if t.hasPrefix("pq") {
            self = .pq(try AQLMScheme(parsing: String(t.dropFirst(2))))
        } else {
            do {
                self = .aqlm(try AQLMScheme(parsing: t))
            } catch {
                throw QuantizerError("unknown scheme '\(text)' (AQLM: MxB or MxBgG such as 2x8, 1x16, 2x8g16; baselines: rvq2x8, pq2x8, rtn2, rtn3, rtn4)")
            }
        }
    }

    public var description: String {
        func name(_ s: AQLMScheme) -> String {
            "\(s.codebookCount)x\(s.codeBits)" + (s.groupSize == 8 ? "" : "g\(s.groupSize)")
        }
        switch self {
        case .aqlm(let s): return name(s)
        case .rvq(let s): return "rvq" + name(s)
        case .pq(let s): return "pq" + name(s)
        case .rtn(let bits): return "rtn\(bits)"
        }
    }

    /// The additive scheme, when the result is stored as AQLM codes.
    public var additiveScheme: AQLMScheme? {
        switch self {
        case .aqlm(let s), .rvq(let s), .pq(let s): return s
        case .rtn: return nil
        }
    }

    /// Whether codes are chosen against calibration activations (RTN needs none).
    public var needsCalibration: Bool {
        if case .rtn = self { return false }
        return true
    }
}

/// Everything `aqlm quantize` can be told. Presets bundle calibration size and search effort;
/// explicitly given values override them.
public struct QuantizeOptions: Sendable {
    public var choice: QuantizationChoice = .aqlm(.preset2x8)
    /// Calibration registry name or text file.
    public var calibration = CalibrationSource.defaultName
    /// The whole `calibration` text already tokenized (a sweep tokenizes it once for all its
    /// schemes); nil: read and tokenize the file. Sequences are sampled from it as from the file.
    public var calibrationTokens: [Int]?
    /// 192 rather than AQLM's 128: with the mixed default text, 128 windows would give WikiText only
    /// ~85 of them (BENCHMARKS, issue 14: 2:1 mixed with 192 ties WikiText alone with 128 on WikiText
    /// after both stages). End-to-end fine-tuning's first 192 windows are these same ones.
    public var samples = 192
    public var sequenceLength = 512
    public var seed: UInt64 = 0
    public var aqlm = AQLMOptions()
    /// Blocks to quantize (nil: all). Lets tests and experiments work on a slice of the model.
    public var blockLimit: Int?
    /// Block-wise fine-tuning of each quantized block's codebooks, scales and norms against the
    /// full-precision block's outputs (`finetune.epochs` 0 turns it off).
    public var finetune = BlockFinetuneOptions()
    /// What each quantized block is fine-tuned to reproduce. Measured on SmolLM2-135M, 2x8,
    /// first 100 test chunks: fp-chain 45.55 (KLD 0.597) against local 47.64 (0.620), and
    /// 37.25 (0.463) against 37.88 (0.471) after the default end-to-end fine-tuning; 1.09x the
    /// time of local on the first 8 blocks.
    public var finetuneTargets: BlockFinetuneTargets = .fullPrecisionChain
    /// Weights each token's error in o_proj and down_proj (the linears that write into the
    /// residual stream) by 1/ms(h_t), h_t the block's output for that token: the next RMSNorm
    /// divides the residual by its RMS, so that is the error's first-order effect downstream.
    /// Why: the first positions of a window carry massive activations (SmolLM2: 88 % of
    /// block 11's down_proj XᵀX energy sits at position 0 of the windows, 73 % in block 28), so
    /// plain XᵀX fits those few tokens, whose residual is then so large that its exact value
    /// hardly matters after normalisation, and ignores the rest.
    public var residualNormWeighting = false
    /// Above this many bytes, the calibration activations (two or three sets of samples ×
    /// sequence length × hidden Float32) are kept in files of the work directory instead of
    /// memory, read one sequence at a time; the results are the same. 2 GB keeps them in memory
    /// for the 0.5B model at the default calibration (0.7 GB) and puts an 8B model's (3.2 GB) in
    /// files.
    public var activationMemoryLimit = 2_000_000_000

    public init() {}

    public enum Preset: String, Sendable, CaseIterable {
        case fast, `default`, best
    }

    /// fast: a couple of minutes for the default model (the demo); default: the measured
    /// quality/time balance; best: quality first.
    public static func preset(_ p: Preset) -> QuantizeOptions {
        var o = QuantizeOptions()
        switch p {
        case .fast:
            o.samples = 32
            o.aqlm.beamSize = 1
            o.aqlm.maxIterations = 2
            o.aqlm.kmeansIterations = 6
        case .default:
            // OA-EM start: on SmolLM2-135M 2x8 (whole model, seed 0) block-wise PPL 44.26 against
            // 46.50 on WikiText and 53.24 against 58.54 on the unseen licence texts (BENCHMARKS,
            // issue 14); the fast preset keeps product k-means (EM rounds would be a larger share
            // of its short search).
            o.aqlm.initialization = .outputAwareEM
        case .best:
            o.aqlm.initialization = .outputAwareEM
            o.samples = 256
            o.aqlm.beamSize = 16
            o.aqlm.maxIterations = 20
            o.aqlm.tolerance = 0.001
            o.aqlm.kmeansIterations = 20
        }
        return o
    }
}

/// The outputs block-wise fine-tuning asks a quantized block to reproduce.
public enum BlockFinetuneTargets: String, Sendable, CaseIterable {
    /// The full-precision block applied to the same (quantized-prefix) inputs, as AQLM does:
    /// each block is judged on its own error alone.
    case local
    /// The full-precision model's own hidden states after the block (the full-precision
    /// prefix's activations). The quantized block then also learns to undo the error the
    /// quantized blocks before it left in its inputs; costs one more full-precision block pass
    /// and one more set of calibration activations (memory and work directory).
    case fullPrecisionChain = "fp-chain"
}
