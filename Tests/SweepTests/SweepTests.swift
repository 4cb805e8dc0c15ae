import XCTest
import Foundation
import Checkpoint
import Evaluation
import PackedFormat
import QuantizePipeline
import Sweep
import Tokenizer

/// `aqlm sweep` end to end on the tiny random Llama (2 blocks, hidden 64, context 128) with a
/// small generated text: quantize, evaluate, write the four outputs, resume.
final class SweepTests: XCTestCase {
    var directory = ""
    var modelPath: String { directory + "/tiny.gguf" }
    var textPath: String { directory + "/eval.txt" }
    var calibrationPath: String { directory + "/calibration.txt" }

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "sweep-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try TinyModel.writeGGUF(to: modelPath, seed: 3)
        try generatedText(seed: 1, words: 400).write(toFile: textPath, atomically: true, encoding: .utf8)
        try generatedText(seed: 2, words: 600).write(toFile: calibrationPath, atomically: true, encoding: .utf8)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Seeded word salad over a small vocabulary (so the tiny tokenizer's merges fire).
    func generatedText(seed: UInt64, words: Int) -> String {
        let vocabulary = ["the", "rain", "in", "hills", "is", "cold", "and", "green", "north", "morning", "they", "there",
                          "running", "along", "river", "on", "a", "here", "another", "ring"]
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        var out: [String] = []
        for i in 0..<words {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            out.append(vocabulary[Int(state >> 33) % vocabulary.count] + (i % 13 == 12 ? "." : ""))
        }
        return out.joined(separator: " ")
    }

    func options(_ schemes: String, out: String) throws -> SweepOptions {
        var o = SweepOptions(model: modelPath, schemes: try SweepOptions.parseSchemes(schemes), outputDirectory: out)
        o.textPath = textPath
        o.chunks = 3
        o.context = 64
        o.quantize = QuantizeOptions.preset(.fast)
        o.presetName = "fast"
        o.quantize.calibration = calibrationPath
        o.quantize.samples = 4
        o.quantize.sequenceLength = 32
        o.quantize.aqlm.maxIterations = 2
        o.benchmarkPrompt = 8
        o.benchmarkDecode = 16
        o.benchmarkRepetitions = 1
        return o
    }

    func modificationDate(_ path: String) throws -> Date {
        try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date, path)
    }

