import Foundation
import Checkpoint

/// The sweep's rows as results.csv, results.json and results.md.
public struct ResultsTable {
    public let rows: [SweepRow]

    public init(rows: [SweepRow]) {
        self.rows = rows
    }

    /// One line per row, columns `SweepRow.columns`; unknown figures are empty cells.
    public func csv() -> String {
        var lines = [SweepRow.columns.joined(separator: ",")]
        for r in rows {
            let cells: [String] = [
                csvField(r.scheme), r.family.rawValue, plain(r.bitsPerWeight), r.fileBytes.map(String.init) ?? "",
                plain(r.ppl), plain(r.pplStderr), plain(r.kldMean), plain(r.top1Agreement), plain(r.quantizeSeconds),
                plain(r.decodeTokensPerSecond), r.external ? "true" : "false",
            ]
            lines.append(cells.joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    public func json() -> JSONValue { .array(rows.map(\.json)) }

    /// A title, the settings as a list, the table, then the rows' notes grouped by text.
    public func markdown(title: String, details: [String]) -> String {
        var lines = ["# \(title)", ""]
        lines += details.map { "- \($0)" }
        lines += [
            "",
            "| scheme | family | bits/weight (with overhead) | file size | PPL ± stderr | KLD | same top-1 % | quantize s | decode tok/s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows {
            let ppl = formatPPL(r.ppl) + (r.pplStderr.map { " ± " + formatPPL($0, like: r.ppl) } ?? "")
            let name = r.external ? "\(r.scheme) *(external)*" : r.scheme
            let cells: [String] = [
                name, r.family.rawValue, String(format: "%.3f", r.bitsPerWeight), r.fileBytes.map(formatBytes) ?? "–", ppl,
                cell(r.kldMean, "%.4f"), cell(r.top1Agreement.map { 100 * $0 }, "%.2f"), cell(r.quantizeSeconds, "%.0f"),
                cell(r.decodeTokensPerSecond, "%.1f"),
            ]
            lines.append("| " + cells.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |")
        }
        var notes: [(String, [String])] = []
        for r in rows {
            guard let note = r.note ?? r.family.note else { continue }
            if let i = notes.firstIndex(where: { $0.0 == note }) { notes[i].1.append(r.scheme) } else { notes.append((note, [r.scheme])) }
        }
        if !notes.isEmpty {
            lines += ["", "Notes:"]
            lines += notes.map { "- \($0.1.joined(separator: ", ")): \($0.0)" }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// A formatted figure, or a dash when unknown.
func cell(_ v: Double?, _ format: String) -> String {
    v.map { String(format: format, $0) } ?? "–"
}

/// Shortest text that reads back as the same Double; empty for nil or non-finite.
func plain(_ v: Double?) -> String {
    guard let v, v.isFinite else { return "" }
    return v.description
}

/// RFC 4180: quoted when it holds a comma, quote or line break.
func csvField(_ s: String) -> String {
    guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
    return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

/// Two decimals, none from 1000, three significant digits from 10⁵; `like` formats an
/// uncertainty the way its value is formatted.
func formatPPL(_ v: Double, like reference: Double? = nil) -> String {
    guard v.isFinite else { return v.description }
    let scale = reference ?? v
    if scale >= 1e5 { return String(format: "%.3g", v) }
    return String(format: scale >= 1000 ? "%.0f" : "%.2f", v)
}

/// Decimal units (MB = 10⁶ bytes), as file sizes are usually quoted.
func formatBytes(_ bytes: Int) -> String {
    let b = Double(bytes)
    if b >= 1e9 { return String(format: "%.2f GB", b / 1e9) }
    if b >= 1e6 { return String(format: "%.1f MB", b / 1e6) }
    if b >= 1e3 { return String(format: "%.1f kB", b / 1e3) }
    return "\(bytes) B"
}

/// The settings a reader needs to interpret the figures, for results.md and the plot.
struct SweepDescription {
    let title: String
    let lines: [String]
    let caption: String

    init(options o: SweepOptions) {
        let model = (ModelPaths.resolve(o.model) as NSString).lastPathComponent
        title = "Bits per weight against quality: \(model)"
        let q = o.quantize
        caption = "PPL: llama.cpp protocol, ctx \(o.context), first \(o.chunks) chunks of \((o.textPath as NSString).lastPathComponent)"
        lines = [
            "model: `\(ModelPaths.resolve(o.model))`",
            "\(caption) (`\(o.textPath)`); KLD = mean KL(original ‖ quantized) and same top-1 on the same positions "
                + "(original's top-\(o.topK) log-probs plus one tail bucket)",
            "quantization: preset \(o.presetName), calibration \(q.calibration), \(q.samples) × \(q.sequenceLength) tokens, "
                + "seed \(q.seed), beam \(q.aqlm.beamSize)" + (q.blockLimit.map { ", first \($0) blocks only" } ?? ""),
            "bits/weight: over the block linears, codebooks, scales and per-group constants included "
                + "(embeddings, output head and norms are kept as stored and not counted)",
            "PPL/KLD of quantized models: stored embeddings and head run in Float32, as the original's, so only the "
                + "block linears differ",
            "decode tok/s: single-token steps after a \(o.benchmarkPrompt)-token prompt, best of \(o.benchmarkRepetitions), "
                + "the model as `aqlm generate` opens it (packed AQLM kernels for AQLM/RVQ/PQ, dense Float32 otherwise)",
        ]
    }
}
