import Foundation

/// y = W·x for one token on a dense Float32 weight: the decode step of `DenseLinear` and of a
/// Float32 head, where every weight byte is read once per token and memory bandwidth is the
/// whole cost.
///
/// Why not `sgemv` (cblas_sgemv in panels of at least 256 rows): a Qwen2.5-0.5B dense decode step
/// read its 1.6 GB at ~21 GB/s of the ~40-47 GB/s `aqlm bench` streams in the same run, and the
/// panels are what split it: q/o [896,896] and down [896,4864] make 3 panels, so on two cores one
/// core streams two thirds of 43 % of the weights while the other waits; k/v [128,896] make one.
/// Here work items are `rowsPerItem` rows (14 for [896,·], 76 for gate/up [4864,896]), claimed
/// dynamically, each streamed four rows at a time. Software prefetch ahead of the rows (as the
/// Q8_0 head needs) made it slower: Float32 rows are 4x the bytes per FMA, the hardware
/// prefetchers keep up (BENCHMARKS.md, issue 15 session 7).
///
/// Each row's dot product is computed by one worker in one fixed order (items fixed by the shape),
/// so y has the same bits at any thread count.
public enum DenseMatvec {
    /// Rows per work item (a multiple of 4): 64 rows of 896 Float32 are 224 KB, small enough that
    /// two cores finish within one item of each other, large enough that claiming an item (~0.1 µs)
    /// is noise. Not measured on an idle machine yet: `AQLM_DENSE_ROWS` overrides it for measuring
    /// (longer items restart the hardware prefetchers' streams less often). Items start at multiples
    /// of 4 rows, so every row is summed the same way whatever the item size: same bits.
    nonisolated(unsafe) public static var rowsPerItem = Int(ProcessInfo.processInfo.environment["AQLM_DENSE_ROWS"] ?? "") ?? 64
    /// Below this many weights (256 KB) one call is a few µs: not worth a hand-off.
    static let parallelWeights = 1 << 16
}

public func denseMatvec(_ w: UnsafePointer<Float>, rows: Int, columns: Int, _ x: UnsafePointer<Float>,
                        _ y: UnsafeMutablePointer<Float>) {
    guard rows > 0 else { return }
    let perItem = max(4, DenseMatvec.rowsPerItem / 4 * 4)
    let items = (rows + perItem - 1) / perItem
    if rows * columns < DenseMatvec.parallelWeights || items == 1 {
        denseRowDots(w, rows: 0..<rows, columns: columns, x, y)
        return
    }
    parallelFor(items) { item in
        denseRowDots(w, rows: item * perItem ..< min(rows, (item + 1) * perItem), columns: columns, x, y)
    }
}

/// y[r] = W[r]·x for r in `rows`, four rows per pass (each x load feeds four rows).
@inline(__always)
private func denseRowDots(_ w: UnsafePointer<Float>, rows: Range<Int>, columns: Int, _ x: UnsafePointer<Float>,
                          _ y: UnsafeMutablePointer<Float>) {
    var r = rows.lowerBound
    while r + 4 <= rows.upperBound {
        let sums = dotFourRows(w + r * columns, rowStride: columns, x: x, count: columns)
        UnsafeMutableRawPointer(y + r).storeBytes(of: sums, as: SIMD4<Float>.self)
        r += 4
    }
    while r < rows.upperBound {
        y[r] = dotRow(w + r * columns, x: x, count: columns)
        r += 1
    }
}
