import Checkpoint
import Foundation
import Kernels

/// A weight matrix that can be converted to Float32 rows on demand and then let go: a
/// checkpoint tensor left in its memory map (`WeightTensor`), or a packed layer's codes.
public protocol ConvertibleWeight: Sendable {
    /// Rows (d_out) and the width of each (d_in).
    var rowCount: Int { get }
    var rowWidth: Int { get }
    /// Rows `range` as Float32 into `out[0 ..< range.count · rowWidth]`; safe to call from
    /// several threads on disjoint ranges.
    func readRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>)
    /// Hands back whatever memory the stored form holds resident (a map's pages), once converted.
    func releasePages()
    /// Bytes of the stored form (what one conversion reads).
    var storedByteCount: Int { get }
}

extension WeightTensor: ConvertibleWeight {
    public var storedByteCount: Int { rowWidth / storedType.blockSize * storedType.typeSize * rowCount }
}

/// The Float32 buffer streamed linears convert into, shared by the linears of one model: it
/// holds the largest of them, so a dense model's Float32 footprint is one matrix, not all of
/// them. A lock makes one conversion-and-product use it at a time (a model's linears run one
/// after the other anyway; `LlamaModel.applyAll` never runs them side by side).
public final class ConversionScratch: @unchecked Sendable {
    public let capacity: Int
    private var buffer: UnsafeMutablePointer<Float>?
    private let lock = NSLock()

    /// A buffer of `capacity` Float32 values, allocated at first use.
    public init(capacity: Int) {
        self.capacity = capacity
    }

    deinit { buffer?.deallocate() }

    /// Bytes the buffer holds once used.
    public var bytes: Int { capacity * MemoryLayout<Float>.stride }

    /// `body` with the buffer (at least `count` values) to itself.
    func withBuffer<R>(count: Int, _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
        precondition(count <= capacity, "conversion of \(count) values into a scratch of \(capacity)")
        lock.lock()
        defer { lock.unlock() }
        if buffer == nil { buffer = .allocate(capacity: capacity) }
        return body(buffer!)
    }
}

/// A dense linear whose weight stays in its stored form (a checkpoint's map in the file's type,
/// or AQLM codes) and becomes Float32 only while it is applied: converted into the model's
/// `ConversionScratch`, multiplied by the same `denseProduct` as `DenseLinear` (so the logits
/// are bit-identical to the Float32 model's), and the stored pages released after. A prefill
/// pays one conversion per linear per forward call, shared by its tokens; a decode step pays one
/// per token: slower, but the resident memory no longer grows with the model's depth.
public struct StreamedLinear: LinearOperator, @unchecked Sendable {
    public let weight: any ConvertibleWeight
    public let scratch: ConversionScratch

    public init(weight: any ConvertibleWeight, scratch: ConversionScratch) {
        precondition(weight.rowCount * weight.rowWidth <= scratch.capacity, "scratch smaller than the weight")
        self.weight = weight
        self.scratch = scratch
    }

    public var inputSize: Int { weight.rowWidth }
    public var outputSize: Int { weight.rowCount }
    /// The stored bytes one application reads (the Float32 form is the shared scratch's).
    public var weightBytes: Int { weight.storedByteCount }

    public func apply(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        let (rows, width) = (outputSize, inputSize)
        scratch.withBuffer(count: rows * width) { w in
            // Chunks of rows on every core: each value's conversion is independent of the
            // chunking, so the matrix is the one `LlamaBlock(weights:layer:)` converts up front.
            parallelChunks(rows, minChunk: max(1, 16_384 / max(width, 1))) { lo, hi in
                weight.readRows(lo..<hi, into: w + lo * width)
            }
            weight.releasePages()
            denseProduct(w, rows: rows, columns: width, x, y, tokens: tokens)
        }
    }
}

/// How a dense model's block linears are held in memory.
public enum DenseLinearStorage: String, Sendable, Codable {
    /// Converted to Float32 once, when the model is opened (`DenseLinear`): fastest decode.
    case float32
    /// Left in the stored type and converted per application (`StreamedLinear`).
    case streamed

    /// The one decision, for every command: Float32 while all block linears of a model shaped
    /// `config` fit `budgetBytes` as Float32, streamed otherwise.
    public static func choose(for config: LlamaConfig, budgetBytes: Int) -> DenseLinearStorage {
        LlamaModel.blockLinearElements(config) * MemoryLayout<Float>.stride <= budgetBytes ? .float32 : .streamed
    }

    /// The default budget: half the machine's physical memory (so models that ran as Float32
    /// before keep that speed), or unlimited when it cannot be read.
    public static var defaultBudgetBytes: Int {
        physicalMemoryBytes().map { $0 / 2 } ?? Int.max
    }

    /// MemTotal from /proc/meminfo; nil where there is none.
    public static func physicalMemoryBytes() -> Int? {
        guard let info = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") }),
              let kib = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { return nil }
        return kib * 1024
    }
}

/// What a model's block linears hold as Float32: the storage (nil when no block linear is
/// dense: a packed model run through its kernels), and the Float32 bytes resident for them
/// (all matrices, or one shared scratch when streamed).
public struct DenseLinearSummary: Sendable, Equatable {
    public var storage: DenseLinearStorage?
    public var float32Bytes: Int

    public init(storage: DenseLinearStorage?, float32Bytes: Int) {
        self.storage = storage
        self.float32Bytes = float32Bytes
    }

    /// One line for stderr.
    public var description: String {
        switch storage {
        case .float32?: return String(format: "dense linears: float32, %.1f MB", Double(float32Bytes) / 1e6)
        case .streamed?: return String(format: "dense linears: streamed from the stored type, %.1f MB Float32 scratch",
                                       Double(float32Bytes) / 1e6)
        case nil: return "dense linears: none"
        }
    }
}
