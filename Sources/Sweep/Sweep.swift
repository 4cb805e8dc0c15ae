import Foundation
import Calibration
import Checkpoint
import Evaluation
import Llama
import PackedFormat
import QuantizePipeline
import Tokenizer

/// What a sweep did in this run (a resumed sweep reuses finished work).
public struct SweepOutcome: Sendable {
    /// Original first, then the schemes in the order asked, then external points.
    public var rows: [SweepRow]
    /// Schemes quantized by this run (not found finished in the output directory).
    public var quantized: [String]
    /// Schemes (and "original") evaluated by this run.
    public var evaluated: [String]
    public var outputFiles: [String]
}

/// Quantizes one model with each scheme and evaluates every result against the original:
/// perplexity under llama.cpp's protocol, mean KL(original ‖ quantized) and top-1 agreement
/// on the same chunks, and decode speed of the model as stored (packed kernels for AQLM-family
/// schemes). Work that does not depend on the scheme (tokenized evaluation and calibration
/// text, the original's reference log-probs) is done once and cached in the output directory;
/// finished schemes are not redone, and a scheme whose model exists but was not evaluated is
/// evaluated without quantizing again.
public struct Sweep {
    public let options: SweepOptions
    /// Receives one line per step and per evaluated chunk.
    public var log: (String) -> Void = { _ in }

    public init(options: SweepOptions) {
        self.options = options
    }

    public func run() throws -> SweepOutcome {
        try options.validate()
        let external = try options.referenceCSV.map { try ReferencePoints.read(path: $0) } ?? []
        let textBytes = try readTextFile(options.textPath)
        // Before the output directory exists: a bad --model leaves nothing behind.
        try checkCheckpointPath(options.model)
        let directory = SweepDirectory(root: options.outputDirectory)
        try directory.prepare(settings: options.settings)

        var original = LazyOriginal(path: options.model)
        var outcome = SweepOutcome(rows: [], quantized: [], evaluated: [], outputFiles: [])
        let tokens = try cachedTokens(directory.evalTokens, text: textBytes, original: &original)
        var rows = [try originalRow(tokens: tokens, directory: directory, original: &original, outcome: &outcome)]
        var quantizeOptions = options.quantize
        for choice in options.schemes {
            rows.append(try schemeRow(choice, tokens: tokens, directory: directory, quantizeOptions: &quantizeOptions,
                                      original: &original, outcome: &outcome))
            // The table so far, so a long sweep can be looked at before it ends.
            _ = try writeOutputs(rows + external, directory: directory)
        }
        outcome.rows = rows + external
        outcome.outputFiles = try writeOutputs(outcome.rows, directory: directory)
        return outcome
    }

    /// The original's row and reference log-probs: from an earlier run, or evaluated now.
    func originalRow(tokens: [Int], directory: SweepDirectory, original: inout LazyOriginal,
                     outcome: inout SweepOutcome) throws -> SweepRow {
        if let row = try directory.readRow("original"), FileManager.default.fileExists(atPath: directory.referenceLogProbs) {
            return row
        }
        let row = try evaluateOriginal(try original.get(), tokens: tokens, directory: directory)
        try directory.writeRow(row, as: "original")
        outcome.evaluated.append("original")
        return row
    }

    /// One scheme's row: from an earlier run; or its existing model evaluated; or quantized
    /// (with the calibration tokens cached on first need) and then evaluated.
    func schemeRow(_ choice: QuantizationChoice, tokens: [Int], directory: SweepDirectory,
                   quantizeOptions: inout QuantizeOptions, original: inout LazyOriginal,
                   outcome: inout SweepOutcome) throws -> SweepRow {
        let scheme = choice.description
        if let row = try directory.readRow(scheme) {
            log("\(scheme): finished earlier (\(directory.result(scheme)))")
            return row
        }
        let modelPath = directory.model(scheme)
        if !FileManager.default.fileExists(atPath: modelPath) {
            if choice.needsCalibration && quantizeOptions.calibrationTokens == nil {
                quantizeOptions.calibrationTokens = try calibrationTokens(directory: directory, original: &original)
            }
            original.release()
            try quantize(choice, to: modelPath, base: quantizeOptions)
            outcome.quantized.append(scheme)
        }
        original.release()
        let row = try evaluateQuantized(choice, modelPath: modelPath, tokens: tokens, directory: directory)
        try directory.writeRow(row, as: scheme)
        outcome.evaluated.append(scheme)
        return row
    }