    func testSweepRunsEndToEndWritesOutputsAndResumes() throws {
        let out = directory + "/sweep"
        let first = try Sweep(options: try options("rtn2,rvq1x8,1x8", out: out)).run()
        XCTAssertEqual(first.quantized, ["rtn2", "rvq1x8", "1x8"])
        XCTAssertEqual(first.evaluated, ["original", "rtn2", "rvq1x8", "1x8"])
        XCTAssertEqual(first.rows.map(\.scheme), ["original", "rtn2", "rvq1x8", "1x8"])
        XCTAssertEqual(first.rows.map(\.family), [.original, .rtn, .rvq, .aqlm])

        let original = first.rows[0]
        XCTAssertEqual(original.bitsPerWeight, 32, "the tiny GGUF stores F32 matrices")
        XCTAssertEqual(original.kldMean, 0)
        XCTAssertEqual(original.top1Agreement, 1)
        XCTAssertNil(original.quantizeSeconds)
        // The original's perplexity as the Evaluation API computes it from the text directly:
        // the sweep passed the text, chunks and context through.
        let weights = try loadCheckpoint(modelPath)
        let tokens = try BPETokenizer(spec: weights.tokenizer).encode(try readTextFile(textPath))
        let direct = try evaluatePerplexity(model: try openModel(modelPath).model, tokens: tokens, bos: nil, textName: textPath,
                                            options: PerplexityOptions(context: 64, maxChunks: 3))
        XCTAssertEqual(original.ppl, direct.ppl, accuracy: 1e-9 * direct.ppl)
        XCTAssertEqual(original.fileBytes, try FileManager.default.attributesOfItem(atPath: modelPath)[.size] as? Int)

        for row in first.rows.dropFirst() {
            XCTAssertTrue(row.ppl.isFinite && row.ppl > 1, "\(row.scheme) ppl \(row.ppl)")
            XCTAssertGreaterThan(try XCTUnwrap(row.kldMean), 0, row.scheme)
            XCTAssertTrue((0...1).contains(try XCTUnwrap(row.top1Agreement)), row.scheme)
            XCTAssertGreaterThan(try XCTUnwrap(row.quantizeSeconds), 0, row.scheme)
            XCTAssertGreaterThan(try XCTUnwrap(row.decodeTokensPerSecond), 0, row.scheme)
            XCTAssertEqual(row.fileBytes, directoryBytes(out + "/models/" + row.scheme), row.scheme)
            let report = try readJSONFile(out + "/models/\(row.scheme)/report.json")
            XCTAssertEqual(row.bitsPerWeight, try XCTUnwrap(report["bits_per_weight"]?.double), row.scheme)
        }
        // rtn2: 2-bit codes plus fp16 scale and minimum per group of 64 = 2.5 bits.
        XCTAssertEqual(first.rows[1].bitsPerWeight, 2.5, accuracy: 1e-9)
        // rvq1x8 and 1x8 store the same code shape, so the same bits.
        XCTAssertEqual(first.rows[2].bitsPerWeight, first.rows[3].bitsPerWeight)
        XCTAssertTrue(PackedCheckpoint.isPacked(directory: out + "/models/1x8"))

        try checkOutputs(out, rows: first.rows)

        // Resume: nothing is quantized or evaluated again; finished results stay untouched.
        let finished = ["original", "rtn2", "rvq1x8", "1x8"].map { out + "/results/\($0).json" }
        let modelFile = out + "/models/1x8/model.safetensors"
        let datesBefore = try (finished + [modelFile]).map(modificationDate)
        let second = try Sweep(options: try options("rtn2,rvq1x8,1x8", out: out)).run()
        XCTAssertEqual(second.quantized, [])
        XCTAssertEqual(second.evaluated, [])
        XCTAssertEqual(second.rows, first.rows)
        XCTAssertEqual(try (finished + [modelFile]).map(modificationDate), datesBefore)

        // A model without its result is evaluated, not quantized again, with the same figures.
        try FileManager.default.removeItem(atPath: out + "/results/1x8.json")
        let third = try Sweep(options: try options("rtn2,rvq1x8,1x8", out: out)).run()
        XCTAssertEqual(third.quantized, [])
        XCTAssertEqual(third.evaluated, ["1x8"])
        XCTAssertEqual(try modificationDate(modelFile), datesBefore.last)
        XCTAssertEqual(third.rows[3].ppl, first.rows[3].ppl, accuracy: 1e-9 * first.rows[3].ppl)
        XCTAssertEqual(try XCTUnwrap(third.rows[3].kldMean), try XCTUnwrap(first.rows[3].kldMean), accuracy: 1e-9)
    }

