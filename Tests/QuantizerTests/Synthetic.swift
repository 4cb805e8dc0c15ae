import CBLAS
import Foundation
import Kernels
import Quantizer

/// Synthetic layers for the quantizer tests and benchmarks.
enum Synthetic {
    /// Standard-normal weights [dOut, dIn].
    static func gaussianWeight(dOut: Int, dIn: Int, seed: UInt64) -> [Float] {
        var rng = SeededRandom(seed: seed)
        return (0..<(dOut * dIn)).map { _ in rng.nextGaussian() }
    }

    static func identity(_ n: Int) -> [Double] {
        var h = [Double](repeating: 0, count: n * n)
        for i in 0..<n { h[i * n + i] = 1 }
        return h
    }

    /// H = XᵀX / tokens for X [tokens, dIn] with correlated features (each token mixes a few
    /// shared latent directions) and log-normal column magnitudes (outlier channels), like the
    /// activations of a transformer layer: SPD, dense, strongly skewed diagonal.
    static func activationHessian(dIn: Int, tokens: Int, skew: Float = 1, seed: UInt64) -> [Double] {
        var rng = SeededRandom(seed: seed)
        let latent = max(4, dIn / 8)
        let mixing = (0..<(latent * dIn)).map { _ in rng.nextGaussian() / Float(latent).squareRoot() }
        let columnScale = (0..<dIn).map { _ in Float(exp(Double(skew * rng.nextGaussian()))) }
        var x = [Double](repeating: 0, count: tokens * dIn)
        var z = [Float](repeating: 0, count: latent)
        for t in 0..<tokens {
            for k in 0..<latent { z[k] = rng.nextGaussian() }
            for i in 0..<dIn {
                var v = 0.5 * rng.nextGaussian()
                for k in 0..<latent { v += z[k] * mixing[k * dIn + i] }
                x[t * dIn + i] = Double(v * columnScale[i])
            }
        }
        var h = [Double](repeating: 0, count: dIn * dIn)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(dIn), Int32(tokens), 1, x, Int32(dIn), 0, &h, Int32(dIn))
        for i in 0..<dIn { for j in 0..<i { h[i * dIn + j] = h[j * dIn + i] } }
        for i in h.indices { h[i] /= Double(tokens) }
        return h
    }

    /// diag(exp(skew · N(0,1))): a diagonal H whose column importances span orders of magnitude.
    static func skewedDiagonalHessian(dIn: Int, skew: Float, seed: UInt64) -> [Double] {
        var rng = SeededRandom(seed: seed)
        var h = [Double](repeating: 0, count: dIn * dIn)
        for i in 0..<dIn { h[i * dIn + i] = exp(Double(skew * rng.nextGaussian())) }
        return h
    }
}
