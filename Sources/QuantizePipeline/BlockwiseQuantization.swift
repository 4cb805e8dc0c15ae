import Foundation
import Calibration
import Checkpoint
import Evaluation
import Finetune
import Kernels
import Llama
import PackedFormat
import Quantizer
import Tokenizer

/// Quantizes a whole model block by block, as AQLM does (Egiazarian et al. 2024, §3.4):
///
///   X ← embeddings of the calibration sequences
///   for each block b:
///     run the full-precision block b on X, keeping its outputs as targets and accumulating
///       H = XᵀX at each distinct linear input (q/k/v share one, gate/up share one)
///     quantize the seven linears against their H
///     X ← the *quantized* block b applied to X   (later blocks see the quantized prefix)
///
/// Only one block's activations for the N×L calibration tokens are held at a time.
public struct BlockwiseQuantization {
    public let modelPath: String
    public let outputPath: String
    public let options: QuantizeOptions
    /// Receives one line per event (layer finished, block finished, ...).
    public var log: (String) -> Void = { _ in }

    public init(modelPath: String, outputPath: String, options: QuantizeOptions) {
        self.modelPath = modelPath
        self.outputPath = outputPath
        self.options = options
    }

    public func run() throws -> QuantizeReport {
        let clock = Date()
        guard !FileManager.default.fileExists(atPath: outputPath) else {
            throw PackedFormatError("output \(outputPath) already exists; choose another path or remove it")
        }
        // The weights stay in the checkpoint's map in their stored type: one block at a time is
        // converted to Float32 when it is worked on and dropped after, so memory does not grow
        // with the model's depth.
        let weights = try loadCheckpoint(modelPath)
        let config = weights.config
        for name in weights.tensors.keys.sorted() where !weights[name].allValuesFinite() {
            throw CheckpointError.invalid(weights.source, detail: "tensor '\(name)' contains NaN or infinity")
        }
        let blockCount = min(options.blockLimit ?? config.numLayers, config.numLayers)
        let sequences = try calibrationSequences(tokenizer: weights.tokenizer)
        let work = WorkDirectory(output: outputPath, fingerprint: fingerprint(weights: weights))
        let names = (0..<blockCount).map { LlamaConfig.linearNames(layer: $0) }

        /// Finished linears held in memory (the scalar baseline's dense weights) ...
        var stored: [String: StoredLinear] = [:]
        /// ... and those only read back from their block file in the work directory while the
        /// packed file is written (AQLM-family codes), so memory does not grow with depth.
        var saved: [String: SavedLinear] = [:]
        func keep(_ linears: [String: StoredLinear], block b: Int) {
            for (name, linear) in linears {
                if case .additive(let code) = linear {
                    saved[name] = SavedLinear(code: code, name: name, file: work.blockFile(b))
                } else {
                    stored[name] = linear
                }
            }
        }
        /// RMSNorm gains changed by block-wise fine-tuning, by tensor name.
        var finetunedNorms: [String: WeightTensor] = [:]
        var reports: [BlockReport] = []
        var hidden: SequenceActivations
        /// The full-precision model's own hidden states, when fine-tuning targets them.
        var fullPrecisionHidden: SequenceActivations?
        let keepsFullPrecisionChain = options.finetune.epochs > 0 && options.finetuneTargets == .fullPrecisionChain
            && options.choice.additiveScheme != nil
        let width = options.sequenceLength * config.hiddenSize
        // hidden, targets (one block's, while it runs) and the full-precision chain.
        let activationBytes = (2 + (keepsFullPrecisionChain ? 1 : 0)) * sequences.count * width * MemoryLayout<Float>.size
        /// Where the activations go when they would take more memory than allowed.
        let spill = activationBytes > options.activationMemoryLimit ? work.path : nil
        if spill != nil {
            log(String(format: "calibration activations (%.2f GB) above --activation-memory: kept in files of %@",
                       Double(activationBytes) / 1e9, work.path))
        }
        let resumeFrom = try work.finishedBlocks()
        if resumeFrom > 0 {
            for b in 0..<min(resumeFrom, blockCount) {
                let (linears, report) = try work.loadBlock(b, names: names[b])
                keep(linears, block: b)
                reports.append(report)
                finetunedNorms.merge(try loadFinetunedNorms(b, work: work)) { $1 }
            }
            let freed = work.removeStaleFiles(finished: resumeFrom)
            if freed > 0 { log(String(format: "removed %.2f GB that an interrupted run left in %@", Double(freed) / 1e9, work.path)) }
            let saved = try work.loadHidden(work.hiddenFile(after: resumeFrom), sequences: sequences.count, width: width, spill: spill)
            let savedChain = keepsFullPrecisionChain
                ? try work.loadHidden(work.hiddenFile(after: resumeFrom, fullPrecision: true), sequences: sequences.count, width: width, spill: spill)
                : nil
            if let saved, !keepsFullPrecisionChain || savedChain != nil {
                hidden = saved
                fullPrecisionHidden = savedChain
            } else {
                // A work directory from before the hidden states were named by block count.
                log("resuming: the hidden states after block \(resumeFrom - 1) are not in \(work.path); recomputing them through the finished blocks")
                (hidden, fullPrecisionHidden) = try replayFinishedBlocks(resumeFrom, sequences: sequences, weights: weights, work: work,
                                                                         names: names, norms: finetunedNorms, spill: spill,
                                                                         fullPrecisionChain: keepsFullPrecisionChain)
            }
            log("resuming after block \(resumeFrom - 1) from \(work.path)")
        } else {
            (hidden, fullPrecisionHidden) = try embedCalibration(sequences, weights: weights, spill: spill, fullPrecisionChain: keepsFullPrecisionChain)
        }

        for b in resumeFrom..<blockCount {
            let blockClock = Date()
            // Every model below holds this one block as its layer 0 (`LlamaModel(block:config:)`).
            let original = LlamaBlock(weights: weights, layer: b)
            let fullPrecision = LlamaModel(block: original, config: config)
            let state = fullPrecision.makeState(maxPositions: options.sequenceLength, maxBatch: options.sequenceLength, maxLogitRows: 1)
            let (targets, hessians) = try runFullPrecisionBlock(fullPrecision, inputs: hidden, state: state, spill: spill, block: b)
            let calibrationSeconds = Date().timeIntervalSince(blockClock)
            var linears: [String: StoredLinear] = [:]
            var layerReports: [LayerReport] = []
            for linear in LlamaLinear.allCases {
                let name = "model.layers.\(b).\(linear.rawValue)"
                Threads.adjustToLoad()
                // LlamaBlock(weights:layer:) makes every linear a DenseLinear.
                let dense = original[linear] as! DenseLinear
                let (result, report) = try quantizeLinear(name: name, weight: WeightTensor(shape: [dense.outputSize, dense.inputSize], values: dense.weights),
                                                          hessian: hessians[linear.input]!, layer: b, linear: linear)
                linears[name] = result
                layerReports.append(report)
                log(String(format: "block %2d %-16@ [%d×%d] rel err %.4f -> %.4f  entropy %@ bits  %.1f s",
                           b, linear.rawValue as NSString, report.shape[0], report.shape[1], report.relativeErrorBefore,
                           report.relativeErrorAfter,
                           report.usageEntropyBits.map { String(format: "%.2f", $0) }.joined(separator: "/") as NSString,
                           report.seconds))
            }
            var quantized = LlamaModel(block: quantizedBlock(original, layer: b, linears: linears), config: config)
            let outputError: Double
            var outputErrorFinetuned: Double?, finetuneSeconds: Double?
            var chainError: Double?, chainErrorFinetuned: Double?
            if let codes = finetunableCodes(linears, layer: b) {
                let finetuneClock = Date()
                if fullPrecisionHidden != nil {
                    runBlock(fullPrecision, hidden: &fullPrecisionHidden!, state: state)
                }
                let before = measureQuantizedBlock(quantized, hidden: hidden, targets: [targets] + (fullPrecisionHidden.map { [$0] } ?? []),
                                                   state: state)
                outputError = before[0]
                chainError = before.count > 1 ? before[1] : nil
                let tuned = try finetuneQuantizedBlock(original, layer: b, codes: codes, config: config,
                                                       inputs: hidden, targets: fullPrecisionHidden ?? targets)
                for (linear, layer) in tuned.quantized { linears["model.layers.\(b).\(linear.rawValue)"] = .additive(layer.additiveCode) }
                quantized = LlamaModel(block: tuned.llamaBlock(), config: config)
                let norms = normTensors(tuned, layer: b)
                finetunedNorms.merge(norms) { $1 }
                try saveFinetunedNorms(norms, layer: b, work: work)
                // The pass below, which makes the next block's inputs, runs with or without
                // fine-tuning, so it is not part of what fine-tuning adds.
                finetuneSeconds = Date().timeIntervalSince(finetuneClock)
                outputErrorFinetuned = runQuantizedBlock(quantized, hidden: &hidden, targets: targets, state: state)
                if let chain = fullPrecisionHidden {
                    chainErrorFinetuned = meanRelativeSquaredDifference(hidden, chain)
                }
                log(String(format: "block %2d fine-tuned: output error %.5f -> %.5f, %.1f s",
                           b, outputError, outputErrorFinetuned!, finetuneSeconds!)
                    + (chainErrorFinetuned.map { String(format: "; against the full-precision chain %.5f -> %.5f", chainError!, $0) } ?? ""))
            } else {
                outputError = runQuantizedBlock(quantized, hidden: &hidden, targets: targets, state: state)
            }
            let report = BlockReport(index: b, outputError: outputError, outputErrorFinetuned: outputErrorFinetuned,
                                     seconds: Date().timeIntervalSince(blockClock), calibrationSeconds: calibrationSeconds,
                                     finetuneSeconds: finetuneSeconds, peakRSSBytes: peakResidentBytes(), layers: layerReports,
                                     chainError: chainError, chainErrorFinetuned: chainErrorFinetuned)
            log(String(format: "block %2d done: output error %.5f, %.1f s (%.1f s calibration forward), peak RSS %.2f GB",
                       b, outputErrorFinetuned ?? outputError, report.seconds, calibrationSeconds,
                       Double(report.peakRSSBytes ?? 0) / 1e9))
            reports.append(report)
            for activations in [hidden, targets] + (fullPrecisionHidden.map { [$0] } ?? []) { try activations.check() }
            try work.saveBlock(b, linears: linears, report: report, hidden: hidden, fullPrecisionHidden: fullPrecisionHidden)
            keep(linears, block: b)
        }

        var finetunedWeights = weights
        finetunedWeights.tensors.merge(finetunedNorms) { $1 }
        let report = try writeOutput(weights: finetunedWeights, stored: stored, saved: saved, blockCount: blockCount, reports: reports,
                                     calibrationActivationBytes: activationBytes, wallSeconds: Date().timeIntervalSince(clock))
        work.remove()
        return report
    }