    /// results.csv/json/md and tradeoff.svg each hold exactly `rows`.
    func checkOutputs(_ out: String, rows: [SweepRow]) throws {
        let csv = try String(contentsOfFile: out + "/results.csv", encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(csv.first, "scheme,family,bits_per_weight,file_bytes,ppl,ppl_stderr,kld_mean,top1_agreement,quantize_seconds,decode_tokens_per_second,external")
        XCTAssertEqual(csv.count, rows.count + 1)
        for (line, row) in zip(csv.dropFirst(), rows) {
            let cells = csvCells(line)
            XCTAssertEqual(cells.count, 11, line)
            XCTAssertEqual(cells[0], row.scheme)
            XCTAssertEqual(Double(cells[4]), row.ppl)
            XCTAssertEqual(cells[10], row.external ? "true" : "false")
        }

        let json = try readJSONFile(out + "/results.json")
        let items = try XCTUnwrap(json.array)
        XCTAssertEqual(items.count, rows.count)
        for (item, row) in zip(items, rows) {
            let keys = try XCTUnwrap(item.members).map(\.0).filter { $0 != "note" }
            XCTAssertEqual(keys, SweepRow.columns)
            XCTAssertEqual(try SweepRow(json: item, source: "results.json"), row)
        }

        let markdown = try String(contentsOfFile: out + "/results.md", encoding: .utf8)
        let tableRows = markdown.split(separator: "\n").filter { $0.hasPrefix("| ") && !$0.hasPrefix("| scheme") }
        XCTAssertEqual(tableRows.map { String($0.split(separator: "|")[0].trimmingCharacters(in: .whitespaces)) },
                       rows.map { $0.external ? "\($0.scheme) *(external)*" : $0.scheme })

        let svg = SVGInspector(svg: try String(contentsOfFile: out + "/tradeoff.svg", encoding: .utf8))
        XCTAssertTrue(svg.wellFormed, svg.error)
        XCTAssertEqual(svg.rootElement, "svg")
        XCTAssertEqual(svg.points.map(\.scheme), rows.map(\.scheme))
        XCTAssertEqual(svg.points.map(\.label), rows.map(\.scheme))
        XCTAssertEqual(svg.points.map(\.family), rows.map(\.family.rawValue))
        XCTAssertTrue(svg.points.allSatisfy(\.hasMarker))
    }

    func testReferencePointsAreMarkedExternalAndSettingsChangesAreRefused() throws {
        let csv = directory + "/reference.csv"
        try """
        # measured elsewhere
        method,bits_per_weight,ppl,kld,ppl_stderr,top1,note
        "tool, A",4.5,30.5,0.05,0.4,95.5,100 chunks
        tool B,3.25,41,,,,
        """.write(toFile: csv, atomically: true, encoding: .utf8)
        let out = directory + "/with-reference"
        var o = try options("rtn3", out: out)
        o.referenceCSV = csv
        let outcome = try Sweep(options: o).run()
        XCTAssertEqual(outcome.rows.map(\.scheme), ["original", "rtn3", "tool, A", "tool B"])
        XCTAssertEqual(outcome.rows.map(\.external), [false, false, true, true])
        let a = outcome.rows[2], b = outcome.rows[3]
        XCTAssertEqual(a.bitsPerWeight, 4.5)
        XCTAssertEqual(a.ppl, 30.5)
        XCTAssertEqual(a.kldMean, 0.05)
        XCTAssertEqual(a.pplStderr, 0.4)
        XCTAssertEqual(try XCTUnwrap(a.top1Agreement), 0.955, accuracy: 1e-12)
        XCTAssertEqual(a.note, "100 chunks")
        XCTAssertNil(b.kldMean)
        XCTAssertNil(b.top1Agreement)
        try checkOutputs(out, rows: outcome.rows)
        let csvText = try String(contentsOfFile: out + "/results.csv", encoding: .utf8)
        XCTAssertTrue(csvText.contains("\n\"tool, A\",external,4.5,,30.5,0.4,0.05,0.955,,,true\n"), csvText)
        XCTAssertTrue(try String(contentsOfFile: out + "/results.md", encoding: .utf8).contains("- tool, A: 100 chunks"))

        // Same directory, different evaluation: refused in one line naming the setting.
        o.chunks = 2
        XCTAssertThrowsError(try Sweep(options: o).run()) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("chunks was 3, now 2"), message)
            XCTAssertFalse(message.contains("\n"))
        }
    }

    func testReferenceCSVErrorsAreOneClearLine() throws {
        let cases: [(String, String)] = [
            ("", "empty; expected a header"),
            ("method,bits_per_weight,ppl\nx,2,3\n", "line 1: no 'kld' column"),
            ("method,bits_per_weight,ppl,kld,colour\n", "line 1: unknown column 'colour'"),
            ("method,bits_per_weight,ppl,kld\nx,two,30,0.1\n", "line 2: bits_per_weight 'two' is not a number"),
            ("method,bits_per_weight,ppl,kld\n\nx,2,30\n", "line 3: 3 fields, the header has 4"),
            ("method,bits_per_weight,ppl,kld\nx,2,,0.1\n", "line 2: empty ppl"),
            ("method,bits_per_weight,ppl,kld\nx,2,0.5,0.1\n", "line 2: ppl 0.5 is outside"),
            ("method,bits_per_weight,ppl,kld,top1\nx,2,30,0.1,150\n", "line 2: top1 150 is outside"),
            ("method,bits_per_weight,ppl,kld\n\"x,2,30,0.1\n", "line 2: unterminated quoted field"),
            ("method,bits_per_weight,ppl,kld\n", "a header but no points"),
            ("method,method,ppl,kld\n", "column 'method' appears twice"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try ReferencePoints.parse(text, source: "ref.csv"), expected) { error in
                let message = "\(error)"
                XCTAssertTrue(message.hasPrefix("ref.csv"), message)
                XCTAssertTrue(message.contains(expected), "\(message) lacks \(expected)")
                XCTAssertFalse(message.contains("\n"), message)
            }
        }
        XCTAssertThrowsError(try ReferencePoints.read(path: directory + "/missing.csv")) { error in
            XCTAssertEqual("\(error)", "--reference \(directory)/missing.csv: no such file")
        }
        let parsed = try ReferencePoints.parse("method,ppl,kld,bits_per_weight\r\n\"say \"\"hi\"\"\",25,0.2,4\r\n", source: "ref.csv")
        XCTAssertEqual(parsed, [SweepRow(scheme: "say \"hi\"", family: .external, bitsPerWeight: 4, ppl: 25, kldMean: 0.2)])
    }

    func testSchemeListsAreCheckedBeforeAnyWork() throws {
        XCTAssertEqual(try SweepOptions.parseSchemes(" rtn2, 2x8 ,pq2x8,,").map(\.description), ["rtn2", "2x8", "pq2x8"])
        for (list, expected) in [("2x8,rtn2,2x8", "2x8 is listed twice"), ("", "no scheme given"), ("2x8,zz9", "unknown scheme 'zz9'")] {
            XCTAssertThrowsError(try SweepOptions.parseSchemes(list)) { error in
                XCTAssertTrue("\(error)".hasPrefix("--schemes: "), "\(error)")
                XCTAssertTrue("\(error)".contains(expected), "\(error)")
            }
        }
        var o = try options("rtn2", out: directory + "/bad")
        o.textPath = directory + "/no-such-text.txt"
        XCTAssertThrowsError(try Sweep(options: o).run()) { XCTAssertEqual("\($0)", "\(self.directory)/no-such-text.txt: no such file") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/bad"), "nothing created for a refused sweep")
    }

    func testPlotLabelsEveryFinitePointAndListsTheRest() throws {
        // Crowded like the real sweep: several schemes near 2 bits, PPL over four decades.
        let rows = [
            SweepRow(scheme: "original", family: .original, bitsPerWeight: 5, ppl: 22.4),
            SweepRow(scheme: "rtn2", family: .rtn, bitsPerWeight: 2.5, ppl: 48_000),
            SweepRow(scheme: "rtn3", family: .rtn, bitsPerWeight: 3.5, ppl: 95),
            SweepRow(scheme: "rvq2x8", family: .rvq, bitsPerWeight: 2.15, ppl: 300),
            SweepRow(scheme: "pq2x8", family: .pq, bitsPerWeight: 2.15, ppl: 700),
            SweepRow(scheme: "2x8", family: .aqlm, bitsPerWeight: 2.15, ppl: 120),
            SweepRow(scheme: "1x8", family: .aqlm, bitsPerWeight: 1.1, ppl: 2_000),
            SweepRow(scheme: "llama.cpp <Q2_K> & co", family: .external, bitsPerWeight: 4.23, ppl: 26.68),
            SweepRow(scheme: "broken", family: .rtn, bitsPerWeight: 2, ppl: .infinity),
        ]
        var plot = TradeoffPlot(rows: rows, title: "t & <t>")
        plot.caption = "caption"
        let text = plot.svg()
        let svg = SVGInspector(svg: text)
        XCTAssertTrue(svg.wellFormed, svg.error)
        XCTAssertEqual(svg.points.map(\.scheme), rows.dropLast().map(\.scheme))
        // rtn2 is more than 100x the best PPL: pinned to the top edge with its value in the label.
        XCTAssertEqual(svg.points.map(\.label), rows.dropLast().map { $0.scheme == "rtn2" ? "rtn2 (PPL 48000)" : $0.scheme })
        XCTAssertTrue(text.contains("points above PPL 2240 sit on the top edge"), text)
        XCTAssertTrue(text.contains("not plotted: broken (PPL inf)"))
        // Log axes: decades on the PPL axis, several bit-width ticks.
        for tick in ["100", "1000"] { XCTAssertTrue(svg.axisTexts.contains(tick), "\(svg.axisTexts)") }
        XCTAssertFalse(svg.axisTexts.contains("10000"), "the PPL axis stops at 100x the best point")
        for tick in ["2", "3", "4", "5"] { XCTAssertTrue(svg.axisTexts.contains(tick), "\(svg.axisTexts)") }

        // A narrow range still gets several labelled ticks.
        let narrow = SVGInspector(svg: TradeoffPlot(rows: [rows[0], SweepRow(scheme: "q", family: .aqlm, bitsPerWeight: 3, ppl: 26)],
                                                   title: "n").svg())
        XCTAssertGreaterThanOrEqual(narrow.axisTexts.filter { Double($0).map { (20...30).contains($0) } ?? false }.count, 3,
                                    "\(narrow.axisTexts)")
    }
}

func directoryBytes(_ path: String) -> Int {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
    return names.reduce(0) { sum, name in
        sum + ((try? FileManager.default.attributesOfItem(atPath: path + "/" + name))?[.size] as? Int ?? 0)
    }
}

/// Splits one CSV line at commas outside double quotes (no escaped quotes needed here).
func csvCells(_ line: String) -> [String] {
    var cells = [""]
    var quoted = false
    for c in line {
        if c == "\"" { quoted.toggle() } else if c == "," && !quoted { cells.append("") } else { cells[cells.count - 1].append(c) }
    }
    return cells
}
