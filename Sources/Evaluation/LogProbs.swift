import Kernels

/// The `k` largest entries of `x` as (index, value), largest first; ties keep the lower index
/// first. One pass with a sorted list of the best k so far; a 16-wide block whose maximum
/// cannot enter the list is skipped whole (most of a 50k vocabulary).
public func topKEntries(_ x: UnsafeBufferPointer<Float>, k: Int) -> [(index: Int, value: Float)] {
    let k = min(k, x.count)
    guard k > 0 else { return [] }
    var best: [(index: Int, value: Float)] = []
    best.reserveCapacity(k + 1)
    var threshold = -Float.infinity
    func offer(_ i: Int) {
        let v = x[i]
        guard best.count < k || v > threshold else { return }
        // Insert after every entry >= v, so equal values stay in index order.
        var at = best.count
        while at > 0 && best[at - 1].value < v { at -= 1 }
        best.insert((i, v), at: at)
        if best.count > k { best.removeLast() }
        if best.count == k { threshold = best[k - 1].value }
    }
    let base = x.baseAddress!
    var i = 0
    while i + 16 <= x.count {
        let block = UnsafeRawPointer(base + i).loadUnaligned(as: SIMD16<Float>.self)
        if best.count < k || block.max() > threshold {
            for j in i..<(i + 16) { offer(j) }
        }
        i += 16
    }
    while i < x.count {
        offer(i)
        i += 1
    }
    return best
}

/// log Σ_{i ∉ excluded} e^(x_i - logSumExp): the log of the probability mass outside
/// `excluded` (-infinity if nothing is left). Computed over the remaining entries themselves
/// rather than as log(1 - Σ excluded), which cancels when the excluded mass is near 1.
/// `scratch` needs x.count floats.
public func tailLogMass(_ x: UnsafeBufferPointer<Float>, excluding excluded: [Int], logSumExp total: Float,
                        scratch: UnsafeMutablePointer<Float>) -> Float {
    scratch.update(from: x.baseAddress!, count: x.count)
    for i in excluded { scratch[i] = -.infinity }
    return logSumExp(scratch, count: x.count) - total
}
