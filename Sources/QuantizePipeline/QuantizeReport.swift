import Checkpoint

/// One quantized linear's figures, as `report.json` lists them.
public struct LayerReport: Sendable {
    public var name: String
    public var shape: [Int]
    /// tr((W−Ŵ)H(W−Ŵ)ᵀ)/tr(WHWᵀ) after initialisation and of the stored (fp16) result.
    public var relativeErrorBefore: Double
    public var relativeErrorAfter: Double
    public var usageEntropyBits: [Double]
    public var unusedCodes: [Int]
    public var deadCodeRestarts: Int
    public var bitsPerWeight: Double
    public var seconds: Double

    var json: JSONValue {
        .object([
            ("name", .string(name)),
            ("shape", .array(shape.map(JSONValue.int))),
            ("relative_error_before", .double(relativeErrorBefore)),
            ("relative_error_after", .double(relativeErrorAfter)),
            ("usage_entropy_bits", .array(usageEntropyBits.map(JSONValue.double))),
            ("unused_codes", .array(unusedCodes.map(JSONValue.int))),
            ("dead_code_restarts", .int(deadCodeRestarts)),
            ("bits_per_weight", .double(bitsPerWeight)),
            ("seconds", .double(seconds)),
        ])
    }

    init(json j: JSONValue) {
        name = j["name"]?.string ?? ""
        shape = j["shape"]?.array?.compactMap(\.int) ?? []
        relativeErrorBefore = j["relative_error_before"]?.double ?? .nan
        relativeErrorAfter = j["relative_error_after"]?.double ?? .nan
        usageEntropyBits = j["usage_entropy_bits"]?.array?.compactMap(\.double) ?? []
        unusedCodes = j["unused_codes"]?.array?.compactMap(\.int) ?? []
        deadCodeRestarts = j["dead_code_restarts"]?.int ?? 0
        bitsPerWeight = j["bits_per_weight"]?.double ?? .nan
        seconds = j["seconds"]?.double ?? .nan
    }

    init(name: String, shape: [Int], relativeErrorBefore: Double, relativeErrorAfter: Double, usageEntropyBits: [Double],
         unusedCodes: [Int], deadCodeRestarts: Int, bitsPerWeight: Double, seconds: Double) {
        self.name = name
        self.shape = shape
        self.relativeErrorBefore = relativeErrorBefore
        self.relativeErrorAfter = relativeErrorAfter
        self.usageEntropyBits = usageEntropyBits
        self.unusedCodes = unusedCodes
        self.deadCodeRestarts = deadCodeRestarts
        self.bitsPerWeight = bitsPerWeight
        self.seconds = seconds
    }
}

/// One block's figures. `outputError` is the AQLM reference's block metric: the mean over
/// calibration sequences of ‖Y_quantized − Y_target‖² / ‖Y_quantized‖², Y_target being the
/// full-precision block applied to the same (already quantized-prefix) inputs.
public struct BlockReport: Sendable {
    public var index: Int
    public var outputError: Double
    public var outputErrorFinetuned: Double?
    /// With fp-chain targets: the block's output error against the full-precision model's own
    /// hidden states (what block-wise fine-tuning minimises), before and after fine-tuning. The
    /// local errors above then compare against a different goal and may rise on purpose.
    public var chainError: Double?
    public var chainErrorFinetuned: Double?
    public var seconds: Double
    public var calibrationSeconds: Double
    /// What block-wise fine-tuning adds to `seconds`, when it ran: measuring the error before
    /// it, advancing the full-precision chain (fp-chain targets), and training (with its
    /// validation passes). The pass that makes the next block's inputs, which runs either way,
    /// is not counted.
    public var finetuneSeconds: Double?
    /// The process's peak resident memory when the block was done (nil where unknown): flat
    /// from block to block when memory does not grow with depth.
    public var peakRSSBytes: Int?
    public var layers: [LayerReport]

    var json: JSONValue {
        var members: [(String, JSONValue)] = [
            ("index", .int(index)),
            ("output_error", .double(outputError)),
        ]
        if let f = outputErrorFinetuned { members.append(("output_error_finetuned", .double(f))) }
        if let c = chainError { members.append(("chain_error", .double(c))) }
        if let c = chainErrorFinetuned { members.append(("chain_error_finetuned", .double(c))) }
        members += [
            ("seconds", .double(seconds)),
            ("calibration_seconds", .double(calibrationSeconds)),
        ]
        if let f = finetuneSeconds { members.append(("finetune_seconds", .double(f))) }
        if let p = peakRSSBytes { members.append(("peak_rss_bytes", .int(p))) }
        members.append(("layers", .array(layers.map(\.json))))
        return .object(members)
    }

