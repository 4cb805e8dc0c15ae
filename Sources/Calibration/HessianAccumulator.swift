import Kernels

/// Accumulates H = Σ XᵀX over calibration activations X [tokens, dim] for one linear input.
/// AQLM's objective ‖WX − ŴX‖² = tr((W−Ŵ) H (W−Ŵ)ᵀ) needs only H, so the activations
/// themselves are never kept. Each batch is multiplied in Float32 by BLAS (ssyrk, upper
/// triangle) and added into a Float64 total: a batch has at most a few thousand rows, so its
/// Float32 sum is accurate, while the total over ~65k tokens would lose digits in Float32.
public struct HessianAccumulator: Sendable {
    public let dim: Int
    /// Row-major [dim, dim], full (both triangles filled by `hessian()`).
    private var total: [Double]
    private var batch: [Float]
    public private(set) var tokenCount = 0

    public init(dim: Int) {
        self.dim = dim
        total = [Double](repeating: 0, count: dim * dim)
        batch = [Float](repeating: 0, count: dim * dim)
    }

    /// Adds XᵀX for `rows` rows of X (row-major, `dim` wide).
    public mutating func add(_ x: UnsafePointer<Float>, rows: Int) {
        guard rows > 0 else { return }
        batch.withUnsafeMutableBufferPointer { b in
            // Row-major C = Aᵀ A with A [rows, dim]: upper triangle of C filled.
            gramUpper(x, rows: rows, n: dim, b.baseAddress!)
        }
        for i in 0..<dim {
            for j in i..<dim { total[i * dim + j] += Double(batch[i * dim + j]) }
        }
        tokenCount += rows
    }

    /// Adds Σ_t w_t·x_t x_tᵀ for `rows` rows of X with one weight per row (rows scaled by √w_t,
    /// then as `add`).
    public mutating func add(_ x: UnsafePointer<Float>, rows: Int, rowWeights: [Float]) {
        precondition(rowWeights.count == rows, "\(rowWeights.count) weights for \(rows) rows")
        var scaled = [Float](repeating: 0, count: rows * dim)
        for t in 0..<rows {
            let s = rowWeights[t].squareRoot()
            for i in 0..<dim { scaled[t * dim + i] = x[t * dim + i] * s }
        }
        scaled.withUnsafeBufferPointer { add($0.baseAddress!, rows: rows) }
    }

    /// H = XᵀX (not averaged: the objective's scale does not matter to the argmin, and keeping
    /// the sum makes the weighted error comparable across layers only through the relative error).
    public func hessian() -> [Double] {
        var h = total
        Self.mirrorUpperTriangle(&h, dim: dim)
        return h
    }

    /// `hessian()` without a copy: the total becomes H in place and the accumulator is emptied
    /// (its batch buffer freed too). At Llama-3-8B's feed-forward width one H is 1.6 GB, so the
    /// quantizer takes them rather than holding accumulator, batch and copy at once.
    public mutating func takeHessian() -> [Double] {
        batch = []
        var h = total
        total = []
        Self.mirrorUpperTriangle(&h, dim: dim)
        return h
    }

    private static func mirrorUpperTriangle(_ h: inout [Double], dim: Int) {
        for i in 0..<dim {
            for j in 0..<i { h[i * dim + j] = h[j * dim + i] }
        }
    }
}
