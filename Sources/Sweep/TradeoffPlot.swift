import Foundation

/// Perplexity against bits per weight as a self-contained SVG: both axes logarithmic (the
/// points run from ~2 to 16 bits and from near-original perplexity to orders of magnitude
/// above it), one colour and marker per method family, each point labelled with its scheme,
/// the original's perplexity as a dashed reference line, ticks, grid and a legend. The PPL
/// axis stops `offScaleFactor` times above the best point so the useful region is not
/// squashed by a collapsed scheme; points beyond sit on the top edge, their PPL in the label.
public struct TradeoffPlot {
    public let rows: [SweepRow]
    public let title: String
    public var caption = ""

    public init(rows: [SweepRow], title: String) {
        self.rows = rows
        self.title = title
    }

    // Canvas: plot area inside fixed margins, legend to the right.
    static let width = 1000.0, height = 620.0
    static let left = 80.0, right = 210.0, top = 56.0, bottom = 70.0
    static let plotWidth = width - left - right, plotHeight = height - top - bottom
    static let labelFontSize = 11.0
    static let offScaleFactor = 100.0
    /// Average advance of the label font per character, for collision estimates.
    static let characterWidth = 6.3

    /// Rows that can be placed on log axes; the rest are listed under the plot instead.
    var plotted: [SweepRow] { rows.filter { $0.ppl.isFinite && $0.ppl > 0 && $0.bitsPerWeight > 0 } }

