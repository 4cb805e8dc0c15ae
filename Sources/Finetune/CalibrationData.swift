import Foundation
import Calibration
import Checkpoint
import Kernels
import Tokenizer

/// `samples` windows of `length` tokens of a calibration text (registry name or path), drawn
/// exactly as `aqlm quantize` draws them for the same seed (so a fine-tuning run can reuse the
/// quantizer's calibration set).
public func loadCalibrationSequences(_ nameOrPath: String, tokenizer: TokenizerSpec, samples: Int, length: Int,
                                     seed: UInt64) throws -> [[Int]] {
    let path = try CalibrationSource.resolve(nameOrPath)
    guard let data = FileManager.default.contents(atPath: path) else { throw CalibrationError.missingFile(path) }
    let tokens = try BPETokenizer(spec: tokenizer).encode([UInt8](data))
    var rng = SeededRandom(seed: seed)
    return try sampleCalibrationSequences(tokens: tokens, samples: samples, length: length, source: path, using: &rng)
}