    init(json j: JSONValue) {
        index = j["index"]?.int ?? -1
        outputError = j["output_error"]?.double ?? .nan
        outputErrorFinetuned = j["output_error_finetuned"]?.double
        chainError = j["chain_error"]?.double
        chainErrorFinetuned = j["chain_error_finetuned"]?.double
        seconds = j["seconds"]?.double ?? .nan
        calibrationSeconds = j["calibration_seconds"]?.double ?? .nan
        finetuneSeconds = j["finetune_seconds"]?.double
        peakRSSBytes = j["peak_rss_bytes"]?.int
        layers = j["layers"]?.array?.map(LayerReport.init(json:)) ?? []
    }

    init(index: Int, outputError: Double, outputErrorFinetuned: Double?, seconds: Double, calibrationSeconds: Double,
         finetuneSeconds: Double? = nil, peakRSSBytes: Int? = nil, layers: [LayerReport],
         chainError: Double? = nil, chainErrorFinetuned: Double? = nil) {
        self.index = index
        self.chainError = chainError
        self.chainErrorFinetuned = chainErrorFinetuned
        self.outputError = outputError
        self.outputErrorFinetuned = outputErrorFinetuned
        self.seconds = seconds
        self.calibrationSeconds = calibrationSeconds
        self.finetuneSeconds = finetuneSeconds
        self.peakRSSBytes = peakRSSBytes
        self.layers = layers
    }
}

/// `report.json` of a quantization run.
public struct QuantizeReport: Sendable {
    public var scheme: String
    public var model: String
    public var output: String
    /// The calibration text as given: a registry name or a path.
    public var calibration: String
    public var samples: Int
    public var sequenceLength: Int
    public var seed: UInt64
    public var beam: Int
    /// Over the quantized block linears: codes + fp16 codebooks + fp16 scales per parameter.
    public var bitsPerWeight: Double
    /// Over every weight of the model as stored (embeddings/head fp16, norms fp32).
    public var modelBitsPerWeight: Double
    public var quantizedParameters: Int
    public var otherParameters: Int
    public var otherBytes: Int
    public var fileBytes: Int
    public var wallSeconds: Double
    public var peakRSSBytes: Int
    /// Bytes of calibration activations held in memory: the hidden states, one block's targets
    /// and, with fp-chain fine-tuning, the full-precision chain (Float32, samples × seqlen × hidden each).
    public var calibrationActivationBytes: Int
    public var blocks: [BlockReport]

    /// The whole report: totals, then every block and every layer.
    public var json: JSONValue {
        guard case .object(let totals) = totalsJSON else { return totalsJSON }
        return .object(totals + [
            ("blocks", .array(blocks.map(\.json))),
            ("layers", .array(blocks.flatMap(\.layers).map(\.json))),
        ])
    }

    /// Totals only (what `aqlm quantize --json` prints).
    public var totalsJSON: JSONValue {
        .object([
            ("scheme", .string(scheme)),
            ("model", .string(model)),
            ("output", .string(output)),
            ("calibration", .string(calibration)),
            ("samples", .int(samples)),
            ("seqlen", .int(sequenceLength)),
            ("seed", .number(String(seed))),
            ("beam", .int(beam)),
            ("bits_per_weight", .double(bitsPerWeight)),
            ("model_bits_per_weight", .double(modelBitsPerWeight)),
            ("quantized_parameters", .int(quantizedParameters)),
            ("other_parameters", .int(otherParameters)),
            ("other_bytes", .int(otherBytes)),
            ("file_bytes", .int(fileBytes)),
            ("wall_seconds", .double(wallSeconds)),
            ("peak_rss_bytes", .int(peakRSSBytes)),
            ("calibration_activation_bytes", .int(calibrationActivationBytes)),
            ("block_output_errors", .array(blocks.map { .double($0.outputError) })),
        ] + (blocks.contains { $0.outputErrorFinetuned != nil }
            ? [("block_output_errors_finetuned", .array(blocks.map { $0.outputErrorFinetuned.map(JSONValue.double) ?? .null }))]
            : []))
    }
}