    public func svg() -> String {
        let points = plotted
        var out: [String] = []
        out.append(##"<svg xmlns="http://www.w3.org/2000/svg" width="\##(Self.width)" height="\##(Self.height)" viewBox="0 0 \##(Self.width) \##(Self.height)" font-family="Helvetica, Arial, sans-serif">"##)
        out.append(##"<rect x="0" y="0" width="\##(Self.width)" height="\##(Self.height)" fill="white"/>"##)
        out.append(##"<text x="\##(Self.width / 2)" y="26" text-anchor="middle" font-size="16" font-weight="bold">\##(escapeXML(title))</text>"##)
        guard !points.isEmpty else {
            out.append(##"<text x="\##(Self.width / 2)" y="\##(Self.height / 2)" text-anchor="middle" font-size="14">no points to plot</text>"##)
            out.append("</svg>")
            return out.joined(separator: "\n") + "\n"
        }
        let x = LogAxis(values: points.map(\.bitsPerWeight), from: Self.left, to: Self.left + Self.plotWidth)
        let ceiling = Self.offScaleFactor * points.map(\.ppl).min()!
        let y = LogAxis(values: points.map { min($0.ppl, ceiling) }, from: Self.top + Self.plotHeight, to: Self.top)
        let place = Placement(x: x, y: y, ceiling: ceiling)
        out += axes(x: x, y: y)
        if let original = points.first(where: { $0.family == .original }) {
            let py = y.position(original.ppl)
            out.append(##"<line class="original-ppl" x1="\##(f(Self.left))" y1="\##(f(py))" x2="\##(f(Self.left + Self.plotWidth))" y2="\##(f(py))" stroke="#555" stroke-width="1" stroke-dasharray="5,4"/>"##)
        }
        out += seriesLines(points, place)
        out += labelledPoints(points, place)
        out += legend(points)
        var footer = caption
        if points.contains(where: { $0.ppl > ceiling }) {
            footer += (footer.isEmpty ? "" : "; ") + "points above PPL \(formatPPL(ceiling)) sit on the top edge"
        }
        let skipped = rows.filter { !($0.ppl.isFinite && $0.ppl > 0 && $0.bitsPerWeight > 0) }
        if !skipped.isEmpty {
            footer += (footer.isEmpty ? "" : "; ") + "not plotted: " + skipped.map { "\($0.scheme) (PPL \($0.ppl))" }.joined(separator: ", ")
        }
        if !footer.isEmpty {
            out.append(##"<text x="\##(Self.left)" y="\##(Self.height - 10)" font-size="11" fill="#444">\##(escapeXML(footer))</text>"##)
        }
        out.append("</svg>")
        return out.joined(separator: "\n") + "\n"
    }

    // MARK: - Pieces

    func axes(x: LogAxis, y: LogAxis) -> [String] {
        let (l, t, w, h) = (Self.left, Self.top, Self.plotWidth, Self.plotHeight)
        var out = [##"<g class="axes" font-size="11" fill="#222">"##]
        for tick in x.ticks() {
            let px = f(x.position(tick))
            out.append(##"<line x1="\##(px)" y1="\##(f(t))" x2="\##(px)" y2="\##(f(t + h))" stroke="#e3e3e3"/>"##)
            out.append(##"<line x1="\##(px)" y1="\##(f(t + h))" x2="\##(px)" y2="\##(f(t + h + 5))" stroke="#222"/>"##)
            out.append(##"<text x="\##(px)" y="\##(f(t + h + 19))" text-anchor="middle">\##(tickLabel(tick))</text>"##)
        }
        for tick in y.ticks() {
            let py = f(y.position(tick))
            out.append(##"<line x1="\##(f(l))" y1="\##(py)" x2="\##(f(l + w))" y2="\##(py)" stroke="#e3e3e3"/>"##)
            out.append(##"<line x1="\##(f(l - 5))" y1="\##(py)" x2="\##(f(l))" y2="\##(py)" stroke="#222"/>"##)
            out.append(##"<text x="\##(f(l - 8))" y="\##(py)" dy="4" text-anchor="end">\##(tickLabel(tick))</text>"##)
        }
        out.append(##"<rect x="\##(f(l))" y="\##(f(t))" width="\##(f(w))" height="\##(f(h))" fill="none" stroke="#222"/>"##)
        out.append(##"<text x="\##(f(l + w / 2))" y="\##(f(t + h + 42))" text-anchor="middle" font-size="13">bits per weight of the block linears, with overhead (log scale)</text>"##)
        out.append(##"<text transform="translate(22 \##(f(t + h / 2))) rotate(-90)" text-anchor="middle" font-size="13">perplexity (log scale, lower is better)</text>"##)
        out.append("</g>")
        return out
    }

    /// Points of one family joined in order of bits per weight (external and original points
    /// are separate methods, so they stay unjoined).
    func seriesLines(_ points: [SweepRow], _ place: Placement) -> [String] {
        var out: [String] = []
        for family in MethodFamily.allCases where family != .external && family != .original {
            let series = points.filter { $0.family == family }.sorted { $0.bitsPerWeight < $1.bitsPerWeight }
            guard series.count > 1 else { continue }
            let path = series.map { place.centre($0) }.map { "\(f($0.0)),\(f($0.1))" }.joined(separator: " ")
            out.append(##"<polyline class="series" data-family="\##(family.rawValue)" points="\##(path)" fill="none" stroke="\##(Self.style(family).color)" stroke-width="1.5" stroke-opacity="0.6"/>"##)
        }
        return out
    }

    func labelledPoints(_ points: [SweepRow], _ place: Placement) -> [String] {
        let centres = points.map(place.centre)
        let markers = centres.map { Box(x: $0.0 - 6, y: $0.1 - 6, width: 12, height: 12) }
        var placed: [Box] = []
        var out: [String] = []
        for (i, row) in points.enumerated() {
            let (px, py) = centres[i]
            let style = Self.style(row.family)
            let text = row.ppl > place.ceiling ? "\(row.scheme) (PPL \(formatPPL(row.ppl)))" : row.scheme
            let label = placeLabel(text, at: (px, py), below: row.ppl > place.ceiling, avoiding: placed + markers.enumerated().filter { $0.offset != i }.map(\.element))
            placed.append(label.box)
            var tooltip = "\(row.scheme) (\(row.family.rawValue)): \(String(format: "%.3f", row.bitsPerWeight)) bits/weight, PPL \(formatPPL(row.ppl))"
            if let e = row.pplStderr { tooltip += " ± \(formatPPL(e))" }
            if let k = row.kldMean { tooltip += String(format: ", KLD %.4f", k) }
            out.append(##"<g class="point" data-family="\##(row.family.rawValue)" data-scheme="\##(escapeXML(row.scheme))">"##)
            out.append("<title>\(escapeXML(tooltip))</title>")
            out.append(marker(style, at: (px, py)))
            if label.far {
                // A label moved away from its point gets a leader line so it is not read as a neighbour's.
                let end = (label.anchor == "end" ? label.box.x + label.box.width : label.anchor == "start" ? label.box.x : label.x,
                           label.box.y + label.box.height / 2)
                out.append(##"<line class="leader" x1="\##(f(px))" y1="\##(f(py))" x2="\##(f(end.0))" y2="\##(f(end.1))" stroke="#888" stroke-width="0.8"/>"##)
            }
            out.append(##"<text class="label" x="\##(f(label.x))" y="\##(f(label.y))" text-anchor="\##(label.anchor)" font-size="\##(Self.labelFontSize)" fill="#222" stroke="white" stroke-width="3" paint-order="stroke">\##(escapeXML(text))</text>"##)
            out.append("</g>")
        }
        return out
    }

    func legend(_ points: [SweepRow]) -> [String] {
        let families = MethodFamily.allCases.filter { f in points.contains { $0.family == f } }
        let x0 = Self.left + Self.plotWidth + 20, y0 = Self.top + 10
        let width = 40 + 6.5 * Double(families.map { Self.style($0).legend.count }.max() ?? 10)
        var out = [##"<g class="legend" font-size="12">"##]
        out.append(##"<rect x="\##(f(x0 - 10))" y="\##(f(y0 - 14))" width="\##(f(width))" height="\##(f(Double(families.count) * 22 + 34))" fill="white" stroke="#999"/>"##)
        out.append(##"<text x="\##(f(x0))" y="\##(f(y0 + 2))" font-weight="bold">method family</text>"##)
        for (i, family) in families.enumerated() {
            let cy = y0 + 24 + Double(i) * 22
            out.append(marker(Self.style(family), at: (x0 + 6, cy - 4)))
            out.append(##"<text x="\##(f(x0 + 20))" y="\##(f(cy))">\##(Self.style(family).legend)</text>"##)
        }
        out.append("</g>")
        return out
    }

    // MARK: - Markers and labels

    struct Style {
        let color: String
        let shape: Shape
        let legend: String
        enum Shape { case circle, square, triangle, diamond, star, ring }
    }

    static func style(_ family: MethodFamily) -> Style {
        switch family {
        case .original: return Style(color: "#000000", shape: .star, legend: "original")
        case .aqlm: return Style(color: "#1f77b4", shape: .circle, legend: "AQLM (beam + updates)")
        case .rvq: return Style(color: "#ff7f0e", shape: .square, legend: "RVQ (greedy residual)")
        case .pq: return Style(color: "#2ca02c", shape: .triangle, legend: "PQ (product)")
        case .rtn: return Style(color: "#d62728", shape: .diamond, legend: "RTN (round to nearest)")
        case .external: return Style(color: "#7f7f7f", shape: .ring, legend: "external")
        }
    }

    func marker(_ style: Style, at p: (Double, Double)) -> String {
        let (x, y) = p, c = style.color
        switch style.shape {
        case .circle:
            return ##"<circle class="marker" cx="\##(f(x))" cy="\##(f(y))" r="5" fill="\##(c)"/>"##
        case .ring:
            return ##"<circle class="marker" cx="\##(f(x))" cy="\##(f(y))" r="5" fill="white" stroke="\##(c)" stroke-width="2"/>"##
        case .square:
            return ##"<rect class="marker" x="\##(f(x - 4.5))" y="\##(f(y - 4.5))" width="9" height="9" fill="\##(c)"/>"##
        case .triangle:
            return ##"<polygon class="marker" points="\##(polygon([(x, y - 6), (x + 5.5, y + 4), (x - 5.5, y + 4)]))" fill="\##(c)"/>"##
        case .diamond:
            return ##"<polygon class="marker" points="\##(polygon([(x, y - 6), (x + 6, y), (x, y + 6), (x - 6, y)]))" fill="\##(c)"/>"##
        case .star:
            let vertices = (0..<10).map { k -> (Double, Double) in
                let radius = k % 2 == 0 ? 7.0 : 3.0, angle = Double.pi * (Double(k) / 5 - 0.5)
                return (x + radius * cos(angle), y + radius * sin(angle))
            }
            return ##"<polygon class="marker" points="\##(polygon(vertices))" fill="\##(c)"/>"##
        }
    }

    /// Where a row's marker goes: log-log, with off-scale PPL pinned to the top edge.
    struct Placement {
        let x: LogAxis
        let y: LogAxis
        let ceiling: Double

        func centre(_ row: SweepRow) -> (Double, Double) {
            (x.position(row.bitsPerWeight), row.ppl > ceiling ? TradeoffPlot.top : y.position(row.ppl))
        }
    }

    struct Box {
        var x, y, width, height: Double
        func intersects(_ o: Box) -> Bool {
            x < o.x + o.width && o.x < x + width && y < o.y + o.height && o.y < y + height
        }
    }

    struct Label {
        let x, y: Double
        let anchor: String
        let box: Box
        /// Placed at one of the outer positions, away from the point.
        let far: Bool
    }

    /// The first of a few positions around the point (right, left, above, below, then further
    /// out; below first for a point pinned to the top edge) whose text box overlaps no placed
    /// label or other marker and stays near the plot area.
    func placeLabel(_ text: String, at p: (Double, Double), below: Bool, avoiding obstacles: [Box]) -> Label {
        let width = Double(text.count) * Self.characterWidth, height = Self.labelFontSize + 2
        let offsets: [(Double, Double, String)] = (below ? [(7, 17, "start"), (-7, 17, "end")] : []) + [
            (9, 4, "start"), (-9, 4, "end"), (7, -9, "start"), (7, 17, "start"), (-7, -9, "end"), (-7, 17, "end"),
            (9, -20, "start"), (9, 28, "start"), (-9, -20, "end"), (-9, 28, "end"), (0, -12, "middle"), (0, 20, "middle"),
        ]
        func label(_ o: (Double, Double, String)) -> Label {
            let (tx, ty) = (p.0 + o.0, p.1 + o.1)
            let left = o.2 == "start" ? tx : o.2 == "end" ? tx - width : tx - width / 2
            return Label(x: tx, y: ty, anchor: o.2, box: Box(x: left, y: ty - height + 3, width: width, height: height),
                         far: abs(o.1) >= 20)
        }
        for o in offsets {
            let candidate = label(o)
            let b = candidate.box
            let inside = b.x >= 2 && b.x + b.width <= Self.left + Self.plotWidth + 8 && b.y >= Self.top - 16
                && b.y + b.height <= Self.top + Self.plotHeight + 16
            if inside && !obstacles.contains(where: { $0.intersects(b) }) { return candidate }
        }
        return label(offsets[0])
    }
}

/// A logarithmic axis over the values' range (padded by a margin on each side), mapping a
/// value to a pixel position between `from` (smallest) and `to` (largest).
struct LogAxis {
    let low: Double, high: Double
    let from: Double, to: Double

    init(values: [Double], from: Double, to: Double) {
        let lo = log10(values.min()!), hi = log10(values.max()!)
        // Pad by 6% of the span, and at least ±0.03 decades so a single value has a range.
        let pad = max(0.06 * (hi - lo), 0.03)
        low = lo - pad
        high = hi + pad
        self.from = from
        self.to = to
    }

    func position(_ v: Double) -> Double { from + (log10(v) - low) / (high - low) * (to - from) }

    /// Round values inside the range: the densest of a few 1-2-5-style families that gives at
    /// most 12 ticks, so a narrow range still gets several labels and a wide one stays legible.
    func ticks() -> [Double] {
        let families: [[Double]] = [[1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8], [1, 1.5, 2, 3, 4, 5, 6, 8], [1, 2, 3, 5], [1, 2, 5], [1]]
        var best: [Double] = []
        for multipliers in families {
            var ticks: [Double] = []
            for decade in Int(floor(low))...Int(ceil(high)) {
                for m in multipliers {
                    let v = m * pow(10, Double(decade))
                    if log10(v) >= low && log10(v) <= high { ticks.append(v) }
                }
            }
            best = ticks
            if ticks.count <= 12 { break }
        }
        // More than twelve decades: keep every n-th decade.
        if best.count > 12 { best = best.enumerated().filter { $0.offset % Int(ceil(Double(best.count) / 12)) == 0 }.map(\.element) }
        return best.count < 3 && high - low < 1 ? linearTicks() : best
    }

    /// For a range narrower than the 1-1.2-1.5-... family resolves: evenly spaced round values
    /// (step 1, 2, 2.5 or 5 × 10^k), at most 8.
    func linearTicks() -> [Double] {
        let lo = pow(10, low), hi = pow(10, high)
        var exponent = floor(log10(hi - lo)) - 2
        while true {
            for m in [1.0, 2, 2.5, 5] {
                let step = m * pow(10, exponent)
                let first = (lo / step).rounded(.up)
                let last = (hi / step).rounded(.down)
                if last - first + 1 <= 8 { return stride(from: first, through: last, by: 1).map { $0 * step } }
            }
            exponent += 1
        }
    }
}

func tickLabel(_ v: Double) -> String {
    if v >= 1e5 { return String(format: "%.0e", v).replacingOccurrences(of: "e+0", with: "e").replacingOccurrences(of: "e+", with: "e") }
    if v == v.rounded() { return String(Int(v)) }
    return String(format: "%g", v)
}

fileprivate func f(_ v: Double) -> String { String(format: "%.1f", v) }

fileprivate func polygon(_ points: [(Double, Double)]) -> String {
    points.map { "\(f($0.0)),\(f($0.1))" }.joined(separator: " ")
}

func escapeXML(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&apos;"
        default: out.append(c)
        }
    }
    return out
}
