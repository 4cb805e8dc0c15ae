import CBLAS
import Kernels

/// The fixed inputs of one linear layer's quantization: W [dOut, dIn] (row = output unit) and
/// H = XᵀX [dIn, dIn] from calibration, in the Float32 the hot loops use, plus the products every
/// step reuses. The objective of a reconstruction Ŵ is tr((W−Ŵ) H (W−Ŵ)ᵀ) = Σ_r ‖X(w_r − ŵ_r)‖²,
/// the squared error of the layer's outputs on the calibration inputs (AQLM eq. 2).
public struct LayerProblem: Sendable {
    public let dOut: Int
    public let dIn: Int
    public let weight: [Float]
    public let hessian: [Float]
    /// H is the identity (V steps' plain squared error): products with it are skipped.
    let hessianIsIdentity: Bool
    /// W H [dOut, dIn]: the right-hand side of both the codebook and the scale least squares.
    let weightTimesHessian: [Float]
    /// tr(W H Wᵀ): the error of Ŵ = 0, the denominator of the relative error.
    public let referenceEnergy: Double

    public init(weight: [Float], dOut: Int, dIn: Int, hessian: [Double]) throws {
        try self.init(weight: weight, dOut: dOut, dIn: dIn, hessian: hessian.map { Float($0) }, checkedCount: hessian.count)
    }

    public init(weight: [Float], dOut: Int, dIn: Int, hessian: [Float]) throws {
        try self.init(weight: weight, dOut: dOut, dIn: dIn, hessian: hessian, checkedCount: hessian.count)
    }

    private init(weight: [Float], dOut: Int, dIn: Int, hessian: [Float], checkedCount: Int) throws {
        guard dOut > 0, dIn > 0 else { throw QuantizerError("layer shape [\(dOut), \(dIn)] is empty") }
        guard weight.count == dOut * dIn else {
            throw QuantizerError("weight has \(weight.count) values, expected d_out·d_in = \(dOut)·\(dIn)")
        }
        guard checkedCount == dIn * dIn else {
            throw QuantizerError("Hessian has \(checkedCount) values, expected d_in² = \(dIn * dIn)")
        }
        guard weight.allSatisfy({ $0.isFinite }) else { throw QuantizerError("weight contains a non-finite value") }
        guard hessian.allSatisfy({ $0.isFinite }) else { throw QuantizerError("Hessian contains a non-finite value") }
        for i in 0..<dIn where hessian[i * dIn + i] < 0 {
            throw QuantizerError("Hessian diagonal entry \(i) is negative (\(hessian[i * dIn + i])): not XᵀX")
        }
        self.dOut = dOut
        self.dIn = dIn
        self.weight = weight
        self.hessian = hessian
        hessianIsIdentity = isIdentity(hessian, dIn: dIn)
        weightTimesHessian = hessianIsIdentity ? weight : multiplyByHessian(weight, rows: dOut, hessian: hessian, dIn: dIn)
        referenceEnergy = rowwiseDotSum(weight, weightTimesHessian)
    }

    /// diag(H): the importance of each input column, used to weight k-means.
    public var hessianDiagonal: [Float] { (0..<dIn).map { hessian[$0 * dIn + $0] } }

    /// tr((W−Ŵ) H (W−Ŵ)ᵀ), through one sgemm.
    public func error(of approximation: [Float]) -> Double {
        precondition(approximation.count == weight.count)
        var residual = weight
        for i in residual.indices { residual[i] -= approximation[i] }
        return rowwiseDotSum(residual, timesHessian(residual))
    }

    /// A [rows, dIn] · H; A itself when H is the identity (the plain squared error of V steps,
    /// whose rows·dIn² product would give A exactly).
    func timesHessian(_ a: [Float]) -> [Float] {
        hessianIsIdentity ? a : multiplyByHessian(a, rows: a.count / dIn, hessian: hessian, dIn: dIn)
    }

    public func relativeError(of approximation: [Float]) -> Double {
        referenceEnergy > 0 ? error(of: approximation) / referenceEnergy : 0
    }
}

/// tr((W−Ŵ) H (W−Ŵ)ᵀ) computed directly in Float64 (dgemm): the reference against which the
/// quantizer's incremental Float32 bookkeeping is checked.
public func hessianWeightedError(weight: [Float], approximation: [Float], hessian: [Double], dOut: Int, dIn: Int) -> Double {
    precondition(weight.count == dOut * dIn && approximation.count == dOut * dIn && hessian.count == dIn * dIn)
    let residual = (0..<weight.count).map { Double(weight[$0]) - Double(approximation[$0]) }
    var product = [Double](repeating: 0, count: dOut * dIn)
    BLASThreads.useCallingThreadOnly()   // one thread: the same bits at any thread count
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(dOut), Int32(dIn), Int32(dIn),
                1, residual, Int32(dIn), hessian, Int32(dIn), 0, &product, Int32(dIn))
    var total = 0.0
    for i in residual.indices { total += residual[i] * product[i] }
    return total
}

public func hessianWeightedError(weight: [Float], approximation: [Float], hessian: [Float], dOut: Int, dIn: Int) -> Double {
    hessianWeightedError(weight: weight, approximation: approximation, hessian: hessian.map { Double($0) }, dOut: dOut, dIn: dIn)
}

/// tr((W−Ŵ) H (W−Ŵ)ᵀ) / tr(W H Wᵀ).
public func relativeHessianWeightedError(weight: [Float], approximation: [Float], hessian: [Double], dOut: Int, dIn: Int) -> Double {
    let reference = hessianWeightedError(weight: weight, approximation: [Float](repeating: 0, count: weight.count),
                                         hessian: hessian, dOut: dOut, dIn: dIn)
    let error = hessianWeightedError(weight: weight, approximation: approximation, hessian: hessian, dOut: dOut, dIn: dIn)
    return reference > 0 ? error / reference : 0
}

/// A [rows, dIn] · H [dIn, dIn] (row-major).
private func multiplyByHessian(_ a: [Float], rows: Int, hessian: [Float], dIn: Int) -> [Float] {
    var product = [Float](repeating: 0, count: rows * dIn)
    a.withUnsafeBufferPointer { a in
        hessian.withUnsafeBufferPointer { h in
            product.withUnsafeMutableBufferPointer { p in
                sgemm(.noTrans, .noTrans, rows, dIn, dIn, 1, a.baseAddress!, dIn, h.baseAddress!, dIn, 0, p.baseAddress!, dIn)
            }
        }
    }
    return product
}

private func isIdentity(_ h: [Float], dIn: Int) -> Bool {
    h.withUnsafeBufferPointer { h in
        for i in 0..<dIn {
            for j in 0..<dIn where h[i * dIn + j] != (i == j ? 1 : 0) { return false }
        }
        return true
    }
}

/// Σ_i a[i]·b[i], accumulated per 4096-chunk in Float and across chunks in Double.
func rowwiseDotSum(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count)
    let chunk = 4096
    var total = 0.0
    a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            var start = 0
            while start < a.count {
                let n = min(chunk, a.count - start)
                total += Double(dot(pa.baseAddress! + start, pb.baseAddress! + start, count: n))
                start += n
            }
        }
    }
    return total
}
