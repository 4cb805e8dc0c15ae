import Foundation
import Kernels

/// The machine's limits, measured in the same run as the models so kernel figures can be read
/// against them on a shared, noisy machine.
public struct MachineLimits: Codable, Sendable, Equatable {
    public var threads: Int
    /// Streaming read of 256 MiB (far beyond L3) by `threads` workers.
    public var streamingGBPerSecond: Double
    /// Streaming read of a 28 MB working set (L3 is 32 MB): what a model that fits in cache reads at.
    public var cacheGBPerSecond: Double
    public var sgemmShape: [Int]
    public var sgemmGFLOPS: Double
    /// OpenBLAS's kernel set ("SkylakeX", "Haswell", ...).
    public var blasCore: String

    public init(threads: Int, streamingGBPerSecond: Double, cacheGBPerSecond: Double, sgemmShape: [Int], sgemmGFLOPS: Double,
                blasCore: String) {
        self.threads = threads
        self.streamingGBPerSecond = streamingGBPerSecond
        self.cacheGBPerSecond = cacheGBPerSecond
        self.sgemmShape = sgemmShape
        self.sgemmGFLOPS = sgemmGFLOPS
        self.blasCore = blasCore
    }

    enum CodingKeys: String, CodingKey {
        case threads, streamingGBPerSecond = "streaming_gb_per_second", cacheGBPerSecond = "cache_gb_per_second"
        case sgemmShape = "sgemm_shape", sgemmGFLOPS = "sgemm_gflops", blasCore = "blas_core"
    }
}

/// Memory bandwidth (streaming and cache-sized) and `cblas_sgemm` GFLOP/s at the prefill shape
/// m × n × k = 512 × 1536 × 576 (a 512-token chunk through gate/up), with `Threads.count` workers.
public func measureMachineLimits(sgemmShape: (m: Int, n: Int, k: Int) = (512, 1536, 576)) -> MachineLimits {
    MachineLimits(threads: Threads.count, streamingGBPerSecond: measureStreamingBandwidth(),
                  cacheGBPerSecond: measureStreamingBandwidth(bytes: 28 << 20, repeats: 20),
                  sgemmShape: [sgemmShape.m, sgemmShape.n, sgemmShape.k],
                  sgemmGFLOPS: measureSgemmGFLOPS(m: sgemmShape.m, n: sgemmShape.n, k: sgemmShape.k),
                  blasCore: BLASCore.name)
}

/// A failed bench step, in one line.
public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A measurement process that exited with an error: it has printed its own one-line reason on
/// the shared stderr, so the parent only passes the status on.
public struct BenchChildFailed: Error {
    public let status: Int32
}

/// Runs this executable again with `arguments` (a `bench --child ...` command line that prints
/// one `ModelBenchResult` as the last line of its stdout) and returns that result. Each model
/// then has a process, and so a peak resident memory, of its own. The child's stderr passes
/// through.
public func runBenchChild(arguments: [String]) throws -> ModelBenchResult {
    let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        ?? CommandLine.arguments[0]
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.standardError
    do {
        try process.run()
    } catch {
        throw BenchError("cannot start \(executable) for a measurement process: \(error.localizedDescription)")
    }
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
    if process.terminationReason == .exit && process.terminationStatus != 0 {
        throw BenchChildFailed(status: process.terminationStatus)
    }
    guard process.terminationReason == .exit else {
        throw BenchError("measurement process \(arguments.joined(separator: " ")) was killed by signal \(process.terminationStatus)")
    }
    do {
        return try JSONDecoder().decode(ModelBenchResult.self, from: Data(line.utf8))
    } catch {
        throw BenchError("measurement process \(arguments.joined(separator: " ")) printed no result: '\(line.prefix(200))'")
    }
}