    /// The calibration sequences' embeddings: the hidden states entering block 0, for the
    /// quantized chain and (when kept) the full-precision one.
    func embedCalibration(_ sequences: [[Int]], weights: ModelWeights, spill: String?, fullPrecisionChain: Bool) throws
        -> (SequenceActivations, SequenceActivations?) {
        let embedding = weights["model.embed_tokens.weight"]
        var hidden = try SequenceActivations(count: sequences.count, width: sequences.first.map { $0.count * embedding.rowWidth } ?? 0,
                                             directory: spill)
        for (s, tokens) in sequences.enumerated() { hidden[s] = embeddingRows(embedding, tokens: tokens) }
        embedding.releasePages()
        return (hidden, fullPrecisionChain ? hidden : nil)
    }

    /// The hidden states after the first `finished` blocks, recomputed from the embeddings
    /// through each finished block as saved (its linears and fine-tuned norms from the work
    /// directory) and, when kept, through the full-precision blocks: one block in memory at a
    /// time. Equal to what the interrupted run had up to float rounding (its fine-tuned blocks
    /// ran from Float32 codebooks, these from the saved ones).
    func replayFinishedBlocks(_ finished: Int, sequences: [[Int]], weights: ModelWeights, work: WorkDirectory, names: [[String]],
                              norms: [String: WeightTensor], spill: String?, fullPrecisionChain: Bool) throws
        -> (SequenceActivations, SequenceActivations?) {
        var (hidden, chain) = try embedCalibration(sequences, weights: weights, spill: spill, fullPrecisionChain: fullPrecisionChain)
        let length = sequences.first?.count ?? 0
        for b in 0..<finished {
            let original = LlamaBlock(weights: weights, layer: b)
            var block = quantizedBlock(original, layer: b, linears: try work.loadBlock(b, names: names[b]).0)
            if let gain = norms["model.layers.\(b).input_layernorm.weight"] { block.inputNorm = gain.values }
            if let gain = norms["model.layers.\(b).post_attention_layernorm.weight"] { block.postAttentionNorm = gain.values }
            let quantized = LlamaModel(block: block, config: weights.config)
            let state = quantized.makeState(maxPositions: length, maxBatch: length, maxLogitRows: 1)
            runBlock(quantized, hidden: &hidden, state: state)
            if chain != nil { runBlock(LlamaModel(block: original, config: weights.config), hidden: &chain!, state: state) }
            log("replayed block \(b) of \(finished)")
        }
        return (hidden, chain)
    }

