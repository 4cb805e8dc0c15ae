import Foundation
import CBLAS

/// Worker count for our own parallel loops (not BLAS's): AQLM_THREADS, else the core count.
public enum Threads {
    nonisolated(unsafe) public static var count: Int = {
        if let s = ProcessInfo.processInfo.environment["AQLM_THREADS"], let n = Int(s), n > 0 { return n }
        return ProcessInfo.processInfo.activeProcessorCount
    }()

    /// Chunks per worker in `parallelChunks`: 4 leaves the others three quarters of a
    /// descheduled worker's share to take over, at ~0.1 µs per extra claim.
    nonisolated(unsafe) public static var chunksPerWorker = 4

    /// Sets both our worker count and OpenBLAS's, so `--threads N` means N cores in total.
    public static func set(_ n: Int) {
        count = max(1, n)
        openblas_set_num_threads(Int32(count))
    }

    /// What runs the parallel loops: the persistent `WorkerPool` (default), or Dispatch's
    /// concurrentPerform (kept for comparison: `aqlm bench --parallel dispatch`).
    nonisolated(unsafe) public static var backend: ParallelBackend = .pool
}

public enum ParallelBackend: String, Sendable, CaseIterable {
    case pool, dispatch
}

/// Runs `body(chunkStart, chunkEnd)` over `0..<n` split into contiguous chunks, up to
/// `chunksPerWorker` per worker, claimed dynamically. Chunks are contiguous so each worker
/// streams through its own rows (cache- and prefetch-friendly). More than one chunk per worker
/// because on a shared machine a worker can lose its core halfway: with one chunk each, the
/// others would wait for its whole half; with several, they take the chunks it has not started.
/// Do not call multi-threaded BLAS inside `body`.
@inline(__always)
public func parallelChunks(_ n: Int, minChunk: Int = 1, _ body: (Int, Int) -> Void) {
    let chunks = min(Threads.count * Threads.chunksPerWorker, max(1, n / max(1, minChunk)))
    if Threads.count <= 1 || chunks <= 1 || n <= 1 {
        body(0, n)
        return
    }
    runParallel(chunks, workers: min(Threads.count, chunks)) { c in
        let lo = n * c / chunks, hi = n * (c + 1) / chunks
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
    runParallel(n, workers: Threads.count, body)
}

@inline(__always)
private func runParallel(_ n: Int, workers: Int, _ body: (Int) -> Void) {
    switch Threads.backend {
    case .pool: WorkerPool.shared.run(n, workers: workers, body)
    case .dispatch: DispatchQueue.concurrentPerform(iterations: n, execute: body)
    }
}
