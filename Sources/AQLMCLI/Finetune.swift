import ArgumentParser
import Calibration
import Finetune
import Foundation
import Kernels

/// The error a V step re-encodes codes under.
enum CodeObjective: String, ExpressibleByArgument, CaseIterable {
    case xtx, plain
}

extension CodeSelection: ExpressibleByArgument {}

struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune a packed AQLM model's codebooks, scales and norms end to end against the original model.",
        discussion: """
        Every codebook, row scale and RMSNorm gain is trained (Adam: the P steps) to minimise \
        KL(teacher ‖ student) over next-token distributions on calibration text (the teacher's top-k \
        tokens plus one merged outcome for the rest). Progress is saved in OUT.work/ (after each epoch \
        and every --save-every steps): rerunning the same command after an interruption continues \
        from there. The output (a packed checkpoint with finetune.json) appears only when complete. \
        The codes move too (PV-tuning's V steps; --code-fraction 0 freezes them): every --code-every \
        steps, each quantized linear's codes in a --code-fraction of its groups are re-encoded by beam \
        search (which groups, and toward what, is --code-select; by default the straight-through step, \
        shrinking on a cosine). The held-out sequences (--val-samples) share \
        no token with the training sequences nor with the quantizer's calibration windows for the same \
        seed. A frozen embedding table and head stay in the checkpoint's fp16.
        """
    )

    @Option(help: "Packed AQLM checkpoint directory to fine-tune (the output of aqlm quantize).")
    var model: String

    @Option(help: "The original model: the alias smollm2-135m or qwen2.5-coder-0.5b, a GGUF file or a Hugging Face model directory.")
    var teacher: String

    @Option(help: "Output directory (must not exist).")
    var out: String

    @Option(help: calibrationHelp)
    var calibration = CalibrationSource.defaultName

    @Option(help: "Calibration sequences; the first are the windows `aqlm quantize` drew with the same text and seed.")
    var samples = ModelFinetuneOptions().samples

    @Option(help: "Tokens per calibration sequence.")
    var seqlen = ModelFinetuneOptions().sequenceLength

    @Option(help: "Passes over the calibration sequences.")
    var epochs = ModelFinetuneOptions().epochs

    @Option(help: "Adam learning rate.")
    var lr = ModelFinetuneOptions().adam.learningRate

    @Option(help: "Learning-rate schedule over the run: constant, or cosine (from --lr down to 0 at the last step).")
    var lrSchedule: LearningRateSchedule = ModelFinetuneOptions().schedule

    @Option(help: "Sequences per Adam step.")
    var batch = ModelFinetuneOptions().sequencesPerStep

    @Option(help: "Sequences held out to pick the best epoch (0: keep the last); drawn where they overlap no training or quantizer calibration window.")
    var valSamples = ModelFinetuneOptions().validationSamples

    @Option(help: "Teacher tokens kept per position; the rest count as one outcome.")
    var teacherTopK = ModelFinetuneOptions().teacherTopK

    @Option(help: "Share α of the training loss that is the cross-entropy of the calibration text's own next token, the rest being distillation from the teacher (0: distillation alone). Held-out losses stay pure distillation.")
    var hardLabelWeight = ModelFinetuneOptions().hardLabelWeight

    @Option(help: "Codebook parameterisation while training: none, or linear (SimVQ: each codebook times a learned g×g matrix).")
    var codebookTransform: CodebookTransform = .none

    @Flag(help: "Also train the token embedding table and the head (tied: one tensor), which are not quantized; stored as fp16 like the input's. Off by default.")
    var trainEmbeddings = false

    @Option(help: "PV-tuning V steps: fraction τ of each linear's code groups re-encoded per V step, chosen by --code-select (0: codes stay frozen). They keep 4 bytes of Float32 state per quantized weight, 12 with straight-through; a run whose state would exceed --dense-memory is refused.")
    var codeFraction = ModelFinetuneOptions().codeUpdate.fraction

    @Option(help: "V step size η. movement and gain: the largest move of one weight toward which codes are re-encoded, in units of its row's RMS. straight-through: the norm of each Adam step of the continuous copy B, relative to ‖B‖ (the published recipe's code lr 1e-2 with LAMB).")
    var codeStep = ModelFinetuneOptions().codeUpdate.stepSize

    @Option(help: "Adam steps between V steps (each epoch also ends with one); saves of OUT.work/ wait for the end of a V window.")
    var codeEvery = ModelFinetuneOptions().codeUpdate.everySteps

    @Option(help: "Beam width of the V steps' code search.")
    var codeBeam = ModelFinetuneOptions().codeUpdate.beamSize

    @Option(help: "Error the V steps re-encode under: xtx (activation-weighted, XᵀX of the window's inputs) or plain.")
    var codeObjective: CodeObjective = ModelFinetuneOptions().codeUpdate.activationWeighted ? .xtx : .plain

    @Option(help: "How a V step picks what it changes: movement (the groups the normalised step moves most, re-encoded by beam search toward the stepped weights) gain (per group the single code change with the most negative predicted loss change G·δ + (L/2)δᵀH_jjδ, G the raw mean gradient; the --code-fraction best of those), or straight-through (PV-tuning's straight-through buffers: a continuous copy B of every quantized weight trained by Adam and never reset, the --code-fraction groups farthest from B re-encoded toward it; kept in OUT.work/, 8 bytes per weight).")
    var codeSelect: CodeSelection = ModelFinetuneOptions().codeUpdate.selection

    @Option(help: "V step size and subspace over the run: constant, or cosine (η and τ both shrink like a cosine learning rate, to 0 at the last step).")
    var codeSchedule: LearningRateSchedule = ModelFinetuneOptions().codeUpdate.schedule

    @Option(help: "Skip an Adam step (parameters and moments unchanged, logged) whose largest |gradient| is above this or not finite: one spike would otherwise fill Adam's second moments and stall training for the rest of the run. Normal steps stay below ~10.")
    var skipGradientAbove: Float = ModelFinetuneOptions().skipGradientAbove

    @Option(help: "Adam steps between saves of OUT.work/ (with V steps: the first point after that where no V window is open; epoch ends are always saved).")
    var saveEvery = ModelFinetuneOptions().saveEverySteps

    @Option(help: "Adam steps between held-out losses printed during an epoch, to follow a run (0: at epoch ends only; the best epoch is picked at epoch ends either way).")
    var validateEvery = ModelFinetuneOptions().validateEverySteps

    @Option(help: "Seed for calibration sampling and the order of sequences.")
    var seed: UInt64 = 0

    @Option(help: threadsHelp)
    var threads: Int?

    @Option(help: denseMemoryHelp)
    var denseMemory: Double?

    @Flag(help: "Print finetune.json (calibration, samples, losses, best epoch, steps, times, teacher_dense_linears, student_dense_linears) as one JSON object when done.")
    var json = false

    func options() throws -> ModelFinetuneOptions {
        var o = ModelFinetuneOptions()
        o.calibration = calibration
        o.samples = samples
        o.sequenceLength = seqlen
        o.epochs = epochs
        o.adam.learningRate = lr
        o.schedule = lrSchedule
        o.sequencesPerStep = batch
        o.validationSamples = valSamples
        o.teacherTopK = teacherTopK
        o.hardLabelWeight = hardLabelWeight
        o.codebookTransform = codebookTransform
        if trainEmbeddings { o.trained.insert(.embeddings) }
        o.saveEverySteps = saveEvery
        o.validateEverySteps = validateEvery
        o.skipGradientAbove = skipGradientAbove
        o.seed = seed
        o.codeUpdate.fraction = codeFraction
        o.codeUpdate.stepSize = codeStep
        o.codeUpdate.everySteps = codeEvery
        o.codeUpdate.beamSize = codeBeam
        o.codeUpdate.activationWeighted = codeObjective == .xtx
        o.codeUpdate.selection = codeSelect
        o.codeUpdate.schedule = codeSchedule
        o.denseMemoryBudget = try denseMemoryBudget(denseMemory)
        guard saveEvery >= 1 else { throw ValidationError("--save-every must be at least 1") }
        guard validateEvery >= 0 else { throw ValidationError("--validate-every must be 0 or more") }
        guard skipGradientAbove > 0 else { throw ValidationError("--skip-gradient-above must be positive") }
        return o
    }

    func run() throws {
        applyThreadsOption(threads)
        var job = ModelFinetuning(studentPath: model, teacherPath: teacher, outputPath: out, options: try options())
        job.log = { printError($0) }
        guard let report = try job.run() else { return }
        if json {
            print(report.json.serialized(indent: nil))
        } else {
            let before = report.validationLoss.first.map { String(format: "%.5f", $0) } ?? "-"
            let after = report.validationLoss.count > report.bestEpoch
                ? String(format: "%.5f", report.validationLoss[report.bestEpoch]) : "-"
            print(String(format: "wrote %@: validation KL %@ -> %@ (epoch %d of %d), %d steps, %.0f s (teacher %.0f s)",
                         out, before, after, report.bestEpoch, report.trainingLoss.count, report.steps,
                         report.wallSeconds, report.teacherSeconds))
        }
    }
}