    /// The embedding rows of `tokens` [count × width], read from the checkpoint as stored.
    func embeddingRows(_ embedding: WeightTensor, tokens: [Int]) -> [Float] {
        let width = embedding.rowWidth
        return [Float](unsafeUninitializedCapacity: tokens.count * width) { out, count in
            for (i, t) in tokens.enumerated() { embedding.readRows(t..<(t + 1), into: out.baseAddress! + i * width) }
            count = tokens.count * width
        }
    }

    // MARK: - Calibration data

    func calibrationSequences(tokenizer spec: TokenizerSpec) throws -> [[Int]] {
        let path = try CalibrationSource.resolve(options.calibration)
        let tokens: [Int]
        if let given = options.calibrationTokens {
            tokens = given
        } else {
            guard let data = FileManager.default.contents(atPath: path) else { throw CalibrationError.missingFile(path) }
            tokens = try BPETokenizer(spec: spec).encode([UInt8](data))
        }
        var rng = SeededRandom(seed: options.seed)
        return try sampleCalibrationSequences(tokens: tokens, samples: options.samples, length: options.sequenceLength,
                                              source: path, using: &rng)
    }

    /// Everything that changes the result: a work directory from other settings is refused.
    func fingerprint(weights: ModelWeights) -> String {
        let a = options.aqlm
        return [options.choice.description, weights.source, String(weights.config.numLayers), options.calibration,
                String(options.samples), String(options.sequenceLength), String(options.seed), String(a.beamSize),
                String(a.maxIterations), String(a.tolerance), String(a.kmeansIterations), String(a.weightedInitialization),
                String(a.restartDeadCodes), String(options.blockLimit ?? -1), finetuneFingerprint].joined(separator: "|")
            + (options.residualNormWeighting ? "|residual-norm weighting" : "")
            // Appended only when not the product start, so work directories written before
            // `--init` existed stay resumable.
            + (a.initialization == .product ? "" : "|init=\(a.initialization.rawValue)"
               + (a.initialization == .outputAwareEM ? ",em=\(a.emIterations)" : ""))
    }

