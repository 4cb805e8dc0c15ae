/// One measured kernel: time per call and the rates that make calls of different shapes comparable.
public struct KernelFigure: Sendable, CustomStringConvertible {
    /// What ran, e.g. "aqlm 2x8 g8 decode" or "dense sgemv".
    public let kernel: String
    /// "[d_out,d_in]", or what a sweep covered.
    public let shape: String
    public let tokens: Int
    /// Wall-clock time per call, best batch mean.
    public let microseconds: Double
    /// CPU time per call summed over all threads, best batch mean: with one worker, the call's
    /// time when nothing else competes for the core (cache sharing aside); with two, the work
    /// including wake-ups.
    public let cpuMicroseconds: Double
    /// Weight bytes one call reads (packed codes + codebooks + scales, or dense Float32).
    public let weightBytes: Int
    /// Multiply-adds of the equivalent dense product (d_out·d_in·tokens).
    public let multiplyAdds: Int

    public var gigabytesPerSecond: Double { Double(weightBytes) / microseconds * 1e-3 }
    /// 2·d_out·d_in per token: the dense-equivalent rate, whatever the kernel does internally.
    public var gflops: Double { 2 * Double(multiplyAdds) / microseconds * 1e-3 }

    public var description: String {
        func fixed(_ v: Double, _ digits: Int) -> String {
            let scale = Double([1, 10, 100, 1000][digits])
            let r = (v * scale).rounded() / scale
            return digits == 0 ? String(Int(r)) : String(r)
        }
        return "\(kernel.padding(24)) \(shape.padding(14)) tokens \(String(tokens).padding(4)) "
            + "\(fixed(microseconds, 1).padding(9, left: true)) µs \(fixed(gigabytesPerSecond, 1).padding(7, left: true)) GB/s "
            + "\(fixed(gflops, 1).padding(7, left: true)) GFLOP/s  cpu \(fixed(cpuMicroseconds, 1).padding(9, left: true)) µs"
    }
}

private extension String {
    func padding(_ width: Int, left: Bool = false) -> String {
        let pad = String(repeating: " ", count: max(0, width - count))
        return left ? pad + self : self + pad
    }
}

/// The linears of one SmolLM2-135M block as (d_out, d_in, count): q and o, k and v, gate and up,
/// down. The model has 30 such blocks (210 linears).
public let smolLM2BlockLinears: [(outputSize: Int, inputSize: Int, count: Int)] = [
    (576, 576, 2), (192, 576, 2), (1536, 576, 2), (576, 1536, 1),
]

extension AQLMLinear {
    /// A layer with seeded random codes, codebooks (N(0,1) / √(M·G), so codeword sums have unit
    /// scale) and scales in [0.5, 1.5): for kernel tests and benchmarks, no model needed. Throws
    /// `AQLMShapeError` for sizes the scheme does not fit.
    public static func random(outputSize: Int, inputSize: Int, scheme: AQLMScheme, seed: UInt64) throws -> AQLMLinear {
        let name = "random [\(outputSize),\(inputSize)] \(scheme)"
        guard (1...16).contains(scheme.codeBits), scheme.groupSize > 0, scheme.codebookCount > 0, outputSize > 0,
              inputSize > 0, inputSize % scheme.groupSize == 0 else {
            throw AQLMShapeError(description: "\(name): d_in must be a positive multiple of the group size, B in 1...16")
        }
        var random = SeededRandom(seed: seed)
        let tables = inputSize / scheme.groupSize * scheme.codebookCount
        let codes = (0..<(outputSize * tables)).map { _ in UInt16(truncatingIfNeeded: random.next() >> 48) & UInt16(scheme.codebookSize - 1) }
        let spread = 1 / Float(scheme.codebookCount * scheme.groupSize).squareRoot()
        let codebooks = (0..<(scheme.codebookCount * scheme.codebookSize * scheme.groupSize)).map { _ in random.nextGaussian() * spread }
        let scales = (0..<outputSize).map { _ in 0.5 + random.nextFloat() }
        return try AQLMLinear(codes: codes, codebooks: codebooks, scales: scales, outputSize: outputSize,
                              inputSize: inputSize, scheme: scheme, name: name)
    }
}

/// Decode (1 token) and prefill (`prefillTokens`) of AQLM `scheme` against dense Float32
/// (sgemv / sgemm) for each shape, then one token through all `blocks`·7 linears of the model
/// (distinct layers, so codes stream from L3/DRAM as in real decoding) for both. Uses
/// `Threads.count` workers; each figure is the best batch mean (see `measureMicroseconds`).
public func benchmarkAQLMKernels(scheme: AQLMScheme = AQLMScheme(codebookCount: 2, codeBits: 8, groupSize: 8),
                                 shapes: [(outputSize: Int, inputSize: Int, count: Int)] = smolLM2BlockLinears,
                                 prefillTokens: Int = 128, blocks: Int = 30, minSeconds: Double = 0.3,
                                 seed: UInt64 = 1) throws -> [KernelFigure] {
    var figures: [KernelFigure] = []
    let name = "aqlm \(scheme)"
    for (i, shape) in shapes.enumerated() {
        let aqlm = try AQLMLinear.random(outputSize: shape.outputSize, inputSize: shape.inputSize, scheme: scheme, seed: seed &+ UInt64(i))
        let dense = DenseLinear(weights: aqlm.dequantize(), outputSize: shape.outputSize, inputSize: shape.inputSize)
        let label = "[\(shape.outputSize),\(shape.inputSize)]"
        for tokens in [1, prefillTokens] {
            let x = randomInputs(count: tokens * shape.inputSize, seed: seed)
            var y = [Float](repeating: 0, count: tokens * shape.outputSize)
            let kind = tokens <= AQLMLinear.decodeTokenLimit ? "decode" : "prefill"
            for (kernel, op) in [("\(name) \(kind)", aqlm as LinearOperator), (tokens == 1 ? "dense sgemv" : "dense sgemm", dense)] {
                let time = measureMicroseconds(minSeconds: minSeconds) { op.apply(x, &y, tokens: tokens) }
                figures.append(KernelFigure(kernel: kernel, shape: label, tokens: tokens, microseconds: time.wall,
                                            cpuMicroseconds: time.cpu, weightBytes: op.weightBytes,
                                            multiplyAdds: shape.outputSize * shape.inputSize * tokens))
            }
        }
    }
    if blocks > 0 {
        figures += try benchmarkDecodeSweep(scheme: scheme, shapes: shapes, blocks: blocks, minSeconds: minSeconds, seed: seed)
    }
    return figures
}

