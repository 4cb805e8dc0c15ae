import ArgumentParser
import Foundation
import Kernels
import QuantizePipeline
import Sweep

struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Quantize a model with each scheme, evaluate all against the original, and tabulate and plot the trade-off.",
        discussion: """
        For each scheme: quantize into OUT/models/<scheme> (with --preset/--samples/--calibration/--seed), \
        then perplexity (llama.cpp protocol) on --chunks chunks of --ctx tokens of --text, mean KL divergence \
        and same-top-1 against the original model on the same positions, and decode speed of the stored model. \
        Writes OUT/results.csv, results.json, results.md and tradeoff.svg. Rerunning the same command skips \
        finished schemes (OUT/results/<scheme>.json) and evaluates models that were quantized but not evaluated; \
        the tokenized texts and the original's reference log-probs are cached in OUT/cache.
        """
    )

    @Option(help: "Model to quantize: the alias smollm2-135m or qwen2.5-coder-0.5b, a GGUF file or a Hugging Face model directory.")
    var model = "smollm2-135m"

    @Option(help: "Comma-separated schemes: AQLM MxB[gG] (1x8, 2x8, 3x8, 4x8, 2x8g16, 1x16), rvqMxB, pqMxB, rtn2/3/4.")
    var schemes: String

    @Option(help: "Output directory (created; an existing sweep with the same settings is resumed).")
    var out: String

    @Option(help: "Evaluation text file.")
    var text = "../shared/data/wikitext-2/wiki.test.raw"

    @Option(help: "Chunks of the text to evaluate.")
    var chunks = 40

    @Option(help: "Tokens per chunk.")
    var ctx = 512

    @Option(help: "Quantization preset: fast, default, best.")
    var preset: QuantizeOptions.Preset = .default

    @Option(help: "Calibration sequences (default: the preset's).")
    var samples: Int?

    @Option(help: calibrationHelp)
    var calibration: String?

    @Option(help: "Block-wise fine-tuning epochs after each block is quantized (default: the preset's; 0: off).")
    var finetuneEpochs: Int?

    @Option(help: "Seed for calibration sampling and the quantizer.")
    var seed: UInt64 = 0

    @Option(help: "CSV of points measured by another tool (method,bits_per_weight,ppl,kld[,ppl_stderr][,top1][,note]), shown as external.")
    var reference: String?

    @Option(help: threadsHelp)
    var threads: Int?

    @Flag(help: "Print results.json's rows on stdout when done.")
    var json = false

    func options() throws -> SweepOptions {
        var o = SweepOptions(model: model, schemes: try SweepOptions.parseSchemes(schemes), outputDirectory: out)
        o.textPath = text
        o.chunks = chunks
        o.context = ctx
        o.quantize = QuantizeOptions.preset(preset)
        o.presetName = preset.rawValue
        if let samples { o.quantize.samples = samples }
        if let calibration { o.quantize.calibration = calibration }
        if let finetuneEpochs { o.quantize.finetune.epochs = finetuneEpochs }
        o.quantize.seed = seed
        o.referenceCSV = reference
        guard o.quantize.samples >= 1 else { throw ValidationError("--samples must be at least 1") }
        guard o.quantize.finetune.epochs >= 0 else { throw ValidationError("--finetune-epochs must not be negative") }
        return o
    }

    func run() throws {
        applyThreadsOption(threads)
        let started = Date()
        var sweep = Sweep(options: try options())
        sweep.log = { printError($0) }
        let outcome = try sweep.run()
        if json {
            print(ResultsTable(rows: outcome.rows).json().serialized(indent: nil))
        } else {
            print(String(format: "%d rows (%d quantized, %d evaluated in this run), %.0f s; wrote %@",
                         outcome.rows.count, outcome.quantized.count, outcome.evaluated.count,
                         Date().timeIntervalSince(started), outcome.outputFiles.joined(separator: ", ")))
        }
    }
}
