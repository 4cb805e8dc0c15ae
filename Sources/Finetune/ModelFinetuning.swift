import Foundation
import Calibration
import Checkpoint
import Evaluation
import Kernels
import Llama
import PackedFormat

/// Settings of end-to-end fine-tuning (AQLM §3.4's global fine-tuning, as knowledge
/// distillation from the full-precision model).
public struct ModelFinetuneOptions: Sendable {
    /// Calibration registry name or text file.
    public var calibration = CalibrationSource.defaultName
    /// One pass over 576 windows rather than three over 192: the same number of Adam steps on three
    /// times the windows. SmolLM2-135M 2x8 after the default quantization (BENCHMARKS, session 12):
    /// KLD 0.4562 -> 0.4444 on WikiText test, 0.657 -> 0.649 on licence texts, 0.760 -> 0.754 on
    /// Macbeth, none of which calibration sees; 1.3x the CPU (the teacher's pass over more windows).
    /// The first 192 windows are the quantizer's own (same seed), so the held-out ones avoid both.
    public var samples = 576
    public var sequenceLength = 512
    /// With lr 2e-4 (constant): earlier, on 128 windows, 3 epochs beat 1 (37.88 against 40.85 at lr
    /// 1e-4, the held-out KL still falling); with 576 windows one pass has as many steps as that.
    public var epochs = 1
    public var adam = AdamOptions(learningRate: 2e-4)
    /// How the rate moves from `adam.learningRate` over the run's steps.
    public var schedule: LearningRateSchedule = .constant
    /// Sequences whose gradients are averaged into one Adam step.
    public var sequencesPerStep = 4
    /// Sequences held out (the last ones) to pick the best epoch; 0 keeps the last epoch.
    public var validationSamples = 4
    /// Teacher tokens kept per position (the rest are one merged outcome).
    public var teacherTopK = 64
    /// Share α of the training loss that is the cross-entropy of the calibration text's own next
    /// token, the rest being the distillation loss (0: distillation alone). Held-out losses stay
    /// pure distillation, so runs with any α compare on them.
    public var hardLabelWeight: Float = 0
    /// Seeds calibration sampling and the order of sequences in each epoch.
    public var seed: UInt64 = 0
    /// Adding `.embeddings` (SmolLM2-135M 2x8, defaults otherwise) lowered the held-out
    /// calibration KL 0.343 -> 0.301 but not the test PPL (38.03 against 37.25): off by default.
    public var trained: TrainedParameters = .all
    public var codebookTransform: CodebookTransform = .none
    /// Optimizer steps between saves of the work directory (epoch ends are always saved).
    public var saveEverySteps = 8
    /// Optimizer steps between held-out losses printed during an epoch (0: at epoch ends only).
    /// Printed only: the best epoch is still picked at epoch ends, so a run's result does not
    /// depend on it.
    public var validateEverySteps = 0
    /// Stop (saving the work directory, writing no output) once this many optimizer steps are
    /// done in total: lets tests interrupt a run, and long runs be done in time-boxed parts.
    /// With V steps on, the stop waits for the end of the current V-step window.
    public var stopAfterSteps: Int?
    /// PV-tuning's V steps (code updates between the Adam steps); off when `fraction` is 0.
    public var codeUpdate = CodeUpdateOptions.recommended
    /// Bytes the block linears may hold as Float32: the teacher's (above: streamed from the
    /// stored type, the same targets; see `openModel(denseMemoryBudget:)`) and the student's
    /// dequantized ones (above: each block converted again when used, `PreparedBlocks`).
    public var denseMemoryBudget = DenseLinearStorage.defaultBudgetBytes
    /// An Adam step whose largest |∂L/∂θ| is above this (or not finite) is skipped: parameters
    /// and moments stay as they were. One such step (Qwen2.5-Coder-0.5B 2x8, step 30 of the
    /// defaults: 8e21 against 2-6 on every other step) put every parameter's m near 1e16 and v
    /// near 1e36 (or ∞), so for ~1,600 steps each update was the spike's sign and no real
    /// gradient registered; the held-out KL went from 0.273 to 0.425 in the next epoch.
    /// Normal steps' largest magnitudes: 0.2-6 on both models.
    public var skipGradientAbove: Float = 1e6

