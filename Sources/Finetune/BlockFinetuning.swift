import Foundation
import Checkpoint
import Kernels
import Llama

/// Settings of block-wise fine-tuning (AQLM §3.4, "fine-tuning for intra-layer cohesion").
public struct BlockFinetuneOptions: Sendable, Equatable {
    /// Passes over the training sequences (0: no training). Defaults measured on SmolLM2-135M
    /// block 0 (2x8, 128 × 512 calibration, output error 0.0397 before): one epoch at lr 1e-3 with
    /// 2 sequences per step gives 0.0291; a second epoch 0.0292 (lr 1e-3, 4 per step); lr 1e-4
    /// gives 0.0310, lr 3e-3 0.0292; 8 sequences per step 0.0311.
    public var epochs = 1
    public var adam = AdamOptions(learningRate: 1e-3)
    /// How the rate moves from `adam.learningRate` over the planned epochs' steps.
    public var schedule: LearningRateSchedule = .constant
    /// Sequences whose gradients are averaged into one Adam step.
    public var sequencesPerStep = 2
    /// Training sequences visited per epoch, a fresh random subset each epoch (nil: all).
    public var sequencesPerEpoch: Int?
    /// Sequences held out (the last ones given) to pick the best epoch; 0 keeps the last epoch.
    /// At most a quarter of the sequences are held out, whatever this says (small calibration sets).
    public var validationSamples = 8
    /// Seeds the order of the training sequences in each epoch.
    public var seed: UInt64 = 0
    public var trained: TrainedParameters = .all
    public var codebookTransform: CodebookTransform = .none

    public init() {}
}

/// What block-wise fine-tuning did.
public struct BlockFinetuneResult: Sendable {
    /// The best epoch's block (or the input block, when no epoch beat it), codewords and
    /// scales rounded to fp16 as the packed file stores them.
    public var block: TrainableBlock
    /// Mean training loss of each epoch (measured while training, before each step's update).
    public var trainingLoss: [Double]
    /// Validation loss before training (index 0) and after each epoch.
    public var validationLoss: [Double]
    /// The epoch kept (0: the input block).
    public var bestEpoch: Int
    public var steps: Int
    public var seconds: Double
    /// CPU time of the process (all threads) during the call.
    public var cpuSeconds: Double
}