/// Per-token µs of `blocks` blocks' linears projected from per-shape figures of `kernel` at one
/// token (each shape's time × its count per block × blocks): the hot-cache estimate, beside the
/// sweep's measured one. Nil if a shape has no figure.
public func projectedBlockMicroseconds(_ figures: [KernelFigure], kernel: String,
                                       shapes: [(outputSize: Int, inputSize: Int, count: Int)] = smolLM2BlockLinears,
                                       blocks: Int = 30) -> Double? {
    var total = 0.0
    for shape in shapes {
        guard let figure = figures.first(where: {
            $0.kernel == kernel && $0.tokens == 1 && $0.shape == "[\(shape.outputSize),\(shape.inputSize)]"
        }) else { return nil }
        total += figure.microseconds * Double(shape.count)
    }
    return total * Double(blocks)
}

/// One decoding token through every linear of `blocks` blocks, AQLM then dense: the projected
/// per-token cost of the model's linears (attention and head excluded).
public func benchmarkDecodeSweep(scheme: AQLMScheme = AQLMScheme(codebookCount: 2, codeBits: 8, groupSize: 8),
                                 shapes: [(outputSize: Int, inputSize: Int, count: Int)] = smolLM2BlockLinears,
                                 blocks: Int = 30, minSeconds: Double = 0.3, seed: UInt64 = 1) throws -> [KernelFigure] {
    var layers: [AQLMLinear] = []
    for b in 0..<blocks {
        for (i, shape) in shapes.enumerated() {
            for c in 0..<shape.count {
                layers.append(try .random(outputSize: shape.outputSize, inputSize: shape.inputSize, scheme: scheme,
                                      seed: seed &+ UInt64((b * shapes.count + i) * 4 + c)))
            }
        }
    }
    let widest = shapes.map { max($0.outputSize, $0.inputSize) }.max() ?? 0
    let x = randomInputs(count: widest, seed: seed)
    var y = [Float](repeating: 0, count: widest)
    let multiplyAdds = layers.reduce(0) { $0 + $1.outputSize * $1.inputSize }
    let label = "\(layers.count) linears"

    let aqlmTime = measureMicroseconds(minSeconds: minSeconds) {
        for layer in layers { layer.apply(x, &y, tokens: 1) }
    }
    var figures = [KernelFigure(kernel: "aqlm \(scheme) decode", shape: label, tokens: 1, microseconds: aqlmTime.wall,
                                cpuMicroseconds: aqlmTime.cpu, weightBytes: layers.reduce(0) { $0 + $1.weightBytes },
                                multiplyAdds: multiplyAdds)]

    var random = SeededRandom(seed: seed)
    let denseLayers = layers.map { layer in
        DenseLinear(weights: (0..<(layer.outputSize * layer.inputSize)).map { _ in random.nextFloat() - 0.5 },
                    outputSize: layer.outputSize, inputSize: layer.inputSize)
    }
    layers = []
    let denseTime = measureMicroseconds(minSeconds: minSeconds) {
        for layer in denseLayers { layer.apply(x, &y, tokens: 1) }
    }
    figures.append(KernelFigure(kernel: "dense sgemv", shape: label, tokens: 1, microseconds: denseTime.wall,
                                cpuMicroseconds: denseTime.cpu, weightBytes: denseLayers.reduce(0) { $0 + $1.weightBytes },
                                multiplyAdds: multiplyAdds))
    return figures
}

private func randomInputs(count: Int, seed: UInt64) -> [Float] {
    var random = SeededRandom(seed: seed ^ 0x5EED)
    return (0..<count).map { _ in random.nextGaussian() }
}

/// Best mean µs per call over batches of ≥ 2 ms (after one warm-up call), batches repeated for
/// `minSeconds`, in wall-clock and in process CPU time: on cores shared with other processes the
/// fastest short batch is the one that ran undisturbed, while a long average measures the
/// neighbours.
func measureMicroseconds(minSeconds: Double, _ body: () -> Void) -> (wall: Double, cpu: Double) {
    body()
    var best = (wall: Double.infinity, cpu: Double.infinity)
    var total = 0.0
    repeat {
        var calls = 0
        let cpuStart = processCPUSeconds()
        var elapsed = 0.0
        while elapsed < 0.002 {
            elapsed += timeSeconds(body)
            calls += 1
        }
        let cpu = processCPUSeconds() - cpuStart
        best = (min(best.wall, elapsed / Double(calls)), min(best.cpu, cpu / Double(calls)))
        total += elapsed
    } while total < minSeconds
    return (best.wall * 1e6, best.cpu * 1e6)
}
