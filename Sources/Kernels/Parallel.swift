import Foundation
import CBLAS

/// Worker count for our own parallel loops (not BLAS's): AQLM_THREADS, else the core count.
public enum Threads {
    nonisolated(unsafe) public static var count: Int = {
        if let s = ProcessInfo.processInfo.environment["AQLM_THREADS"], let n = Int(s), n > 0 { return n }
        return ProcessInfo.processInfo.activeProcessorCount
    }()

    /// Sets both our worker count and OpenBLAS's, so `--threads N` means N cores in total.
    public static func set(_ n: Int) {
        count = max(1, n)
        openblas_set_num_threads(Int32(count))
    }
}

/// Runs `body(chunkStart, chunkEnd)` over `0..<n` split into contiguous chunks, one per worker.
/// Chunks are contiguous so each worker streams through its own rows (cache- and
/// prefetch-friendly); do not call BLAS inside `body` (OpenBLAS already uses every core).
@inline(__always)
public func parallelChunks(_ n: Int, minChunk: Int = 1, _ body: (Int, Int) -> Void) {
    let workers = min(Threads.count, max(1, n / max(1, minChunk)))
    if workers <= 1 || n <= 1 {
        body(0, n)
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        let lo = n * w / workers, hi = n * (w + 1) / workers
        if lo < hi { body(lo, hi) }
    }
}

/// Runs `body(i)` for every i in `0..<n` across workers (dynamic scheduling), for uneven work.
@inline(__always)
public func parallelFor(_ n: Int, _ body: (Int) -> Void) {
    if Threads.count <= 1 || n <= 1 {
        for i in 0..<n { body(i) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: n, execute: body)
}