    // MARK: - One block

    /// 1/ms(h_t) for each row h_t of `hidden` [tokens × width] (ms: the mean square, as RMSNorm's).
    func inverseMeanSquares(_ hidden: [Float], width: Int) -> [Float] {
        (0..<(hidden.count / width)).map { t in
            var sum: Float = 0
            for i in 0..<width { sum += hidden[t * width + i] * hidden[t * width + i] }
            return 1 / max(sum / Float(width), 1e-12)
        }
    }

    // The models below hold one block (`LlamaModel(block:config:)`), run as their layer 0.

    /// The full-precision block on every calibration sequence: its outputs (the targets) and
    /// H = XᵀX at each of the four linear inputs.
    func runFullPrecisionBlock(_ model: LlamaModel, inputs: SequenceActivations, state: LlamaState, spill: String?, block: Int) throws
        -> (targets: SequenceActivations, hessians: [LinearInputSite: [Double]]) {
        let started = Date()
        var lastReport = started
        let c = model.config
        var accumulators: [LinearInputSite: HessianAccumulator] = [
            .attention: HessianAccumulator(dim: c.hiddenSize),
            .attentionOutput: HessianAccumulator(dim: c.numHeads * c.headDim),
            .mlp: HessianAccumulator(dim: c.hiddenSize),
            .mlpHidden: HessianAccumulator(dim: c.intermediateSize),
        ]
        var targets = try SequenceActivations(count: inputs.count, width: inputs.width, directory: spill)
        // With residual-norm weighting, the inputs of o_proj and down_proj wait for the block's
        // output, whose per-token RMS sets their weights.
        let weighted: Set<LinearInputSite> = options.residualNormWeighting ? [.attentionOutput, .mlpHidden] : []
        for (s, x) in inputs.enumerated() {
            Threads.adjustToLoad()
            var y = x
            var held: [LinearInputSite: (rows: [Float], tokens: Int)] = [:]
            model.forwardBlock(layer: 0, hidden: &y, startPosition: 0, state: state) { input in
                if weighted.contains(input.site) {
                    held[input.site] = (Array(input.rows), input.tokens)
                } else {
                    accumulators[input.site]!.add(input.rows.baseAddress!, rows: input.tokens)
                }
            }
            if !held.isEmpty {
                let weights = inverseMeanSquares(y, width: c.hiddenSize)
                for (site, input) in held {
                    input.rows.withUnsafeBufferPointer { accumulators[site]!.add($0.baseAddress!, rows: input.tokens, rowWeights: weights) }
                }
            }
            targets[s] = y
            // A block's calibration pass takes minutes on wide models: a line every ~30 s.
            if Date().timeIntervalSince(lastReport) >= 30 && s + 1 < inputs.count {
                lastReport = Date()
                log(String(format: "block %2d calibration forward: %d/%d sequences, %.0f s", block, s + 1, inputs.count,
                           lastReport.timeIntervalSince(started)))
            }
        }
        var hessians: [LinearInputSite: [Double]] = [:]
        for site in Array(accumulators.keys) { hessians[site] = accumulators[site]!.takeHessian() }
        return (targets, hessians)
    }

