import ArgumentParser
import Foundation
import Finetune
import Kernels
import QuantizePipeline
import Quantizer

extension QuantizeOptions.Preset: ExpressibleByArgument {}
extension CodebookTransform: ExpressibleByArgument {}
extension LearningRateSchedule: ExpressibleByArgument {}
extension BlockFinetuneTargets: ExpressibleByArgument {}
extension AQLMInitialization: ExpressibleByArgument {}

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Quantize a model's block linears with AQLM (or a baseline) and write a packed checkpoint.",
        discussion: """
        Blocks are quantized in order against XᵀX of calibration activations that already passed \
        through the earlier quantized blocks. Each finished block is saved in OUT.work/, so rerunning \
        the same command after an interruption continues after the last finished block. The output \
        directory (Hugging Face AQLM layout, with report.json) appears only when complete.
        """
    )

    @Option(help: "Model to quantize: the alias smollm2-135m or qwen2.5-coder-0.5b, a GGUF file or a Hugging Face model directory.")
    var model = "smollm2-135m"

    @Option(help: "Output directory (must not exist).")
    var out: String

    @Option(help: "Scheme: AQLM MxB or MxBgG (2x8, 1x8, 3x8, 4x8, 1x16, 2x8g16) or a baseline (rvq2x8, pq2x8, rtn2, rtn3, rtn4).")
    var scheme = "2x8"

    @Option(help: "Bundle of calibration size and search effort: fast (the demo), default, best.")
    var preset: QuantizeOptions.Preset = .default

    @Option(help: calibrationHelp)
    var calibration: String?

    @Option(help: "Calibration sequences (preset: fast 32, default 192, best 256).")
    var samples: Int?

    @Option(help: "Tokens per calibration sequence.")
    var seqlen: Int?

    @Option(help: "Beam width of the code search (1 = greedy coordinate descent).")
    var beam: Int?

    @Option(help: "Stop alternating once an iteration improves the layer objective by less than this fraction.")
    var tol: Double?

    @Option(help: "Most alternations of code search and codebook/scale updates per layer.")
    var maxIters: Int?

    @Option(help: "Lloyd iterations of the k-means initialisation.")
    var kmeansIters: Int?

    @Option(name: .customLong("init"), help: "How codes and codebooks start: product (k-means per slice, diag(XᵀX)-weighted), residual (the paper's greedy residual k-means) or oa-em (product, then EM rounds under the g×g blocks of XᵀX over all codebooks jointly). Default: oa-em with the default and best presets, product with fast. A work directory started before oa-em became the default resumes with --init product.")
    var initialization: AQLMInitialization?

    @Option(help: "Most EM rounds of --init oa-em.")
    var emIters: Int?

    @Option(help: "Seed for calibration sampling, k-means seeding and group orders.")
    var seed: UInt64 = 0

    @Option(help: "Quantize only the first N blocks (the rest stay full precision): for experiments and tests.")
    var blocks: Int?

    @Option(help: "Block-wise fine-tuning epochs over the calibration set after each block is quantized (0: off).")
    var finetuneEpochs: Int?

    @Option(help: "Adam learning rate of block-wise fine-tuning.")
    var finetuneLr: Float?

    @Option(help: "Learning-rate schedule of block-wise fine-tuning: constant, or cosine (from --finetune-lr down to 0 over the epochs).")
    var finetuneLrSchedule: LearningRateSchedule?

    @Option(help: "What block-wise fine-tuning matches: fp-chain (the default: the full-precision model's own activations after the block, so each block also learns to undo earlier blocks' error; one more set of calibration activations in memory) or local (the full-precision block on the same inputs, as the AQLM reference does).")
    var finetuneTargets: BlockFinetuneTargets?

    @Flag(help: "Weight each token's error in o_proj and down_proj by 1/ms of the block's output for that token (the next RMSNorm's scale), so the few positions with massive activations do not own the objective (SmolLM2: 88 % of block 11's down_proj XᵀX sits at position 0).")
    var residualWeighting = false

    @Option(help: "Calibration sequences per Adam step of block-wise fine-tuning.")
    var finetuneBatch: Int?

    @Option(help: "Training sequences per block-wise fine-tuning epoch, a fresh random subset each epoch (default: all).")
    var finetuneSequences: Int?

    @Option(help: "Calibration sequences held out to pick the best fine-tuning epoch (0: keep the last).")
    var valSamples: Int?

    @Option(help: "Codebook parameterisation while fine-tuning: none, or linear (SimVQ: each codebook times a learned g×g matrix).")
    var codebookTransform: CodebookTransform?

    @Option(help: """
        Gigabytes of calibration activations held in memory; above it they go to files in OUT.work, read one \
        sequence at a time (same results). Default 2.
        """)
    var activationMemory: Double?

    @Option(help: threadsHelp)
    var threads: Int?

    @Flag(help: """
        Print report.json's totals as one JSON object when done: scheme, model, output, calibration (the --calibration given; empty for rtn), samples, seqlen, seed, beam, \
        bits_per_weight, model_bits_per_weight, quantized_parameters, other_parameters, other_bytes, file_bytes, \
        wall_seconds, peak_rss_bytes, calibration_activation_bytes (calibration activations: in memory, or in files above --activation-memory), block_output_errors (and block_output_errors_finetuned when blocks are fine-tuned).
        """)
    var json = false

    func options() throws -> QuantizeOptions {
        var o = QuantizeOptions.preset(preset)
        do {
            o.choice = try QuantizationChoice(parsing: scheme)
        } catch {
            throw ValidationError("--scheme: \(error)")
        }
        if let calibration { o.calibration = calibration }
        if let samples { o.samples = samples }
        if let seqlen { o.sequenceLength = seqlen }
        if let beam { o.aqlm.beamSize = beam }
        if let tol { o.aqlm.tolerance = tol }
        if let maxIters { o.aqlm.maxIterations = maxIters }
        if let kmeansIters { o.aqlm.kmeansIterations = kmeansIters }
        if let initialization { o.aqlm.initialization = initialization }
        if let emIters {
            guard emIters >= 0 else { throw ValidationError("--em-iters must not be negative") }
            o.aqlm.emIterations = emIters
        }
        o.seed = seed
        o.blockLimit = blocks
        if let finetuneEpochs { o.finetune.epochs = finetuneEpochs }
        if let finetuneLr { o.finetune.adam.learningRate = finetuneLr }
        if let finetuneLrSchedule { o.finetune.schedule = finetuneLrSchedule }
        if let finetuneTargets { o.finetuneTargets = finetuneTargets }
        o.residualNormWeighting = residualWeighting
        if let finetuneBatch { o.finetune.sequencesPerStep = finetuneBatch }
        if let finetuneSequences { o.finetune.sequencesPerEpoch = finetuneSequences }
        if let valSamples { o.finetune.validationSamples = valSamples }
        if let codebookTransform { o.finetune.codebookTransform = codebookTransform }
        if let activationMemory {
            guard activationMemory >= 0, activationMemory.isFinite else {
                throw ValidationError("--activation-memory \(activationMemory): must be a number of gigabytes ≥ 0")
            }
            o.activationMemoryLimit = Int(activationMemory * 1e9)
        }
        guard o.samples >= 1 else { throw ValidationError("--samples must be at least 1") }
        guard o.finetune.epochs >= 0 else { throw ValidationError("--finetune-epochs must not be negative") }
        guard o.finetune.adam.learningRate > 0 else { throw ValidationError("--finetune-lr must be positive") }
        guard o.finetune.sequencesPerStep >= 1 else { throw ValidationError("--finetune-batch must be at least 1") }
        guard (o.finetune.sequencesPerEpoch ?? 1) >= 1 else { throw ValidationError("--finetune-sequences must be at least 1") }
        guard o.finetune.validationSamples >= 0 else { throw ValidationError("--val-samples must not be negative") }
        if o.finetune.epochs > 0, o.finetune.validationSamples >= o.samples {
            throw ValidationError("--val-samples \(o.finetune.validationSamples) leaves none of the \(o.samples) calibration sequences to fine-tune on")
        }
        guard o.sequenceLength >= 2 else { throw ValidationError("--seqlen must be at least 2") }
        guard o.aqlm.beamSize >= 1 else { throw ValidationError("--beam must be at least 1") }
        guard o.aqlm.maxIterations >= 0 else { throw ValidationError("--max-iters must not be negative") }
        if let blocks, blocks < 1 { throw ValidationError("--blocks must be at least 1") }
        return o
    }

    func run() throws {
        applyThreadsOption(threads)
        var job = BlockwiseQuantization(modelPath: model, outputPath: out, options: try options())
        job.log = { printError($0) }
        let report = try job.run()
        if json {
            print(report.totalsJSON.serialized(indent: nil))
        } else {
            print(String(format: "wrote %@: %@, %.3f bits/weight on block linears (%.3f over the model), %.0f s, peak RSS %.0f MB",
                         out, report.scheme, report.bitsPerWeight, report.modelBitsPerWeight, report.wallSeconds,
                         Double(report.peakRSSBytes) / 1e6))
        }
    }
}