    // MARK: - Scheme-independent work, cached

    /// Token ids of `text` under the original's tokenizer, from the cache when it is current.
    func cachedTokens(_ path: String, text: [UInt8], original: inout LazyOriginal) throws -> [Int] {
        if let ids = TokenCache.load(path, sourceBytes: text.count) { return ids }
        let started = Date()
        let ids = try BPETokenizer(spec: try original.get().tokenizer).encode(text)
        try TokenCache.save(ids, to: path, sourceBytes: text.count)
        log(String(format: "tokenized %@: %d bytes -> %d tokens, %.1f s", path, text.count, ids.count,
                   Date().timeIntervalSince(started)))
        return ids
    }

    func calibrationTokens(directory: SweepDirectory, original: inout LazyOriginal) throws -> [Int] {
        let path = try CalibrationSource.resolve(options.quantize.calibration)
        guard let data = FileManager.default.contents(atPath: path) else { throw CalibrationError.missingFile(path) }
        return try cachedTokens(directory.calibrationTokens, text: [UInt8](data), original: &original)
    }

    // MARK: - One model

    /// The original model's row; saves its top-k log-probs as every other row's KLD reference.
    func evaluateOriginal(_ original: OpenedModel, tokens: [Int], directory: SweepDirectory) throws -> SweepRow {
        let temporary = directory.referenceLogProbs + ".partial"
        log("original: perplexity over \(options.chunks) chunks of \(options.context), saving reference log-probs")
        let result = try perplexity(original, tokens: tokens, name: "original",
                                    saveLogits: temporary, klBase: nil)
        try moveReplacing(temporary, to: directory.referenceLogProbs)
        return SweepRow(scheme: "original", family: .original, bitsPerWeight: storedBlockLinearBits(original.path),
                        fileBytes: storedBytes(original.path), ppl: result.ppl, pplStderr: result.pplStderr,
                        kldMean: 0, top1Agreement: 1, decodeTokensPerSecond: decodeSpeed(original.model),
                        note: "the model the sweep started from, as stored; the KLD reference")
    }

    func quantize(_ choice: QuantizationChoice, to path: String, base: QuantizeOptions) throws {
        var options = base
        options.choice = choice
        log("\(choice): quantizing into \(path)")
        var job = BlockwiseQuantization(modelPath: self.options.model, outputPath: path, options: options)
        let log = self.log
        job.log = { log("\(choice): \($0)") }
        // The report's peak RSS is the quantization's, not the evaluations' before it.
        resetPeakResidentBytes()
        let report = try job.run()
        log(String(format: "%@: quantized, %.3f bits per weight, %.0f s, peak RSS %.2f GB", choice.description,
                   report.bitsPerWeight, report.wallSeconds, Double(report.peakRSSBytes) / 1e9))
    }

    func evaluateQuantized(_ choice: QuantizationChoice, modelPath: String, tokens: [Int],
                           directory: SweepDirectory) throws -> SweepRow {
        let report = try readJSONFile((modelPath as NSString).appendingPathComponent("report.json"))
        guard let bits = report["bits_per_weight"]?.double else {
            throw SweepError("\(modelPath)/report.json: no bits_per_weight")
        }
        // Quality with the stored embeddings and head as they are (Float32 at run time, as the
        // original runs), so PPL and KLD measure the block linears' quantization alone.
        let exact = try openModel(modelPath, embedding: .f32)
        log("\(choice): perplexity and KLD over \(options.chunks) chunks")
        let result = try perplexity(exact, tokens: tokens, name: choice.description, saveLogits: nil,
                                    klBase: directory.referenceLogProbs)
        // Speed as `aqlm generate` opens the model (its default embedding/head precision).
        let speed = decodeSpeed(try openModel(modelPath).model)
        return SweepRow(scheme: choice.description, family: MethodFamily(choice), bitsPerWeight: bits,
                        fileBytes: storedBytes(modelPath), ppl: result.ppl, pplStderr: result.pplStderr,
                        kldMean: result.kldMean, top1Agreement: result.top1Agreement,
                        quantizeSeconds: report["wall_seconds"]?.double, decodeTokensPerSecond: speed)
    }

