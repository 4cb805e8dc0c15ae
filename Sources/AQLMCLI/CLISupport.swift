import ArgumentParser
import Calibration
import Checkpoint
import Foundation
import Kernels
import Llama
import PackedFormat
import Tokenizer

// MARK: - One-line errors

extension AQLM {
    /// Replaces ArgumentParser's `main()`, which follows a parse or validation error with the
    /// usage text (several lines): every failure, whether a bad option, a failed `validate()`
    /// or an error thrown by `run()`, is one line `Error: <description>` on stderr and a
    /// non-zero exit (64 for usage errors, 1 otherwise). Help requests still print to stdout
    /// and exit 0.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success { Self.exit(withError: error) }
            let message = oneLine(Self.message(for: error))
            if !message.isEmpty { printError("Error: " + message) }
            Foundation.exit(code.rawValue)
        }
    }
}

/// Line breaks inside a message (a multi-line library error) folded into one line.
func oneLine(_ message: String) -> String {
    message.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        .filter { !$0.isEmpty }.joined(separator: " ")
}

/// A bad argument or input, described in one line that names it.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func printError(_ message: String, terminator: String = "\n") {
    FileHandle.standardError.write(Data((message + terminator).utf8))
}

// MARK: - JSON output

enum JSONField {
    case int(Int), string(String), null
}

/// One line of JSON: an Encodable's keys plus `extra` ones.
func jsonLine<T: Encodable>(_ value: T, extra: [String: JSONField]) throws -> String {
    let encoded = try JSONEncoder().encode(value)
    guard var object = try JSONSerialization.jsonObject(with: encoded) as? [String: Any] else {
        return String(decoding: encoded, as: UTF8.self)
    }
    for (key, field) in extra {
        switch field {
        case .int(let v): object[key] = v
        case .string(let s): object[key] = s
        case .null: object[key] = NSNull()
        }
    }
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
}

// MARK: - Models and tokenizers

/// A runnable model and its vocabulary from an alias, GGUF file, Hugging Face directory or
/// packed AQLM directory (packed layers run through the AQLM kernels). A NaN or infinite
/// weight is refused here, naming the tensor, rather than surfacing as a NaN perplexity.
/// - Parameter head: storage of the embedding table and tied head (nil: the path's default).
/// - Parameter denseMemory: `--dense-memory` in GB (nil: `DenseLinearStorage.defaultBudgetBytes`).
func loadModel(_ name: String, head: EmbeddingPrecision? = nil, denseMemory: Double? = nil) throws -> (LlamaModel, TokenizerSpec) {
    let opened = try openModel(name, embedding: head, denseMemoryBudget: denseMemoryBudget(denseMemory))
    if let tensor = firstNonFiniteTensor(opened.model) {
        throw CLIError("\(opened.path): tensor '\(tensor)' contains NaN or infinity")
    }
    return (opened.model, opened.tokenizer)
}

/// One stderr line saying how a dense model's block linears are held (nothing for a packed
/// model); commands print it once their inputs are checked (a refusal stays one line).
func logDenseLinears(_ model: LlamaModel) {
    let dense = model.denseLinears
    if dense.storage != nil { printError(dense.description) }
}

/// `--dense-memory` of the commands that run a model.
let denseMemoryHelp: ArgumentHelp = """
    GB a dense model's block linears (a GGUF or Hugging Face checkpoint; bench --dense; finetune's teacher) may take as Float32: \
    above it they stay in the file's stored type and are converted per use into one scratch matrix \
    (same results, resident memory flat in depth, slower decode); finetune's student then prepares its \
    dequantized blocks one at a time. 0 always streams. Default: half the physical memory.
    """

/// `--dense-memory GB` as bytes (GB = 10⁹ bytes); nil gives the default budget.
func denseMemoryBudget(_ gigabytes: Double?) throws -> Int {
    guard let gigabytes else { return DenseLinearStorage.defaultBudgetBytes }
    guard gigabytes >= 0, gigabytes.isFinite else { throw ValidationError("--dense-memory \(gigabytes): must be 0 or more GB") }
    return gigabytes * 1e9 >= Double(Int.max) ? Int.max : Int(gigabytes * 1e9)
}

/// The JSON fields that say how a model's dense block linears were held: `dense_linears`
/// ("float32", "streamed", or null for a packed model run through its kernels) and
/// `dense_linear_float32_bytes` (all Float32 matrices, or the one streaming scratch).
func denseLinearFields(_ model: LlamaModel) -> [String: JSONField] {
    let dense = model.denseLinears
    return ["dense_linears": dense.storage.map { .string($0.rawValue) } ?? .null,
            "dense_linear_float32_bytes": .int(dense.float32Bytes)]
}