public struct FinetuneError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Trains a quantized block's codewords, scales and norm gains so that it maps the calibration
/// inputs to the full-precision block's outputs: the loss of a sequence is ‖Y − Y*‖²/‖Y*‖²,
/// averaged over the sequences of a step; Adam with one step per `sequencesPerStep` sequences.
/// The last `validationSamples` sequences are held out, and the epoch with the lowest
/// validation loss is kept (training stops at the first epoch that does not improve on it).
///
/// - Parameters:
///   - inputs: the block's input for each calibration sequence, [tokens × hiddenSize] each
///     (arrays, or `SequenceActivations` kept in a file).
///   - targets: the full-precision block's output for the same inputs.
public func finetuneBlock<Inputs: RandomAccessCollection, Targets: RandomAccessCollection>(
    _ block: TrainableBlock, config: LlamaConfig, inputs: Inputs, targets: Targets,
    options: BlockFinetuneOptions, log: (String) -> Void = { _ in }
) throws -> BlockFinetuneResult
where Inputs.Element == [Float], Inputs.Index == Int, Targets.Element == [Float], Targets.Index == Int {
    let started = Date(), startedCPU = processCPUSeconds()
    let d = config.hiddenSize
    guard !inputs.isEmpty, inputs.count == targets.count else {
        throw FinetuneError("block fine-tuning: \(inputs.count) input sequences but \(targets.count) targets")
    }
    let width = inputs[0].count, tokens = width / d
    guard tokens > 0, tokens * d == width, inputs.allSatisfy({ $0.count == width }), targets.allSatisfy({ $0.count == width }) else {
        throw FinetuneError("block fine-tuning: every input and target must be [tokens × \(d)] of one length")
    }
    guard options.validationSamples >= 0 else { throw FinetuneError("--val-samples must not be negative") }
    guard options.sequencesPerStep >= 1, options.epochs >= 0, (options.sequencesPerEpoch ?? 1) >= 1 else {
        throw FinetuneError("block fine-tuning: sequences per step and per epoch must be ≥ 1, epochs ≥ 0")
    }

    let trainCount = inputs.count - min(options.validationSamples, inputs.count / 4)
    let validation = Array(trainCount..<inputs.count)
    let activations = BlockActivations(config: config, capacity: tokens)
    let workspace = BackwardWorkspace(config: config, capacity: tokens)
    var hidden = [Float](repeating: 0, count: width)
    var gradient = [Float](repeating: 0, count: width)

    func loss(of prepared: PreparedBlock, on sequences: [Int]) -> Double {
        var total = 0.0
        for s in sequences {
            hidden = inputs[s]
            hidden.withUnsafeMutableBufferPointer { prepared.forward($0.baseAddress!, tokens: tokens, saving: activations) }
            total += relativeError(hidden, target: targets[s], gradient: &gradient, gradientScale: 0)
        }
        return sequences.isEmpty ? 0 : total / Double(sequences.count)
    }

    var current = block.withCodebookTransform(options.codebookTransform)
    var best = current
    var bestLoss = validation.isEmpty ? Double.infinity : loss(of: PreparedBlock(current), on: validation)
    var bestEpoch = 0
    var validationLoss = validation.isEmpty ? [] : [bestLoss]
    var trainingLoss: [Double] = []
    let sequencesPerEpoch = min(options.sequencesPerEpoch ?? trainCount, trainCount)
    let stepsPerEpoch = (sequencesPerEpoch + options.sequencesPerStep - 1) / options.sequencesPerStep
    var optimizer = Adam(options: options.adam, schedule: options.schedule, totalSteps: options.epochs * stepsPerEpoch)
    var rng = SeededRandom(seed: options.seed)
    var gradients = BlockGradients(current)

    for epoch in 0..<options.epochs {
        var order = Array(0..<trainCount)
        order.shuffle(using: &rng)
        order = Array(order.prefix(sequencesPerEpoch))
        var prepared = PreparedBlock(current)
        var epochLoss = 0.0
        for stepStart in stride(from: 0, to: order.count, by: options.sequencesPerStep) {
            let step = order[stepStart..<min(stepStart + options.sequencesPerStep, order.count)]
            Threads.adjustToLoad()
            gradients.zero()
            for s in step {
                hidden = inputs[s]
                hidden.withUnsafeMutableBufferPointer { prepared.forward($0.baseAddress!, tokens: tokens, saving: activations) }
                epochLoss += relativeError(hidden, target: targets[s], gradient: &gradient, gradientScale: 1 / Float(step.count))
                gradient.withUnsafeMutableBufferPointer {
                    prepared.backward($0.baseAddress!, activations: activations, gradients: &gradients, workspace: workspace)
                }
            }
            optimizer.beginStep()
            current.update(with: gradients, trained: options.trained, prefix: "", optimizer: &optimizer)
            prepared = PreparedBlock(current)
        }
        trainingLoss.append(epochLoss / Double(order.count))
        guard !validation.isEmpty else {
            best = current
            bestEpoch = epoch + 1
            log(String(format: "  epoch %d: train loss %.5f, %.1f s (%.1f CPU s)", epoch + 1, trainingLoss.last!,
                       Date().timeIntervalSince(started), processCPUSeconds() - startedCPU))
            continue
        }
        let v = loss(of: prepared, on: validation)
        validationLoss.append(v)
        log(String(format: "  epoch %d: train loss %.5f, validation loss %.5f, %.1f s (%.1f CPU s)", epoch + 1,
                   trainingLoss.last!, v, Date().timeIntervalSince(started), processCPUSeconds() - startedCPU))
        if v < bestLoss {
            (best, bestLoss, bestEpoch) = (current, v, epoch + 1)
        } else {
            break
        }
    }
    return BlockFinetuneResult(block: best.roundedToFloat16(), trainingLoss: trainingLoss, validationLoss: validationLoss,
                               bestEpoch: bestEpoch, steps: optimizer.step, seconds: Date().timeIntervalSince(started),
                               cpuSeconds: processCPUSeconds() - startedCPU)
}

/// ‖y − y*‖²/‖y*‖² in Float64; writes ∂/∂y of it times `gradientScale` into `gradient`.
func relativeError(_ y: [Float], target: [Float], gradient: inout [Float], gradientScale: Float) -> Double {
    var difference = 0.0, reference = 0.0
    y.withUnsafeBufferPointer { y in
        target.withUnsafeBufferPointer { t in
            gradient.withUnsafeMutableBufferPointer { g in
                for i in 0..<y.count { g[i] = y[i] - t[i] }
                difference = Double(dot(g.baseAddress!, g.baseAddress!, count: g.count))
                reference = Double(dot(t.baseAddress!, t.baseAddress!, count: t.count))
                let factor = reference > 0 ? Float(2 / reference) * gradientScale : 0
                scale(g.baseAddress!, by: factor, count: g.count)
            }
        }
    }
    return reference > 0 ? difference / reference : 0
}

extension TrainableBlock {
    /// The same block with every quantized linear reparameterised by `transform` (identity
    /// transforms, so the block computes the same function).
    public func withCodebookTransform(_ transform: CodebookTransform) -> TrainableBlock {
        var out = self
        out.quantized = quantized.mapValues { layer in
            var l = layer
            l.codebooks = layer.effectiveCodebooks
            l.transform = transform == .linear ? TrainableLinear.identityTransforms(layer.scheme) : nil
            return l
        }
        return out
    }
}