    func perplexity(_ opened: OpenedModel, tokens: [Int], name: String, saveLogits: String?,
                    klBase: String?) throws -> PerplexityResult {
        let spec = opened.tokenizer
        let log = self.log
        let evaluation = PerplexityOptions(context: options.context, maxChunks: options.chunks, method: .llama,
                                           topK: options.topK, saveLogitsPath: saveLogits, klBasePath: klBase)
        let result = try evaluatePerplexity(model: opened.model, tokens: tokens, bos: spec.addBOS ? spec.bosId : nil,
                                            textName: options.textPath, options: evaluation) { p in
            if p.chunk == p.chunks || p.chunk % 10 == 0 {
                log(String(format: "%@: chunk %d/%d, running PPL %.4f, %.0f s", name, p.chunk, p.chunks, p.runningPPL,
                           p.elapsedSeconds))
            }
        }
        log(String(format: "%@: PPL %.4f ± %.4f", name, result.ppl, result.pplStderr)
            + (result.kldMean.map { String(format: ", KLD %.5f", $0) } ?? "")
            + (result.top1Agreement.map { String(format: ", same top-1 %.2f %%", 100 * $0) } ?? ""))
        return result
    }

    /// Single-token decode speed after a short prompt, best of the configured repetitions.
    func decodeSpeed(_ model: LlamaModel) -> Double {
        let prompt = min(options.benchmarkPrompt, model.config.contextLength / 2)
        let decode = min(options.benchmarkDecode, model.config.contextLength - prompt)
        let bench = benchmarkForward(model: model, prefillTokens: prompt, decodeTokens: decode,
                                     repetitions: options.benchmarkRepetitions, sgemmShape: (m: 8, n: 8, k: 8))
        return bench.decodeTokensPerSecond
    }

    // MARK: - Outputs

    func writeOutputs(_ rows: [SweepRow], directory: SweepDirectory) throws -> [String] {
        let table = ResultsTable(rows: rows)
        let header = SweepDescription(options: options)
        try directory.writeText(table.csv(), to: "results.csv")
        try directory.writeText(table.json().serialized(indent: 2) + "\n", to: "results.json")
        try directory.writeText(table.markdown(title: header.title, details: header.lines), to: "results.md")
        var plot = TradeoffPlot(rows: rows, title: header.title)
        plot.caption = header.caption
        try directory.writeText(plot.svg(), to: "tradeoff.svg")
        return ["results.csv", "results.json", "results.md", "tradeoff.svg"].map { directory.path($0) }
    }
}

/// The original model, opened on first use and dropped before quantizing (it is not needed
/// again once the token caches and reference log-probs exist, and it is the largest thing held).
struct LazyOriginal {
    let path: String
    private var opened: OpenedModel?

    init(path: String) {
        self.path = path
    }

    mutating func get() throws -> OpenedModel {
        if let opened { return opened }
        let model = try openModel(path)
        opened = model
        return model
    }

    mutating func release() { opened = nil }
}

/// Bits per weight of the original's block linears as stored: GGUF tensor types, or the
/// safetensors dtypes of a model directory; 16 when neither tells (Hugging Face's usual fp16/bf16).
func storedBlockLinearBits(_ path: String) -> Double {
    if let gguf = try? GGUFFile(path: path) { return gguf.summary().blockLinearBitsPerWeight }
    let fm = FileManager.default
    let names = (try? fm.contentsOfDirectory(atPath: path))?.filter { $0.hasSuffix(".safetensors") } ?? []
    var bytes = 0, parameters = 0
    for name in names {
        guard let file = try? SafeTensorsFile(path: (path as NSString).appendingPathComponent(name)) else { continue }
        for t in file.tensors where TensorRole(huggingFaceName: t.name) == .blockLinear {
            bytes += t.dtype.byteSize * t.elementCount
            parameters += t.elementCount
        }
    }
    return parameters > 0 ? 8 * Double(bytes) / Double(parameters) : 16
}

func moveReplacing(_ source: String, to destination: String) throws {
    guard rename(source, destination) == 0 else {
        throw SweepError("cannot move \(source) to \(destination): \(String(cString: strerror(errno)))")
    }
}