    public init() {}
}

/// What end-to-end fine-tuning did, also written as `finetune.json` into the output.
public struct ModelFinetuneReport: Sendable {
    public var student: String
    public var teacher: String
    public var output: String
    /// The calibration text as given: a registry name or a path.
    public var calibration: String
    public var samples: Int
    public var sequenceLength: Int
    public var teacherTopK: Int
    /// `ModelFinetuneOptions.hardLabelWeight`.
    public var hardLabelWeight: Float = 0
    /// Mean training loss per token of each epoch (distillation, mixed with the hard-label
    /// cross-entropy when `hardLabelWeight` > 0), measured while training.
    public var trainingLoss: [Double]
    /// Mean distillation loss per token on the held-out sequences: before training, then after each epoch.
    public var validationLoss: [Double]
    public var bestEpoch: Int
    public var steps: Int
    /// Fraction of all codes changed by the V steps of each epoch (empty without V steps).
    public var codesChanged: [Double] = []
    /// V steps run (a window whose every Adam step was skipped as a gradient spike runs none).
    public var codeUpdates = 0
    public var teacherSeconds: Double
    /// How the teacher's block linears were held ("float32", "streamed"), nil when its targets
    /// were read back from the work directory (or it is a packed model run through its kernels).
    public var teacherDenseLinears: String?
    /// How the student's dequantized block linears were held during training ("float32": all
    /// blocks at once, "streamed": one block at a time).
    public var studentDenseLinears: String?
    public var wallSeconds: Double
    /// CPU time of the process (all threads) over the run.
    public var cpuSeconds: Double

    public var json: JSONValue {
        .object([
            ("student", .string(student)), ("teacher", .string(teacher)), ("output", .string(output)),
            ("calibration", .string(calibration)), ("samples", .int(samples)), ("seqlen", .int(sequenceLength)), ("teacher_top_k", .int(teacherTopK)),
            ("hard_label_weight", .double(Double(hardLabelWeight))),
            ("training_loss", .array(trainingLoss.map(JSONValue.double))),
            ("validation_loss", .array(validationLoss.map(JSONValue.double))),
            ("best_epoch", .int(bestEpoch)), ("steps", .int(steps)),
            ("codes_changed", .array(codesChanged.map(JSONValue.double))), ("code_updates", .int(codeUpdates)),
            ("teacher_seconds", .double(teacherSeconds)),
            ("teacher_dense_linears", teacherDenseLinears.map(JSONValue.string) ?? .null),
            ("student_dense_linears", studentDenseLinears.map(JSONValue.string) ?? .null), ("wall_seconds", .double(wallSeconds)),
            ("cpu_seconds", .double(cpuSeconds)),
        ])
    }
}

/// End-to-end fine-tuning of a packed AQLM model: with codes frozen, every codebook, scale and
/// norm gain is trained to minimise KL(teacher ‖ student) over next-token distributions on
/// calibration text (teacher top-k + tail, see `distillationStep`), backpropagating through the
/// head and all blocks. The teacher's targets are computed once and kept in `OUT.work/`
/// together with the parameters, Adam's moments and the position in the run (saved every
/// `saveEverySteps` steps and after each epoch), so rerunning the same command after an
/// interruption continues where it stopped and ends with the same result. The output, a packed
/// checkpoint, is written atomically.
public struct ModelFinetuning {
    public let studentPath: String
    public let teacherPath: String
    public let outputPath: String
    public let options: ModelFinetuneOptions
    public var log: (String) -> Void = { _ in }

    public init(studentPath: String, teacherPath: String, outputPath: String, options: ModelFinetuneOptions) {
        self.studentPath = studentPath
        self.teacherPath = teacherPath
        self.outputPath = outputPath
        self.options = options
    }

