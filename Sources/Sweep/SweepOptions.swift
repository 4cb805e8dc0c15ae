import Checkpoint
import QuantizePipeline

/// What `aqlm sweep` is told. `quantize` carries calibration and search settings for every
/// scheme (its `choice` is replaced per scheme).
public struct SweepOptions: Sendable {
    public var model: String
    public var schemes: [QuantizationChoice]
    public var outputDirectory: String
    /// Evaluation text, tokenized whole.
    public var textPath = "../shared/data/wikitext-2/wiki.test.raw"
    public var chunks = 40
    public var context = 512
    /// Log-probs kept per position of the original's reference distribution (for KLD).
    public var topK = 32
    public var quantize = QuantizeOptions.preset(.default)
    /// Preset name, recorded in sweep.json and results.md.
    public var presetName = "default"
    public var referenceCSV: String?
    /// Decode speed: tokens decoded after a prompt of `benchmarkPrompt` tokens, best of
    /// `benchmarkRepetitions` runs (the machine is shared; the minimum is the least disturbed).
    public var benchmarkPrompt = 16
    public var benchmarkDecode = 64
    public var benchmarkRepetitions = 3

    public init(model: String, schemes: [QuantizationChoice], outputDirectory: String) {
        self.model = model
        self.schemes = schemes
        self.outputDirectory = outputDirectory
    }

    /// "rtn2, 2x8,pq2x8" -> choices in order; an empty list, an unknown scheme or a repeat is an error.
    public static func parseSchemes(_ list: String) throws -> [QuantizationChoice] {
        var choices: [QuantizationChoice] = []
        for item in list.split(separator: ",") {
            let name = item.trimmingCharacters(in: .whitespaces)
            if name.isEmpty { continue }
            let choice: QuantizationChoice
            do {
                choice = try QuantizationChoice(parsing: name)
            } catch {
                throw SweepError("--schemes: \(error)")
            }
            guard !choices.contains(choice) else { throw SweepError("--schemes: \(choice) is listed twice") }
            choices.append(choice)
        }
        guard !choices.isEmpty else { throw SweepError("--schemes: no scheme given (e.g. rtn2,rvq2x8,pq2x8,2x8)") }
        return choices
    }

    /// Checks the numbers before any work.
    public func validate() throws {
        guard !schemes.isEmpty else { throw SweepError("--schemes: no scheme given") }
        guard chunks >= 1 else { throw SweepError("--chunks \(chunks): must be at least 1") }
        guard context >= 2 else { throw SweepError("--ctx \(context): must be at least 2") }
        guard topK >= 1 else { throw SweepError("top-k \(topK): must be at least 1") }
        guard benchmarkPrompt >= 1, benchmarkDecode >= 1, benchmarkRepetitions >= 1 else {
            throw SweepError("decode benchmark: prompt, decode tokens and repetitions must be at least 1")
        }
    }

    /// Everything a finished scheme's figures depend on besides the scheme itself. A sweep
    /// directory made with other settings is refused rather than silently mixed.
    var settings: JSONValue {
        let a = quantize.aqlm
        // Fine-tuning targets only matter with fine-tuning on (sweeps without it keep their old settings).
        let targets: [(String, JSONValue)] = quantize.finetune.epochs > 0
            ? [("finetune_targets", .string(quantize.finetuneTargets.rawValue))] : []
        return .object([
            ("model", .string(ModelPaths.resolve(model))),
            ("text", .string(textPath)),
            ("chunks", .int(chunks)),
            ("ctx", .int(context)),
            ("top_k", .int(topK)),
            ("preset", .string(presetName)),
            ("calibration", .string(quantize.calibration)),
            ("samples", .int(quantize.samples)),
            ("seqlen", .int(quantize.sequenceLength)),
            ("seed", .number(String(quantize.seed))),
            ("beam", .int(a.beamSize)),
            ("max_iterations", .int(a.maxIterations)),
            ("tolerance", .double(Double(a.tolerance))),
            ("kmeans_iterations", .int(a.kmeansIterations)),
            ("finetune_epochs", .int(quantize.finetune.epochs)),
            ("block_limit", quantize.blockLimit.map(JSONValue.int) ?? .null),
        ] + targets)
    }
}