/// The rounds of one model condensed: each speed and rate at its best round (the least
/// disturbed), each memory figure at its largest, each kernel at its fastest.
public func bestOf(_ rounds: [ModelBenchResult]) -> ModelBenchResult {
    precondition(!rounds.isEmpty, "no rounds to condense")
    var best = rounds[0]
    for r in rounds.dropFirst() {
        best.prefillTokensPerSecond = max(best.prefillTokensPerSecond, r.prefillTokensPerSecond)
        best.decodeTokensPerSecond = max(best.decodeTokensPerSecond, r.decodeTokensPerSecond)
        best.prefillTokensPerCPUSecond = max(best.prefillTokensPerCPUSecond, r.prefillTokensPerCPUSecond)
        best.decodeTokensPerCPUSecond = max(best.decodeTokensPerCPUSecond, r.decodeTokensPerCPUSecond)
        best.prefillGFLOPS = max(best.prefillGFLOPS, r.prefillGFLOPS)
        best.decodeGBPerSecond = max(best.decodeGBPerSecond, r.decodeGBPerSecond)
        best.loadSeconds = min(best.loadSeconds, r.loadSeconds)
        best.rssAfterLoadBytes = largest(best.rssAfterLoadBytes, r.rssAfterLoadBytes)
        best.loadPeakRSSBytes = largest(best.loadPeakRSSBytes, r.loadPeakRSSBytes)
        best.peakRSSBytes = largest(best.peakRSSBytes, r.peakRSSBytes)
        best.generationPeakRSSBytes = largest(best.generationPeakRSSBytes, r.generationPeakRSSBytes)
        for (i, k) in best.kernels.enumerated() {
            if let same = r.kernels.first(where: { $0.kernel == k.kernel && $0.shape == k.shape && $0.tokens == k.tokens }) {
                best.kernels[i].microseconds = min(k.microseconds, same.microseconds)
            }
        }
    }
    return best
}

private func largest(_ a: Int?, _ b: Int?) -> Int? {
    switch (a, b) {
    case let (a?, b?): return max(a, b)
    default: return a ?? b
    }
}

/// Everything `aqlm bench` reports: the machine's limits, each model's rounds, and the ratios of
/// the model to the comparison (best against best, and round by round, since rounds alternate
/// models so each pair ran under similar load).
public struct BenchReport: Encodable {
    public var machine: MachineLimits
    public var rounds: [ModelBenchResult]
    public var compareRounds: [ModelBenchResult]

    public init(machine: MachineLimits, rounds: [ModelBenchResult], compareRounds: [ModelBenchResult] = []) {
        self.machine = machine
        self.rounds = rounds
        self.compareRounds = compareRounds
    }

    public var best: ModelBenchResult { bestOf(rounds) }
    public var compareBest: ModelBenchResult? { compareRounds.isEmpty ? nil : bestOf(compareRounds) }

    /// model / comparison for speeds and memory; nil without a comparison.
    public var ratios: BenchRatios? {
        guard let other = compareBest else { return nil }
        let mine = best
        func ratio(_ a: Int?, _ b: Int?) -> Double? {
            guard let a, let b, b > 0 else { return nil }
            return Double(a) / Double(b)
        }
        let pairs = zip(rounds, compareRounds)
        return BenchRatios(
            decodeTokensPerSecond: mine.decodeTokensPerSecond / other.decodeTokensPerSecond,
            prefillTokensPerSecond: mine.prefillTokensPerSecond / other.prefillTokensPerSecond,
            peakRSSBytes: ratio(mine.peakRSSBytes, other.peakRSSBytes),
            generationPeakRSSBytes: ratio(mine.generationPeakRSSBytes, other.generationPeakRSSBytes),
            decodePerRound: pairs.map { $0.decodeTokensPerSecond / $1.decodeTokensPerSecond },
            prefillPerRound: pairs.map { $0.prefillTokensPerSecond / $1.prefillTokensPerSecond })
    }

    enum CodingKeys: String, CodingKey {
        case rounds, compare, ratios, machine
    }

    /// The model's best figures at the top level, then its rounds, the comparison in the same
    /// shape under "compare", the ratios and the machine.
    public func encode(to encoder: Encoder) throws {
        try best.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(rounds, forKey: .rounds)
        if let compareBest {
            try c.encode(ModelSummary(best: compareBest, rounds: compareRounds), forKey: .compare)
            try c.encode(ratios, forKey: .ratios)
        }
        try c.encode(machine, forKey: .machine)
    }

    private struct ModelSummary: Encodable {
        let best: ModelBenchResult
        let rounds: [ModelBenchResult]
        func encode(to encoder: Encoder) throws {
            try best.encode(to: encoder)
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(rounds, forKey: .rounds)
        }
    }
}

public struct BenchRatios: Codable, Sendable, Equatable {
    public var decodeTokensPerSecond: Double
    public var prefillTokensPerSecond: Double
    public var peakRSSBytes: Double?
    public var generationPeakRSSBytes: Double?
    public var decodePerRound: [Double]
    public var prefillPerRound: [Double]

    enum CodingKeys: String, CodingKey {
        case decodeTokensPerSecond = "decode_tokens_per_second", prefillTokensPerSecond = "prefill_tokens_per_second"
        case peakRSSBytes = "peak_rss_bytes", generationPeakRSSBytes = "generation_peak_rss_bytes"
        case decodePerRound = "decode_per_round", prefillPerRound = "prefill_per_round"
    }
}
