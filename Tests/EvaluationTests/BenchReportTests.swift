import Evaluation
import Foundation
import Kernels
import Llama
import Checkpoint
import XCTest

/// `aqlm bench`'s report: rounds condensed (fastest speeds, largest memory), ratios, and the
/// JSON keys scripts read; plus one real measurement of the tiny model in this process.
final class BenchReportTests: XCTestCase {
    private func result(decode: Double, prefill: Double, peak: Int, kernelMicroseconds: Double) -> ModelBenchResult {
        ModelBenchResult(
            model: "m", label: "l", threads: 2, parallel: "pool", prefillTokens: 128, decodeTokens: 64,
            prefillTokensPerSecond: prefill, decodeTokensPerSecond: decode, prefillTokensPerCPUSecond: prefill / 2,
            decodeTokensPerCPUSecond: decode / 2, prefillGFLOPS: 1, decodeBytesPerToken: 10, decodeGBPerSecond: 1,
            weightBytes: 10, loadSeconds: 1, rssAfterLoadBytes: peak / 2, loadPeakRSSBytes: peak, peakRSSBytes: peak,
            generationPeakRSSBytes: peak / 2,
            kernels: [KernelResult(kernel: "head", shape: "[8,4]", storage: "embedding q8", tokens: 1,
                                   microseconds: kernelMicroseconds, weightBytes: 2000, multiplyAdds: 32)])
    }

    func testRoundsCondenseAndRatiosCompareBestWithBest() throws {
        let machine = MachineLimits(threads: 2, streamingGBPerSecond: 40, cacheGBPerSecond: 100, sgemmShape: [512, 1536, 576],
                                    sgemmGFLOPS: 150, blasCore: "Haswell")
        let mine = [result(decode: 100, prefill: 500, peak: 100, kernelMicroseconds: 4),
                    result(decode: 150, prefill: 400, peak: 120, kernelMicroseconds: 2)]
        let theirs = [result(decode: 50, prefill: 600, peak: 600, kernelMicroseconds: 9),
                      result(decode: 40, prefill: 500, peak: 500, kernelMicroseconds: 8)]
        let report = BenchReport(machine: machine, rounds: mine, compareRounds: theirs)
        XCTAssertEqual(report.best.decodeTokensPerSecond, 150)
        XCTAssertEqual(report.best.prefillTokensPerSecond, 500)
        XCTAssertEqual(report.best.peakRSSBytes, 120)
        XCTAssertEqual(report.best.kernels[0].microseconds, 2)
        XCTAssertEqual(report.best.kernels[0].gigabytesPerSecond, 1, accuracy: 1e-12)
        let ratios = try XCTUnwrap(report.ratios)
        XCTAssertEqual(ratios.decodeTokensPerSecond, 3)
        XCTAssertEqual(ratios.prefillTokensPerSecond, 500.0 / 600)
        XCTAssertEqual(try XCTUnwrap(ratios.peakRSSBytes), 0.2, accuracy: 1e-12)
        XCTAssertEqual(ratios.decodePerRound, [2, 3.75])

        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(report)) as? [String: Any])
        for key in ["prefill_tokens_per_second", "decode_tokens_per_second", "peak_rss_bytes", "generation_peak_rss_bytes",
                    "kernels", "rounds", "compare", "ratios", "machine"] {
            XCTAssertNotNil(json[key], key)
        }
        XCTAssertEqual(json["decode_tokens_per_second"] as? Double, 150)
        let compare = try XCTUnwrap(json["compare"] as? [String: Any])
        XCTAssertEqual(compare["decode_tokens_per_second"] as? Double, 50)
        XCTAssertEqual(compare["peak_rss_bytes"] as? Int, 600)
        let kernel = try XCTUnwrap((json["kernels"] as? [[String: Any]])?.first)
        XCTAssertEqual(Set(kernel.keys), ["kernel", "shape", "storage", "tokens", "microseconds", "weight_bytes",
                                          "multiply_adds", "gb_per_second", "gflops"])
        XCTAssertTrue(report.text.contains("ratio"))
    }

    /// The tiny model measured in this process: rates are positive and consistent with each
    /// other, the memory probes answer on Linux, kernels cover block 0's shapes, all block
    /// linears and the head at both token counts.
    func testMeasuresATinyModel() throws {
        let model = try LlamaModel(weights: TinyModel.weights(seed: 61)).withEmbedding(.q8)
        let options = BenchOptions(promptTokens: 16, decodeTokens: 4, passes: 1, kernels: true, kernelSeconds: 0.01)
        let result = benchmarkModel("tiny", options: options) { model }
        XCTAssertGreaterThan(result.prefillTokensPerSecond, 0)
        XCTAssertGreaterThan(result.decodeTokensPerSecond, 0)
        XCTAssertEqual(result.decodeGBPerSecond, Double(result.decodeBytesPerToken) * result.decodeTokensPerSecond / 1e9,
                       accuracy: 1e-9)
        XCTAssertEqual(result.label, "dense f32 linears, head embedding q8")
        #if os(Linux)
        XCTAssertNotNil(result.peakRSSBytes)
        XCTAssertNotNil(result.generationPeakRSSBytes)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(result.peakRSSBytes), try XCTUnwrap(result.rssAfterLoadBytes))
        #endif
        let kinds = Set(result.kernels.map { "\($0.kernel) \($0.tokens)" })
        for tokens in [1, 16] {
            for kernel in ["self_attn.q_proj", "self_attn.k_proj", "mlp.gate_proj", "mlp.down_proj", "block linears", "head"] {
                XCTAssertTrue(kinds.contains("\(kernel) \(tokens)"), "\(kernel) at \(tokens) tokens")
            }
        }
        XCTAssertTrue(result.kernels.allSatisfy { $0.microseconds > 0 && $0.gflops > 0 })
    }
}
