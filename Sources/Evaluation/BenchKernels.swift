import Foundation
import Kernels
import Llama

/// One timed kernel of a model: the linears of block 0 one shape at a time (their weights stay
/// in cache between calls), every block linear in forward order (weights streaming from memory,
/// as in real decoding) and the head.
public struct KernelResult: Codable, Sendable, Equatable {
    /// e.g. "self_attn.q_proj", "block linears", "head".
    public var kernel: String
    /// "[d_out,d_in]", or "210 linears".
    public var shape: String
    /// What the operator is: "aqlm 2x8 g8", "dense f32", "embedding q8", ...
    public var storage: String
    public var tokens: Int
    /// Best wall-clock time per call.
    public var microseconds: Double
    /// Weight bytes one call reads.
    public var weightBytes: Int
    /// Multiply-adds of the equivalent dense product (d_out·d_in·tokens summed over the linears).
    public var multiplyAdds: Int

    public var gigabytesPerSecond: Double { Double(weightBytes) / microseconds * 1e-3 }
    /// Dense-equivalent rate, 2·multiply-adds per second, whatever the kernel does internally.
    public var gflops: Double { 2 * Double(multiplyAdds) / microseconds * 1e-3 }

    enum CodingKeys: String, CodingKey {
        case kernel, shape, storage, tokens, microseconds, weightBytes = "weight_bytes", multiplyAdds = "multiply_adds"
        case gigabytesPerSecond = "gb_per_second", gflops
    }

    public init(kernel: String, shape: String, storage: String, tokens: Int, microseconds: Double, weightBytes: Int,
                multiplyAdds: Int) {
        self.kernel = kernel
        self.shape = shape
        self.storage = storage
        self.tokens = tokens
        self.microseconds = microseconds
        self.weightBytes = weightBytes
        self.multiplyAdds = multiplyAdds
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(kernel: try c.decode(String.self, forKey: .kernel), shape: try c.decode(String.self, forKey: .shape),
                  storage: try c.decode(String.self, forKey: .storage), tokens: try c.decode(Int.self, forKey: .tokens),
                  microseconds: try c.decode(Double.self, forKey: .microseconds),
                  weightBytes: try c.decode(Int.self, forKey: .weightBytes),
                  multiplyAdds: try c.decode(Int.self, forKey: .multiplyAdds))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kernel, forKey: .kernel)
        try c.encode(shape, forKey: .shape)
        try c.encode(storage, forKey: .storage)
        try c.encode(tokens, forKey: .tokens)
        try c.encode(microseconds, forKey: .microseconds)
        try c.encode(weightBytes, forKey: .weightBytes)
        try c.encode(multiplyAdds, forKey: .multiplyAdds)
        try c.encode(gigabytesPerSecond, forKey: .gigabytesPerSecond)
        try c.encode(gflops, forKey: .gflops)
    }
}

/// What a linear operator stores, for labels.
public func storageDescription(_ op: any LinearOperator) -> String {
    switch op {
    case let aqlm as AQLMLinear: return "aqlm \(aqlm.scheme)"
    case let table as EmbeddingTable: return "embedding \(table.precision.rawValue)"
    case is DenseLinear: return "dense f32"
    case is StreamedLinear: return "dense streamed"
    default: return String(describing: type(of: op))
    }
}

/// Kernel figures of `model` at 1 token (decode) and `prefillTokens` tokens (prefill): block 0's
/// linears one distinct shape at a time, all block linears in order, and the head. Each figure
/// is the best of batches run for about `minSeconds`.
public func benchmarkKernels(model: LlamaModel, prefillTokens: Int, minSeconds: Double = 0.2) -> [KernelResult] {
    let widestInput = max(model.config.intermediateSize, model.config.hiddenSize)
    let widestOutput = max(model.config.vocabSize, widestInput)
    var random = SeededRandom(seed: 3)
    let x = (0..<(prefillTokens * widestInput)).map { _ in random.nextGaussian() }
    var y = [Float](repeating: 0, count: prefillTokens * widestOutput)
    var results: [KernelResult] = []

    func time(_ body: () -> Void) -> Double { bestMicroseconds(minSeconds: minSeconds, body) }
    x.withUnsafeBufferPointer { xp in
        y.withUnsafeMutableBufferPointer { yp in
            let input = xp.baseAddress!, output = yp.baseAddress!
            for tokens in [1, prefillTokens] {
                var seen = Set<String>()
                for linear in LlamaLinear.allCases {
                    let op = model.layers[0][linear]
                    let shape = "[\(op.outputSize),\(op.inputSize)]"
                    guard seen.insert(shape).inserted else { continue }
                    results.append(KernelResult(
                        kernel: linear.rawValue, shape: shape, storage: storageDescription(op), tokens: tokens,
                        microseconds: time { op.apply(input, output, tokens: tokens) },
                        weightBytes: op.weightBytes, multiplyAdds: op.outputSize * op.inputSize * tokens))
                }
                let linears = model.layers.flatMap { block in LlamaLinear.allCases.map { block[$0] } }
                results.append(KernelResult(
                    kernel: "block linears", shape: "\(linears.count) linears",
                    storage: storageDescription(linears[0]), tokens: tokens,
                    microseconds: time { for op in linears { op.apply(input, output, tokens: tokens) } },
                    weightBytes: linears.reduce(0) { $0 + $1.weightBytes },
                    multiplyAdds: linears.reduce(0) { $0 + $1.outputSize * $1.inputSize } * tokens))
                let head = model.head
                results.append(KernelResult(
                    kernel: "head", shape: "[\(head.outputSize),\(head.inputSize)]", storage: storageDescription(head),
                    tokens: tokens, microseconds: time { head.apply(input, output, tokens: tokens) },
                    weightBytes: head.weightBytes, multiplyAdds: head.outputSize * head.inputSize * tokens))
            }
        }
    }
    return results
}

/// Best µs per call of `body`: one warm-up call, then batches of at least 1 ms (several calls
/// for short kernels) until `minSeconds` have passed and at least three batches ran. On cores
/// shared with other processes the fastest batch is the least disturbed one.
func bestMicroseconds(minSeconds: Double, _ body: () -> Void) -> Double {
    let clock = ContinuousClock()
    var started = clock.now
    body()
    let first = max(benchSeconds(clock.now - started), 1e-7)
    let callsPerBatch = max(1, Int((1e-3 / first).rounded(.up)))
    var best = Double.infinity, total = 0.0, batches = 0
    repeat {
        started = clock.now
        for _ in 0..<callsPerBatch { body() }
        let elapsed = benchSeconds(clock.now - started)
        best = min(best, elapsed / Double(callsPerBatch))
        total += elapsed
        batches += 1
    } while total < minSeconds || batches < 3
    return best * 1e6
}

func benchSeconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}
