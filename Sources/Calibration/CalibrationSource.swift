import Checkpoint
import Foundation

public enum CalibrationError: Error, CustomStringConvertible, Equatable {
    case unknownSource(String)
    case missingFile(String)
    case missingBuiltText(name: String, path: String)
    case tooShort(String, tokens: Int, needed: Int)
    case badArgument(String)

    public var description: String {
        switch self {
        case .unknownSource(let s):
            return "calibration '\(s)': neither a file nor a name in calibration/registry.tsv"
        case .missingFile(let f): return "calibration file \(f): no such file"
        case .missingBuiltText(let name, let path):
            return "calibration '\(name)': \(path) not built yet; run tools/setup.sh (it builds it once)"
        case .tooShort(let f, let t, let n):
            return "calibration text \(f) has \(t) tokens, fewer than one sequence needs (\(n))"
        case .badArgument(let s): return s
        }
    }
}

/// Calibration text by registry name (calibration/registry.tsv) or by path.
public enum CalibrationSource {
    /// The project root: the working directory when it holds calibration/registry.tsv, else the
    /// source checkout this binary was built from (so `.build/release/aqlm` works from anywhere).
    static var projectRoots: [URL] {
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        let built = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        return [cwd, built]
    }

    /// name -> path, from calibration/registry.tsv: relative to the project root, or, written
    /// `cache:REST`, to the aqlm cache (texts tools/setup.sh builds from what the machine ships).
    public static func registry() -> [String: String] {
        for root in projectRoots {
            let url = root.appendingPathComponent("calibration/registry.tsv")
            guard let text = try? String(contentsOf: url, encoding: .utf8) else { continue }
            var out: [String: String] = [:]
            for line in text.split(separator: "\n").dropFirst() {
                let cols = line.split(separator: "\t", omittingEmptySubsequences: false)
                guard cols.count >= 2 else { continue }
                let path = String(cols[1])
                out[String(cols[0])] = path.hasPrefix(cachePrefix)
                    ? (ModelPaths.aqlmCacheDirectory as NSString).appendingPathComponent(String(path.dropFirst(cachePrefix.count)))
                    : root.appendingPathComponent(path).standardized.path
            }
            return out
        }
        return [:]
    }

    static let cachePrefix = "cache:"

    /// The default calibration of `aqlm quantize` and `aqlm finetune`: WikiText-2's validation
    /// split followed by half as many bytes of the Perl manuals Debian ships (2:1). Measured on
    /// SmolLM2-135M 2x8 with 192 windows in both stages against WikiText alone with 128: WikiText
    /// test PPL 36.67 against 36.70 (KLD 0.4562 both) and, on licence texts neither sees, KLD
    /// 0.657 against 0.984 (BENCHMARKS, issue 14): one domain of calibration text fits that domain.
    /// (End-to-end fine-tuning now takes 576 windows of it once; BENCHMARKS, session 12.)
    public static let defaultName = "wikitext2-manuals"

    /// A path that exists wins; then a registry name; otherwise a clear error.
    public static func resolve(_ nameOrPath: String) throws -> String {
        if FileManager.default.fileExists(atPath: nameOrPath) { return nameOrPath }
        if let path = registry()[nameOrPath] {
            guard FileManager.default.fileExists(atPath: path) else {
                if path.hasPrefix(ModelPaths.aqlmCacheDirectory) { throw CalibrationError.missingBuiltText(name: nameOrPath, path: path) }
                throw CalibrationError.missingFile(path)
            }
            return path
        }
        if nameOrPath.contains("/") || nameOrPath.contains(".") { throw CalibrationError.missingFile(nameOrPath) }
        throw CalibrationError.unknownSource(nameOrPath)
    }
}

/// Cuts `samples` windows of `length` tokens at seeded uniform offsets, as the GPTQ/AQLM
/// reference loaders do for WikiText-2 (offsets may overlap; the text is one long stream).
public func sampleCalibrationSequences<G: RandomNumberGenerator>(
    tokens: [Int], samples: Int, length: Int, source: String, using rng: inout G
) throws -> [[Int]] {
    try sampleCalibrationStarts(tokens: tokens, samples: samples, length: length, source: source, using: &rng)
        .map { Array(tokens[$0..<($0 + length)]) }
}

/// The start offsets of `sampleCalibrationSequences`' windows.
public func sampleCalibrationStarts<G: RandomNumberGenerator>(
    tokens: [Int], samples: Int, length: Int, source: String, using rng: inout G
) throws -> [Int] {
    guard samples > 0, length > 1 else {
        throw CalibrationError.badArgument("--samples must be ≥ 1 and --seqlen ≥ 2 (got \(samples), \(length))")
    }
    guard tokens.count > length else { throw CalibrationError.tooShort(source, tokens: tokens.count, needed: length + 1) }
    return (0..<samples).map { _ in Int.random(in: 0..<(tokens.count - length), using: &rng) }
}

/// `count` windows of `length` tokens that share no token with the windows starting at `taken`
/// nor with each other, drawn at seeded uniform offsets with rejection: held-out sequences
/// that are really held out (uniform windows of one text overlap: with 124 of 512 tokens in
/// WikiText-2's 274k-token validation split, 37 % of further windows share tokens with one of them).
public func sampleDisjointWindows<G: RandomNumberGenerator>(
    tokens: [Int], count: Int, length: Int, avoiding taken: [Int], source: String, using rng: inout G
) throws -> [[Int]] {
    guard count > 0 else { return [] }
    guard tokens.count > length else { throw CalibrationError.tooShort(source, tokens: tokens.count, needed: length + 1) }
    var starts = taken, chosen: [Int] = []
    var attempts = 0
    while chosen.count < count {
        attempts += 1
        guard attempts <= 100_000 else {
            throw CalibrationError.badArgument("calibration text \(source) (\(tokens.count) tokens) has no room for \(count) "
                + "held-out sequences of \(length) tokens beside the \(taken.count) training ones; use a longer text or fewer --samples")
        }
        let start = Int.random(in: 0..<(tokens.count - length), using: &rng)
        guard starts.allSatisfy({ abs($0 - start) >= length }) else { continue }
        starts.append(start)
        chosen.append(start)
    }
    return chosen.map { Array(tokens[$0..<($0 + length)]) }
}
