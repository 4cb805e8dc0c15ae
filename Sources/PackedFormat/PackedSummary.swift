import Foundation
import Checkpoint

/// `aqlm inspect` for every format the tool reads: one `CheckpointSummary` whatever the path is.

/// The summary of an alias, a GGUF file, a Hugging Face directory or a packed AQLM directory,
/// from headers alone (no tensor data is read).
public func summarizeCheckpoint(_ nameOrPath: String) throws -> CheckpointSummary {
    let path = ModelPaths.resolve(nameOrPath)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw CheckpointError.missingFile(path)
    }
    guard isDirectory.boolValue else { return try GGUFFile(path: path).summary() }
    if PackedCheckpoint.isPacked(directory: path) { return try PackedCheckpoint.summary(directory: path) }
    return try HuggingFaceCheckpoint.summary(directory: path)
}

extension PackedCheckpoint {
    public static let reportFileName = "report.json"

    /// The safetensors summary with each quantized linear counted honestly: its `.codes` stand
    /// for the d_out·d_in weights they encode, at B bits per code whatever the int8/int16
    /// container; `.codebooks` and `.scales` add their stored (fp16) bits to the same linear and
    /// no parameters. Block-linear bits per weight is then Σ(codes·B + 16·codebooks + 16·scales)
    /// / Σ d_out·d_in, the figure `aqlm quantize` reports. Adds the scheme from
    /// quantization_config and the totals of `report.json` when the directory has one.
    public static func summary(directory: String) throws -> CheckpointSummary {
        let plain = try HuggingFaceCheckpoint.summary(directory: directory)
        let quantization = try quantizationSummary(directory: directory)
        let tensors = try plain.tensors.map { try countedHonestly($0, quantization, directory: directory) }
        return CheckpointSummary(path: plain.path, format: "AQLM packed (safetensors)", architecture: plain.architecture,
                                 config: plain.config, metadata: plain.metadata, tensors: tensors,
                                 quantization: quantization, report: try reportTotals(directory: directory))
    }

    /// quantization_config's coding, each field required, up to 2^16 (far above any real coding)
    /// so that the weight and bit counts `countedHonestly` derives from it stay within an Int.
    static func quantizationSummary(directory: String) throws -> QuantizationSummary {
        let path = (directory as NSString).appendingPathComponent(HuggingFaceConfig.fileName)
        let q = try readJSONFile(path)["quantization_config"]
        func positive(_ key: String) throws -> Int {
            guard let v = q?[key]?.int, v > 0, v <= 1 << 16 else {
                throw PackedFormatError("\(path): quantization_config.\(key) is missing or not a positive integer up to 65536")
            }
            return v
        }
        return QuantizationSummary(method: q?["quant_method"]?.string ?? "?", numCodebooks: try positive("num_codebooks"),
                                   nbitsPerCodebook: try positive("nbits_per_codebook"),
                                   inGroupSize: try positive("in_group_size"), outGroupSize: try positive("out_group_size"))
    }

    /// One row recounted: codes carry parameters and B-bit cells, codebooks and scales carry
    /// their bits but no parameters, everything else is left as stored.
    static func countedHonestly(_ row: TensorSummary, _ q: QuantizationSummary, directory: String) throws -> TensorSummary {
        var r = row
        if row.name.hasSuffix(".codes") {
            guard row.shape.count == 3, row.shape[2] == q.numCodebooks else {
                throw PackedFormatError("\(directory): tensor '\(row.name)' has shape \(row.shape), expected [d_out, d_in/\(q.inGroupSize), \(q.numCodebooks)]")
            }
            // The stored shape bounds d_out·d_in/g·M by the file's size; the factors from the config
            // are bounded above, and the products are checked all the same.
            let (weights, o1) = row.shape[0].multipliedReportingOverflow(by: row.shape[1])
            let (parameters, o2) = weights.multipliedReportingOverflow(by: q.inGroupSize)
            let (bits, o3) = row.shape.reduce(1, *).multipliedReportingOverflow(by: q.nbitsPerCodebook)
            guard !(o1 || o2 || o3) else {
                throw PackedFormatError("\(directory): tensor '\(row.name)' with shape \(row.shape) codes more weights than can be counted")
            }
            r.parameters = parameters
            r.bits = bits
        } else if row.name.hasSuffix(".codebooks") || row.name.hasSuffix(".scales") {
            r.parameters = 0
        }
        return r
    }

    /// report.json without its per-block and per-layer lists; nil when there is no report.
    static func reportTotals(directory: String) throws -> JSONValue? {
        let path = (directory as NSString).appendingPathComponent(reportFileName)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let members = try readJSONFile(path).members else {
            throw PackedFormatError("\(path): not a JSON object")
        }
        return .object(members.filter { $0.0 != "blocks" && $0.0 != "layers" })
    }
}
