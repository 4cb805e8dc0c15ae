import Foundation
import Calibration
import Checkpoint
import Kernels
import Tokenizer

/// `samples` windows of `length` tokens of a calibration text (registry name or path): the first
/// `samples − heldOut` are drawn exactly as `aqlm quantize` draws its first ones for the same
/// seed (so a fine-tuning run trains on the quantizer's calibration set); the last `heldOut`
/// share no token with any of the `samples` windows the quantizer would draw, nor with each
/// other (`sampleDisjointWindows`), so the validation loss measures text nothing was fitted to.
public func loadCalibrationSequences(_ nameOrPath: String, tokenizer: TokenizerSpec, samples: Int, length: Int,
                                     heldOut: Int = 0, seed: UInt64) throws -> [[Int]] {
    let path = try CalibrationSource.resolve(nameOrPath)
    guard let data = FileManager.default.contents(atPath: path) else { throw CalibrationError.missingFile(path) }
    let tokens = try BPETokenizer(spec: tokenizer).encode([UInt8](data))
    var rng = SeededRandom(seed: seed)
    let starts = try sampleCalibrationStarts(tokens: tokens, samples: samples, length: length, source: path, using: &rng)
    let training = starts.prefix(samples - heldOut).map { Array(tokens[$0..<($0 + length)]) }
    return training + (try sampleDisjointWindows(tokens: tokens, count: heldOut, length: length, avoiding: starts,
                                                 source: path, using: &rng))
}