    /// Trains and writes the output; nil when `stopAfterSteps` stopped it first.
    public func run() throws -> ModelFinetuneReport? {
        let started = Date(), startedCPU = processCPUSeconds()
        let o = options
        guard !FileManager.default.fileExists(atPath: outputPath) else {
            throw FinetuneError("output \(outputPath) already exists; choose another path or remove it")
        }
        try validate()
        let studentDirectory = ModelPaths.resolve(studentPath)
        guard PackedCheckpoint.isPacked(directory: studentDirectory) else {
            throw FinetuneError("--model \(studentPath): not a packed AQLM checkpoint directory")
        }
        let packed = try PackedCheckpoint.read(directory: studentDirectory)
        try checkCodeUpdateMemory(quantizedWeights: packed.linears.values.reduce(0) { $0 + $1.dOut * $1.dIn })
        let sequences = try loadCalibrationSequences(o.calibration, tokenizer: packed.tokenizer, samples: o.samples,
                                                     length: o.sequenceLength, heldOut: o.validationSamples, seed: o.seed)
        let work = FinetuneWorkDirectory(output: outputPath, fingerprint: fingerprint(), teacherFingerprint: teacherFingerprint())
        let teacherClock = Date()
        let (teacher, teacherDenseLinears) = try teacherTargets(sequences: sequences, config: packed.config, work: work)
        let teacherSeconds = Date().timeIntervalSince(teacherClock)

        let student = try TrainableModel(packed: packed, transform: o.codebookTransform,
                                         trainsEmbeddings: o.trained.contains(.embeddings))
        var trainer = try ModelTrainer(model: student, sequences: sequences,
                                       teacher: teacher, options: o, work: work, log: log)
        guard try trainer.train() else {
            log("stopped after \(trainer.optimizer.step) steps; rerun the same command to continue from \(work.path)")
            return nil
        }
        var report = ModelFinetuneReport(
            student: studentDirectory, teacher: teacherPath, output: outputPath, calibration: o.calibration,
            samples: o.samples, sequenceLength: o.sequenceLength, teacherTopK: teacher.k, trainingLoss: trainer.trainingLoss,
            validationLoss: trainer.validationLoss, bestEpoch: trainer.bestEpoch, steps: trainer.optimizer.step,
            codesChanged: trainer.codesChanged, codeUpdates: trainer.codeUpdates, teacherSeconds: teacherSeconds,
            teacherDenseLinears: teacherDenseLinears?.rawValue,
            studentDenseLinears: DenseLinearStorage.choose(for: packed.config, budgetBytes: o.denseMemoryBudget).rawValue,
            wallSeconds: Date().timeIntervalSince(started),
            cpuSeconds: processCPUSeconds() - startedCPU)
        report.hardLabelWeight = o.hardLabelWeight
        try PackedCheckpoint.write(trainer.best.packedModel(), to: outputPath, extraFiles: ["finetune.json": report.json])
        work.remove()
        return report
    }

    func validate() throws {
        let o = options
        guard o.samples >= 1, o.sequenceLength >= 2 else { throw FinetuneError("--samples must be ≥ 1 and the sequence length ≥ 2") }
        guard o.epochs >= 0 else { throw FinetuneError("--epochs must not be negative") }
        guard o.adam.learningRate > 0 else { throw FinetuneError("--lr must be positive") }
        guard o.sequencesPerStep >= 1 else { throw FinetuneError("--batch must be at least 1") }
        guard o.teacherTopK >= 1 else { throw FinetuneError("--teacher-top-k must be at least 1") }
        guard (0...1).contains(o.hardLabelWeight) else {
            throw FinetuneError("--hard-label-weight \(o.hardLabelWeight) is outside 0...1")
        }
        let v = o.codeUpdate
        guard v.fraction >= 0, v.fraction <= 1 else { throw FinetuneError("--code-fraction must be in [0, 1]") }
        guard v.stepSize > 0, v.stepSize.isFinite else { throw FinetuneError("--code-step must be positive") }
        guard v.everySteps >= 1 else { throw FinetuneError("--code-every must be at least 1") }
        guard v.beamSize >= 1 else { throw FinetuneError("--code-beam must be at least 1") }
        guard o.validationSamples >= 0, o.validationSamples < o.samples else {
            throw FinetuneError("--val-samples \(o.validationSamples) leaves none of the \(o.samples) calibration sequences to train on")
        }
    }