/// The vocabulary alone, for commands that run no model: the same tokenizer `openModel` would
/// give (padded to the model's vocabulary for directories), without reading any weights.
func openTokenizer(_ name: String) throws -> TokenizerSpec {
    let path = ModelPaths.resolve(name)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw CheckpointError.missingFile(path)
    }
    guard isDirectory.boolValue else { return try GGUFFile(path: path).tokenizerSpec() }
    let config = try HuggingFaceConfig(path: (path as NSString).appendingPathComponent(HuggingFaceConfig.fileName))
    return try HuggingFaceTokenizer.read(directory: path).padded(toVocabSize: config.llama.vocabSize)
}

func makeTokenizer(_ spec: TokenizerSpec) throws -> BPETokenizer {
    do {
        return try BPETokenizer(spec: spec)
    } catch {
        throw ValidationError("tokenizer: \(error)")
    }
}

/// The Hugging Face name of the first float tensor of `model` holding a NaN or infinity.
/// Quantized layers are not scanned: AQLMLinear already refuses non-finite codebooks and scales.
func firstNonFiniteTensor(_ model: LlamaModel) -> String? {
    if !model.embeddingTable.allFinite { return "model.embed_tokens.weight" }
    var tensors: [(String, [Float])] = [("model.norm.weight", model.finalNorm)]
    for (b, block) in model.layers.enumerated() {
        let prefix = "model.layers.\(b)."
        tensors.append((prefix + "input_layernorm.weight", block.inputNorm))
        tensors.append((prefix + "post_attention_layernorm.weight", block.postAttentionNorm))
        for linear in LlamaLinear.allCases {
            if let dense = block[linear] as? DenseLinear { tensors.append((linear.weightName(layer: b), dense.weights)) }
            // Streamed weights are checked in chunks from their stored form (no Float32 copy).
            if let streamed = block[linear] as? StreamedLinear, let stored = streamed.weight as? WeightTensor,
               !stored.allValuesFinite() { return linear.weightName(layer: b) }
        }
        for (name, bias) in [("q", block.qBias), ("k", block.kBias), ("v", block.vBias)] {
            if let bias { tensors.append((prefix + "self_attn.\(name)_proj.bias", bias)) }
        }
    }
    if let head = model.head as? DenseLinear { tensors.append(("lm_head.weight", head.weights)) }
    if let head = model.head as? EmbeddingTable, !head.allFinite { return tensors.first { !allFinite($0.1) }?.0 ?? "lm_head.weight" }
    return tensors.first { !allFinite($0.1) }?.0
}

/// Whether every value is finite: x − x is 0 for finite x and NaN for ±inf or NaN, and a NaN
/// survives every later addition, so one SIMD sum answers for the whole array.
func allFinite(_ values: [Float]) -> Bool {
    values.withUnsafeBufferPointer { p in
        guard let base = p.baseAddress else { return true }
        let raw = UnsafeRawPointer(base)
        let wide = p.count / 16 * 16
        var acc = SIMD16<Float>()
        var i = 0
        while i < wide {
            let v = raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
            acc += v - v
            i += 16
        }
        var tail: Float = 0
        for j in wide..<p.count { tail += p[j] - p[j] }
        return acc.sum() + tail == 0
    }
}

/// `--threads N` fixes the thread count (our loops, which also run the BLAS products' panels);
/// without it the count follows the
/// cores other processes leave free, re-checked at the run's natural boundaries
/// (`Threads.followFreeCores`).
func applyThreadsOption(_ threads: Int?) {
    if let threads { Threads.set(threads) } else { Threads.followFreeCores() }
}

/// `--threads` of the commands whose count follows the free cores.
let threadsHelp: ArgumentHelp = """
    Cores to use. Default: all, fewer while other processes keep some busy. Results are \
    bit-identical at any count.
    """

/// The --calibration help of quantize, finetune and sweep.
let calibrationHelp: ArgumentHelp = """
    Calibration text: a registry name from calibration/registry.tsv or a text file. Default \(CalibrationSource.defaultName): \
    WikiText-2's validation split plus half as many bytes of the Perl manuals Debian ships, built once by tools/setup.sh \
    (wikitext2-valid: WikiText alone).
    """