    /// Runs block b of `model` in place on every sequence's hidden states.
    func runBlock(_ model: LlamaModel, hidden: inout SequenceActivations, state: LlamaState) {
        for s in hidden.indices {
            Threads.adjustToLoad()
            model.forwardBlock(layer: 0, hidden: &hidden[s], startPosition: 0, state: state)
        }
    }

    /// The reference's block output error of the quantized block against each of `targets`
    /// (one forward pass), leaving the hidden states as they are.
    func measureQuantizedBlock(_ model: LlamaModel, hidden: SequenceActivations, targets: [SequenceActivations],
                               state: LlamaState) -> [Double] {
        var totals = [Double](repeating: 0, count: targets.count)
        for s in hidden.indices {
            Threads.adjustToLoad()
            var y = hidden[s]
            model.forwardBlock(layer: 0, hidden: &y, startPosition: 0, state: state)
            for (t, target) in targets.enumerated() { totals[t] += relativeSquaredDifference(y, target[s]) }
        }
        return totals.map { $0 / Double(hidden.count) }
    }

    /// Runs the quantized block in place on the hidden states and returns the reference's
    /// block output error, mean over sequences of ‖Y_q − Y_target‖² / ‖Y_q‖².
    func runQuantizedBlock(_ model: LlamaModel, hidden: inout SequenceActivations, targets: SequenceActivations,
                           state: LlamaState) -> Double {
        runBlock(model, hidden: &hidden, state: state)
        return meanRelativeSquaredDifference(hidden, targets)
    }