    /// V steps keep Float32 state per quantized weight: the window's ∂L/∂Ŵ sums (4 bytes), and
    /// with the straight-through step its buffers B and their second moments (8 more): 1.3 GB
    /// for SmolLM2-135M, 4.3 GB for Qwen2.5-0.5B, 84 GB for an 8B model. Above the dense
    /// memory budget the run is refused before the teacher's pass rather than swapping or
    /// being killed hours in.
    func checkCodeUpdateMemory(quantizedWeights: Int) throws {
        let v = options.codeUpdate
        guard v.enabled else { return }
        let bytesPerWeight = v.selection == .straightThrough ? 12 : 4
        let bytes = quantizedWeights * bytesPerWeight
        guard bytes <= options.denseMemoryBudget else {
            throw FinetuneError(String(format: "--code-fraction: the V steps would keep %.1f GB of Float32 state (%d bytes per quantized weight), above --dense-memory's %.1f GB; pass --code-fraction 0 to fine-tune with frozen codes, or raise --dense-memory",
                                       Double(bytes) / 1e9, bytesPerWeight, Double(options.denseMemoryBudget) / 1e9))
        }
    }

    /// What the teacher's targets depend on (they can be reused by runs differing otherwise).
    func teacherFingerprint() -> String {
        let o = options
        // "disjoint": held-out sequences drawn apart from the training ones (work from before
        // that, with other held-out sequences, is not reused).
        return [teacherPath, o.calibration, String(o.samples), String(o.sequenceLength), String(o.seed),
                String(o.teacherTopK), "disjoint", String(o.validationSamples)].joined(separator: "|")
    }

    /// Everything that changes the result: a work directory from other settings is refused.
    func fingerprint() -> String {
        let o = options
        return [studentPath, teacherPath, o.calibration, String(o.samples), String(o.sequenceLength), String(o.epochs),
                String(o.adam.learningRate), String(o.adam.beta1), String(o.adam.beta2), String(o.adam.epsilon),
                String(o.sequencesPerStep), String(o.validationSamples), String(o.teacherTopK), String(o.seed),
                String(o.trained.rawValue), o.codebookTransform.rawValue, o.schedule.rawValue, "disjoint"]
            .joined(separator: "|") + (o.codeUpdate.enabled ? "|" + o.codeUpdate.fingerprint : "")
            + (o.hardLabelWeight > 0 ? "|hard \(o.hardLabelWeight)" : "")
    }

    /// The teacher's targets: from the work directory, or computed (and saved there); and how
    /// the teacher's block linears were held when it ran.
    func teacherTargets(sequences: [[Int]], config: LlamaConfig, work: FinetuneWorkDirectory) throws
        -> (targets: TeacherTargets, denseLinears: DenseLinearStorage?) {
        if let saved = try work.loadTeacher() { return (saved, nil) }
        let teacher = try openModel(teacherPath, denseMemoryBudget: options.denseMemoryBudget).model
        if teacher.denseLinears.storage != nil { log("teacher " + teacher.denseLinears.description) }
        guard teacher.config.vocabSize == config.vocabSize, teacher.config.hiddenSize == config.hiddenSize,
              teacher.config.numLayers == config.numLayers else {
            throw FinetuneError("--teacher \(teacherPath) has a different shape than --model \(studentPath)")
        }
        guard options.teacherTopK <= config.vocabSize else {
            throw FinetuneError("--teacher-top-k \(options.teacherTopK) exceeds the vocabulary of \(config.vocabSize) tokens")
        }
        let clock = Date(), cpu = processCPUSeconds()
        let partial = try work.loadTeacher(partial: true)
        if let partial { log("teacher: continuing after \(partial.positions / max(options.sequenceLength, 1)) saved sequences") }
        let targets = try TeacherTargets.compute(teacher: teacher, sequences: sequences, k: options.teacherTopK,
                                                 continuing: partial) { done, soFar in
            // Saved every 64 sequences (a few minutes on Qwen2.5-0.5B), so that an interruption
            // costs at most that much of the pass.
            if done % 64 == 0, done < sequences.count { try work.saveTeacher(soFar, partial: true) }
            if done % 16 == 0 || done == sequences.count {
                // The peak so far is the teacher phase's (the student is not built yet).
                log(String(format: "teacher: %d/%d sequences, %.0f s (%.0f CPU s), peak RSS %.0f MB", done, sequences.count,
                           Date().timeIntervalSince(clock), processCPUSeconds() - cpu, Double(peakResidentBytes() ?? 0) / 1e6))
            }
        }
        try work.saveTeacher(targets)
        return (targets, teacher.denseLinears.storage)
    }
}

