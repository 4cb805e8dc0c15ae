import Foundation

/// `aqlm bench`'s human-readable report: the machine's limits, one line per model, the ratios,
/// and each model's kernels against the limits.
extension BenchReport {
    public var text: String {
        var lines: [String] = []
        let m = machine
        lines.append("machine: \(m.threads) threads, streaming read \(fixed(m.streamingGBPerSecond, 1)) GB/s "
                     + "(28 MB working set \(fixed(m.cacheGBPerSecond, 1)) GB/s), cblas_sgemm "
                     + "\(m.sgemmShape.map(String.init).joined(separator: "x")) \(fixed(m.sgemmGFLOPS, 0)) GFLOP/s (\(m.blasCore))")
        lines.append("")
        lines.append(row(["", "prefill tok/s", "decode tok/s", "decode tok/cpu-s", "peak RSS", "run peak RSS", "weights",
                          "decode GB/s"]))
        var models = [("model", best)]
        if let compareBest { models.append(("compare", compareBest)) }
        for (name, r) in models {
            lines.append(row([name, fixed(r.prefillTokensPerSecond, 1), fixed(r.decodeTokensPerSecond, 1),
                              fixed(r.decodeTokensPerCPUSecond, 1), megabytes(r.peakRSSBytes), megabytes(r.generationPeakRSSBytes), megabytes(r.weightBytes),
                              fixed(r.decodeGBPerSecond, 1)]))
        }
        if let ratios {
            lines.append(row(["ratio", times(ratios.prefillTokensPerSecond), times(ratios.decodeTokensPerSecond), "",
                              ratios.peakRSSBytes.map(times) ?? "-", ratios.generationPeakRSSBytes.map(times) ?? "-", "", ""]))
            lines.append("per round: decode " + ratios.decodePerRound.map(times).joined(separator: " ")
                         + ", prefill " + ratios.prefillPerRound.map(times).joined(separator: " "))
        }
        for (name, r) in models {
            lines.append("")
            lines.append("\(name): \(r.model) (\(r.label)), \(r.threads) threads (\(r.parallel)), "
                         + "\(r.prefillTokens)-token prefill, \(r.decodeTokens) decode steps, best of \(rounds.count) rounds")
            if !r.kernels.isEmpty { lines += kernelLines(r.kernels) }
        }
        return lines.joined(separator: "\n")
    }

    /// Decode figures (one token) against the streaming bandwidth, prefill figures against sgemm.
    private func kernelLines(_ kernels: [KernelResult]) -> [String] {
        var lines = ["  " + row(["kernel", "shape", "storage", "tokens", "µs", "GB/s", "of stream", "GFLOP/s", "of sgemm"],
                                widths: [16, 14, 18, 7, 10, 8, 10, 9, 9])]
        for k in kernels {
            let ofStream = k.gigabytesPerSecond / machine.streamingGBPerSecond
            let ofSgemm = k.gflops / machine.sgemmGFLOPS
            lines.append("  " + row([k.kernel, k.shape, k.storage, String(k.tokens), fixed(k.microseconds, 1),
                                     fixed(k.gigabytesPerSecond, 1), percent(ofStream), fixed(k.gflops, 1), percent(ofSgemm)],
                                    widths: [16, 14, 18, 7, 10, 8, 10, 9, 9]))
        }
        return lines
    }
}

private func row(_ cells: [String], widths: [Int]? = nil) -> String {
    cells.enumerated().map { i, cell in
        let width = widths?[i] ?? (i == 0 ? 8 : 16)
        let pad = String(repeating: " ", count: max(0, width - cell.count))
        return i == 0 ? cell + pad : pad + cell
    }.joined(separator: " ")
}

private func fixed(_ v: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", v) }
private func times(_ v: Double) -> String { String(format: "%.2fx", v) }
private func percent(_ v: Double) -> String { String(format: "%.0f%%", 100 * v) }
private func megabytes(_ bytes: Int?) -> String { bytes.map { String(format: "%.1f MB", Double($0) / 1e6) } ?? "-" }
