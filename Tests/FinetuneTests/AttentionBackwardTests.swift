import Kernels
import XCTest

/// The query-tiled attention backward against the same kernel in one tile (which the block
/// gradient checks compare with finite differences).
final class AttentionBackwardTests: XCTestCase {
    func testTilesGiveTheSameGradientsAsOneTile() {
        let t = 37, heads = 6, kvHeads = 2, d = 10
        var rng = SeededRandom(seed: 3)
        func random(_ n: Int) -> [Float] { (0..<n).map { _ in rng.nextGaussian() } }
        let q = random(t * heads * d), k = random(t * kvHeads * d), v = random(t * kvHeads * d), dO = random(t * heads * d)
        func gradients(tile: Int) -> [Float] {
            var dq = [Float](repeating: .nan, count: q.count), dk = [Float](repeating: .nan, count: k.count), dv = dk
            var scratch = [Float](repeating: 0, count: 2 * t * t)
            causalAttentionBackward(queries: q, keys: k, values: v, gradOutput: dO, gradQueries: &dq, gradKeys: &dk,
                                    gradValues: &dv, tokens: t, heads: heads, kvHeads: kvHeads, headDim: d,
                                    scratch: &scratch, queryTile: tile)
            return dq + dk + dv
        }
        let whole = gradients(tile: t)
        XCTAssertTrue(whole.allSatisfy(\.isFinite))
        for tile in [1, 5, 16] {
            let tiled = gradients(tile: tile)
            let worst = zip(tiled, whole).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 1e-5 * whole.map(abs).max()!, "tile \(tile)")
        }
    }
}