/// The optimisation loop of `ModelFinetuning`, with its resumable state.
struct ModelTrainer {
    var model: TrainableModel
    /// The parameters of the best epoch so far (by validation loss).
    var best: TrainableModel
    let sequences: [[Int]]
    let teacher: TeacherTargets
    let options: ModelFinetuneOptions
    let work: FinetuneWorkDirectory
    let log: (String) -> Void
    var optimizer: Adam
    var epoch = 0
    /// Optimizer steps done in the current epoch.
    var stepInEpoch = 0
    var epochLoss = 0.0
    var trainingLoss: [Double] = []
    var validationLoss: [Double] = []
    var bestEpoch = 0
    /// Fraction of codes changed by the V steps of each finished epoch, and of the current one.
    var codesChanged: [Double] = []
    var epochCodesChanged = 0
    /// V steps done in total (seeds each one's search order).
    var codeUpdates = 0
    /// The continuous weights the codes follow, with `CodeSelection.straightThrough`.
    var straightThrough: StraightThroughCodes?
    let workspace: ModelWorkspace

    init(model: TrainableModel, sequences: [[Int]], teacher: TeacherTargets, options: ModelFinetuneOptions,
         work: FinetuneWorkDirectory, log: @escaping (String) -> Void) throws {
        self.model = model
        best = model
        self.sequences = sequences
        self.teacher = teacher
        self.options = options
        self.work = work
        self.log = log
        optimizer = Adam(options: options.adam, schedule: options.schedule)
        workspace = ModelWorkspace(config: model.config, tokens: options.sequenceLength)
        optimizer.totalSteps = options.epochs * stepsPerEpoch
        if options.codeUpdate.enabled, options.codeUpdate.selection == .straightThrough {
            straightThrough = StraightThroughCodes(model)
        }
        if try !work.restore(into: &self) {
            let v = validation(model)
            validationLoss = v.map { [$0] } ?? []
            if let v { log(String(format: "validation loss before fine-tuning: %.5f", v)) }
        }
    }

    var trainCount: Int { sequences.count - options.validationSamples }
    var stepsPerEpoch: Int { (trainCount + options.sequencesPerStep - 1) / options.sequencesPerStep }

    /// The order of the training sequences in `epoch` (a function of seed and epoch only, so a
    /// resumed run visits them in the same order).
    func order(epoch: Int) -> [Int] {
        var rng = SeededRandom(seed: options.seed &+ 0x9E37_79B9_7F4A_7C15 &* UInt64(epoch + 1))
        var order = Array(0..<trainCount)
        order.shuffle(using: &rng)
        return order
    }

    /// Mean loss per token on the held-out sequences (nil without any).
    /// `prepared`: `model`'s blocks when the caller has them at hand (else prepared here).
    func validation(_ model: TrainableModel, prepared: PreparedBlocks? = nil) -> Double? {
        guard options.validationSamples > 0 else { return nil }
        let prepared = prepared ?? PreparedBlocks(model.blocks, config: model.config, budgetBytes: options.denseMemoryBudget)
        var total = 0.0
        for s in trainCount..<sequences.count {
            total += model.sequenceLoss(sequences[s], teacher: teacherRows(s), prepared: prepared, workspace: workspace, gradientScale: nil)
        }
        return total / Double(options.validationSamples * options.sequenceLength)
    }

