import CBLAS

/// A linear layer y = x Wᵀ over a batch of token rows, whatever W's storage: dense Float32
/// (sgemm), or packed AQLM codes (lookup-table matvec for decoding, dequantized weight panels
/// and a 512-bit micro-kernel for prefill). The model's forward pass only sees this protocol.
public protocol LinearOperator: Sendable {
    /// d_in: the width of each input row.
    var inputSize: Int { get }
    /// d_out: the width of each output row.
    var outputSize: Int { get }
    /// y[t, 0..<outputSize] = W · x[t, 0..<inputSize] for t in 0..<tokens; x and y are
    /// row-major and do not alias. Implementations may use both cores.
    func apply(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int)
    /// Bytes the weights occupy in memory (for resident-memory and bandwidth reports).
    var weightBytes: Int { get }
}

/// Dense Float32 weight W [outputSize, inputSize], row-major.
public struct DenseLinear: LinearOperator, @unchecked Sendable {
    public let inputSize: Int
    public let outputSize: Int
    public let weights: [Float]

    public init(weights: [Float], outputSize: Int, inputSize: Int) {
        precondition(weights.count == outputSize * inputSize)
        self.weights = weights
        self.outputSize = outputSize
        self.inputSize = inputSize
    }

    public var weightBytes: Int { weights.count * 4 }

    public func apply(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        weights.withUnsafeBufferPointer { w in
            denseProduct(w.baseAddress!, rows: outputSize, columns: inputSize, x, y, tokens: tokens)
        }
    }
}

/// y[t] = W · x[t] for the row-major Float32 W [rows × columns] and `tokens` rows of x: sgemv
/// for one token, sgemm for more. Every dense Float32 product of a linear goes through here, so
/// a weight held as Float32 and one converted on use give the same bits.
public func denseProduct(_ w: UnsafePointer<Float>, rows: Int, columns: Int, _ x: UnsafePointer<Float>,
                         _ y: UnsafeMutablePointer<Float>, tokens: Int) {
    if tokens == 1 {
        denseMatvec(w, rows: rows, columns: columns, x, y)
    } else {
        sgemm(.noTrans, .trans, tokens, rows, columns, 1, x, columns, w, columns, 0, y, rows)
    }
}