    /// Mean over sequences of ‖a − b‖² / ‖a‖².
    func meanRelativeSquaredDifference(_ a: SequenceActivations, _ b: SequenceActivations) -> Double {
        a.indices.reduce(0.0) { $0 + relativeSquaredDifference(a[$1], b[$1]) } / Double(a.count)
    }

    func quantizeLinear(name: String, weight: WeightTensor, hessian: [Double], layer: Int, linear: LlamaLinear) throws
        -> (StoredLinear, LayerReport) {
        let started = Date()
        let (dOut, dIn) = (weight.shape[0], weight.shape[1])
        let problem: LayerProblem
        do {
            problem = try LayerProblem(weight: weight.values, dOut: dOut, dIn: dIn, hessian: hessian)
        } catch let e as QuantizerError {
            throw QuantizerError("\(name): \(e.description)")
        }
        var aqlm = options.aqlm
        // A distinct, reproducible seed per layer.
        aqlm.seed = options.seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(layer * 8 + LlamaLinear.allCases.firstIndex(of: linear)!)
        let result: QuantizedLinear
        switch options.choice {
        case .aqlm(let s): result = try Quantizer.quantizeLinear(problem, scheme: s, options: aqlm)
        case .rvq(let s): result = try quantizeResidualVQ(problem, scheme: s, options: aqlm)
        case .pq(let s): result = try quantizeProductVQ(problem, scheme: s, options: aqlm)
        case .rtn(let bits): result = try quantizeRoundToNearest(problem, bits: bits, groupSize: 64)
        }
        let stored: StoredLinear
        let bits: Double
        if let code = result.additiveCode {
            let rounded = code.roundedToFloat16()
            stored = .additive(rounded)
            bits = rounded.storageBits / Double(dOut * dIn)
        } else {
            stored = .dense(WeightTensor(shape: [dOut, dIn], values: result.dequantized()))
            bits = result.bitsPerWeight
        }
        let report = LayerReport(
            name: name, shape: [dOut, dIn], relativeErrorBefore: result.initialError.relative,
            relativeErrorAfter: problem.relativeError(of: stored.dequantized()),
            usageEntropyBits: result.usage.map(\.entropyBits), unusedCodes: result.usage.map(\.unusedCodes),
            deadCodeRestarts: result.restarts.reduce(0) { $0 + $1.codes.count }, bitsPerWeight: bits,
            seconds: Date().timeIntervalSince(started))
        return (stored, report)
    }

    /// The block with its seven linears replaced by dense Float32 Ŵ (exactly what the packed
    /// kernels compute, and the fastest way to run 512-token calibration sequences).
    func quantizedBlock(_ block: LlamaBlock, layer b: Int, linears: [String: StoredLinear]) -> LlamaBlock {
        var out = block
        for linear in LlamaLinear.allCases {
            let original = block[linear]
            let values = linears["model.layers.\(b).\(linear.rawValue)"]!.dequantized()
            out[linear] = DenseLinear(weights: values, outputSize: original.outputSize, inputSize: original.inputSize)
        }
        return out
    }