    func teacherRows(_ s: Int) -> TeacherTargets {
        teacher.rows((s * options.sequenceLength)..<((s + 1) * options.sequenceLength))
    }

    /// Runs the remaining epochs; false when stopped by `stopAfterSteps`.
    mutating func train() throws -> Bool {
        let perStep = options.sequencesPerStep, length = options.sequenceLength
        let pv = options.codeUpdate
        var gradients = ModelGradients(model, weightSums: WeightGradientSums(pv))
        // The window (gradient sums and XᵀX since the last V step) is never saved: saves and
        // stops happen only where it is empty, right after a V step.
        func emptyWindow() -> CodeUpdateWindow { CodeUpdateWindow(config: model.config, collectsInputs: pv.activationWeighted) }
        var window: CodeUpdateWindow? = pv.enabled ? emptyWindow() : nil
        while epoch < options.epochs {
            let order = order(epoch: epoch)
            let steps = stepsPerEpoch
            var prepared = PreparedBlocks(model.blocks, config: model.config, budgetBytes: options.denseMemoryBudget)
            let clock = Date(), cpu = processCPUSeconds(), firstStep = stepInEpoch
            var largestSinceLog: Float = 0
            var savedAtStep = optimizer.step
            while stepInEpoch < steps {
                if let stop = options.stopAfterSteps, optimizer.step >= stop, (window?.sequences ?? 0) == 0 {
                    try work.save(self)
                    return false
                }
                let batch = order[(stepInEpoch * perStep)..<min((stepInEpoch + 1) * perStep, order.count)]
                Threads.adjustToLoad()
                gradients.zero()
                let scale = 1 / Float(batch.count * length)
                for s in batch {
                    epochLoss += gradients.withHeadGradient {
                        model.sequenceLoss(sequences[s], teacher: teacherRows(s), prepared: prepared, workspace: workspace,
                                           gradientScale: scale, headGradient: $0, hardLabelWeight: options.hardLabelWeight)
                    }
                    // XᵀX from the step's first sequence: enough tokens per window for a
                    // damped metric at a few percent of the step's cost.
                    if s == batch.first { window?.addInputs(workspace.activations) }
                    window?.sequences += 1
                    model.backward(sequences[s], prepared: prepared, workspace: workspace, gradients: &gradients)
                }
                let largest = gradients.largestMagnitude
                largestSinceLog = max(largestSinceLog, largest)
                let stepTaken = largest <= options.skipGradientAbove
                if stepTaken {
                    optimizer.beginStep()
                    model.update(with: gradients, trained: options.trained, optimizer: &optimizer)
                } else {
                    // The V window's ∂L/∂Ŵ sums hold the spike too: they start again, and so
                    // does the count of steps they average over.
                    clearWeightGradients(&gradients)
                    window?.steps = 0
                    log("skipped a step: gradient spike, largest |∂L/∂θ| \(largest) (sequences \(Array(batch)))")
                }
                stepInEpoch += 1
                if stepTaken { window?.steps += 1 }
                let windowEnds = (stepTaken && optimizer.step % pv.everySteps == 0) || stepInEpoch == steps
                if let full = window, windowEnds {
                    // A window left with no step's gradient (a spike skipped at its end) has
                    // nothing to follow: a V step on empty sums would still decay the
                    // straight-through moments and re-encode toward stale targets.
                    if full.steps > 0 { updateCodes(gradients: &gradients, window: full) }
                    else { log("no V step: every Adam step of its window was skipped") }
                    window = emptyWindow()
                }
                prepared = PreparedBlocks(model.blocks, config: model.config, budgetBytes: options.denseMemoryBudget)
                if stepInEpoch % 4 == 0 || stepInEpoch == steps {
                    let done = Double(stepInEpoch - firstStep)
                    log(String(format: "epoch %d step %d/%d: loss %.5f, %.1f s/step (%.1f CPU s), largest |g| %.3g", epoch + 1,
                               stepInEpoch, steps, epochLoss / Double(min(stepInEpoch * perStep, order.count) * length),
                               Date().timeIntervalSince(clock) / done, (processCPUSeconds() - cpu) / done, Double(largestSinceLog)))
                    largestSinceLog = 0
                }
                if options.validateEverySteps > 0, stepInEpoch < steps, stepTaken,
                   optimizer.step % options.validateEverySteps == 0, let v = validation(model, prepared: prepared) {
                    log(String(format: "step %d: validation loss %.5f", optimizer.step, v))
                }
                // Saves only where the V window is empty, and at most every `saveEverySteps`
                // Adam steps: with a V step after every Adam step a save per step would write
                // the whole state (~1 GB on SmolLM2, most of it straight-through buffers) each time.
                let savePoint = window == nil ? stepTaken : windowEnds
                if stepInEpoch < steps, savePoint, optimizer.step - savedAtStep >= options.saveEverySteps {
                    try work.save(self)
                    savedAtStep = optimizer.step
                }
            }
            finishEpoch(trainingLoss: epochLoss / Double(order.count * length))
            try work.save(self)
        }
        if options.validationSamples == 0 { best = model }
        return true
    }

    /// Empties the V steps' ∂L/∂Ŵ sums of every linear.
    func clearWeightGradients(_ gradients: inout ModelGradients) {
        for l in gradients.blocks.indices {
            for key in Array(gradients.blocks[l].linears.keys) { gradients.blocks[l].linears[key]!.clearWeightGradient() }
        }
    }

    /// One V step from the window, then empties it.
    mutating func updateCodes(gradients: inout ModelGradients, window: CodeUpdateWindow) {
        let clock = Date()
        let seed = options.seed &+ UInt64(codeUpdates + 1) &* 0xD1B5_4A32_D192_ED03
        let settings = options.codeUpdate.scheduled(step: optimizer.step, total: optimizer.totalSteps)
        let outcome: CodeUpdateOutcome
        if straightThrough != nil {
            outcome = model.updateCodes(following: &straightThrough!, gradients: gradients, window: window,
                                        stepsInWindow: window.steps, options: settings, seed: seed)
        } else {
            outcome = model.updateCodes(gradients: gradients, window: window, options: settings, seed: seed)
        }
        codeUpdates += 1
        epochCodesChanged += outcome.changedCodes
        clearWeightGradients(&gradients)
        log(String(format: "V step %d: %.4f %% of codes changed, searched objective %.5f -> %.5f (sum of relative), %.1f s",
                   codeUpdates, 100 * Double(outcome.changedCodes) / Double(max(outcome.totalCodes, 1)),
                   outcome.objectiveBefore, outcome.objectiveAfter, Date().timeIntervalSince(clock))
            + (outcome.skippedLinears > 0 ? ", \(outcome.skippedLinears) linears skipped (gradient not finite or above 1e18: "
                + "\(outcome.nonFiniteSkippedGradients) non-finite, largest finite |g| \(outcome.largestSkippedGradient))" : ""))
    }

    /// Every code of the model.
    var codeCount: Int { model.blocks.reduce(0) { $0 + $1.quantized.values.reduce(0) { $0 + $1.codes.count } } }

    /// Records the epoch and keeps its parameters if they are the best held-out so far.
    mutating func finishEpoch(trainingLoss loss: Double) {
        trainingLoss.append(loss)
        epoch += 1
        stepInEpoch = 0
        epochLoss = 0
        var changed = ""
        if options.codeUpdate.enabled {
            codesChanged.append(Double(epochCodesChanged) / Double(max(codeCount, 1)))
            changed = String(format: ", codes changed %.4f %%", 100 * codesChanged.last!)
            epochCodesChanged = 0
        }
        guard let v = validation(model) else {
            log(String(format: "epoch %d: training loss %.5f%@", epoch, loss, changed))
            return
        }
        log(String(format: "epoch %d: training loss %.5f, validation loss %.5f%@", epoch, loss, v, changed))
        if v < validationLoss.min() ?? .infinity {
            best = model
            bestEpoch = epoch
        }
        validationLoss.append(v)
    }
}