    // MARK: - Block-wise fine-tuning

    var finetuneFingerprint: String {
        let f = options.finetune
        guard f.epochs > 0 else { return "finetune off" }
        return ["finetune", String(f.epochs), String(f.adam.learningRate), String(f.adam.beta1), String(f.adam.beta2),
                String(f.adam.epsilon), String(f.sequencesPerStep), String(f.validationSamples), String(f.trained.rawValue),
                f.codebookTransform.rawValue].joined(separator: ",")
            + (f.sequencesPerEpoch.map { ",\($0) per epoch" } ?? "")
            + (f.schedule == .constant ? "" : "," + f.schedule.rawValue)
            + ",targets " + options.finetuneTargets.rawValue
    }

    /// The block's seven linears as AQLM codes, when fine-tuning is on and they are codes.
    func finetunableCodes(_ linears: [String: StoredLinear], layer b: Int) -> [LlamaLinear: AdditiveCode]? {
        guard options.finetune.epochs > 0 else { return nil }
        var codes: [LlamaLinear: AdditiveCode] = [:]
        for linear in LlamaLinear.allCases {
            guard case .additive(let code)? = linears["model.layers.\(b).\(linear.rawValue)"] else { return nil }
            codes[linear] = code
        }
        return codes
    }

    /// Trains the codebooks, scales and norm gains of quantized block b to reproduce the
    /// full-precision block's outputs on the same inputs (AQLM §3.4); fp16-rounded result.
    func finetuneQuantizedBlock(_ original: LlamaBlock, layer b: Int, codes: [LlamaLinear: AdditiveCode], config: LlamaConfig,
                                inputs: SequenceActivations, targets: SequenceActivations) throws -> TrainableBlock {
        var finetune = options.finetune
        finetune.seed = options.seed &+ UInt64(b)
        let result = try Finetune.finetuneBlock(TrainableBlock(block: original, codes: codes), config: config,
                                                inputs: inputs, targets: targets, options: finetune) { log("block \(b)" + $0) }
        return result.block
    }

    func normTensors(_ block: TrainableBlock, layer b: Int) -> [String: WeightTensor] {
        ["model.layers.\(b).input_layernorm.weight": WeightTensor(shape: [block.inputNorm.count], values: block.inputNorm),
         "model.layers.\(b).post_attention_layernorm.weight": WeightTensor(shape: [block.postAttentionNorm.count],
                                                                            values: block.postAttentionNorm)]
    }

    /// Fine-tuned norms live next to the block's linears in the work directory, written before
    /// progress.json names the block finished.
    func saveFinetunedNorms(_ norms: [String: WeightTensor], layer b: Int, work: WorkDirectory) throws {
        let entries = Dictionary(uniqueKeysWithValues: norms.map { (String($0.key.dropLast(".weight".count)), StoredLinear.dense($0.value)) })
        try BlockCheckpoint.write(entries, to: work.file("block-\(b)-norms.safetensors"))
    }

    func loadFinetunedNorms(_ b: Int, work: WorkDirectory) throws -> [String: WeightTensor] {
        let path = work.file("block-\(b)-norms.safetensors")
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        let names = ["model.layers.\(b).input_layernorm", "model.layers.\(b).post_attention_layernorm"]
        var out: [String: WeightTensor] = [:]
        for (name, stored) in try BlockCheckpoint.read(names, from: path) {
            if case .dense(let t) = stored { out[name + ".weight"] = t }
        }
        return out
    }

    // MARK: - Output

    func writeOutput(weights: ModelWeights, stored: [String: StoredLinear], saved: [String: SavedLinear], blockCount: Int,
                     reports: [BlockReport], calibrationActivationBytes: Int, wallSeconds: Double) throws -> QuantizeReport {
        let config = weights.config
        // Still mapped: the packed writer converts them to its stored widths (matrices fp16,
        // vectors fp32) chunk by chunk.
        var dense: [String: WeightTensor] = [:]
        for (name, t) in weights.tensors {
            let base = name.hasSuffix(".weight") ? String(name.dropLast(7)) : name
            if stored[base] == nil && saved[base] == nil { dense[name] = t }
        }
        var quantizedBits = 0.0, quantizedParameters = 0
        for (_, linear) in saved {
            quantizedBits += linear.storageBits
            quantizedParameters += linear.linear.dOut * linear.linear.dIn
        }
        for (_, linear) in stored {
            switch linear {
            case .additive(let c):
                quantizedBits += c.storageBits
                quantizedParameters += c.dOut * c.dIn
            case .dense(let t):
                quantizedParameters += t.values.count
            }
        }
        let layerReports = reports.flatMap(\.layers)
        if case .rtn = options.choice {
            quantizedBits = layerReports.reduce(0) { $0 + $1.bitsPerWeight * Double($1.shape[0] * $1.shape[1]) }
        }
        let otherParameters = dense.values.reduce(0) { $0 + $1.elementCount }
        let otherBytes = dense.values.reduce(0) { $0 + $1.elementCount * ($1.shape.count == 1 ? 4 : 2) }
        var report = QuantizeReport(
            scheme: options.choice.description, model: weights.source, output: outputPath,
            calibration: options.choice.needsCalibration ? options.calibration : "", samples: options.samples,
            sequenceLength: options.sequenceLength, seed: options.seed, beam: options.aqlm.beamSize,
            bitsPerWeight: quantizedParameters > 0 ? quantizedBits / Double(quantizedParameters) : 0,
            modelBitsPerWeight: (quantizedBits + Double(otherBytes * 8)) / Double(quantizedParameters + otherParameters),
            quantizedParameters: quantizedParameters, otherParameters: otherParameters, otherBytes: otherBytes,
            fileBytes: 0, wallSeconds: wallSeconds, peakRSSBytes: peakResidentBytes() ?? 0,
            calibrationActivationBytes: calibrationActivationBytes, blocks: reports)

        if let scheme = options.choice.additiveScheme {
            var codes: [String: AdditiveCode] = [:]
            for (name, linear) in stored { if case .additive(let c) = linear { codes[name] = c } }
            let packed = PackedModel(config: config, tokenizer: weights.tokenizer, scheme: scheme, linears: codes, dense: dense)
            try PackedCheckpoint.write(packed, deferredLinears: saved.mapValues(\.linear), to: outputPath) { bytes in
                report.fileBytes = bytes
                return ["report.json": report.json]
            }
        } else {
            var tensors = dense.mapValues { $0.roundedForPacking() }
            for (name, linear) in stored { tensors[name + ".weight"] = WeightTensor(shape: weights[name + ".weight"].shape, values: linear.dequantized()) }
            let out = ModelWeights(config: config, tokenizer: weights.tokenizer, tensors: tensors, source: outputPath)
            let temporary = outputPath + ".partial-\(ProcessInfo.processInfo.processIdentifier)"
            try? FileManager.default.removeItem(atPath: temporary)
            try HuggingFaceCheckpoint.write(out, toDirectory: temporary, dtype: .f32)
            report.fileBytes = PackedCheckpoint.directoryBytes(temporary)
            try writeJSONFile(report.json, to: (temporary as NSString).appendingPathComponent("report.json"))
            try FileManager.default.moveItem(atPath: temporary, toPath: outputPath)
        }
        return report
    }
}

/// ‖a − b‖² / ‖a‖², accumulated in Float64.
func relativeSquaredDifference(_ a: [Float], _ b: [Float]) -> Double {
    var num = 0.0, den = 0.0
    for i in a.indices {
        let d = Double(a[i] - b[i])
        num += d * d
        den += Double(a[i]) * Double(a[i])
    }
    return den > 0 ? num / den : 0
}

