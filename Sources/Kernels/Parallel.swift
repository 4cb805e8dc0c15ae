import Foundation

/// Worker count for our parallel loops, which also run every BLAS product (OpenBLAS itself
/// stays on one thread, see `PanelledBLAS.swift`): AQLM_THREADS, else OPENBLAS_NUM_THREADS or
/// OMP_NUM_THREADS (a count meant for BLAS now sizes the loops that run BLAS), else the core count.
public enum Threads {
    nonisolated(unsafe) public static var count: Int = {
        let environment = ProcessInfo.processInfo.environment
        for name in userCountVariables {
            if let s = environment[name], let n = Int(s), n > 0 { return n }
        }
        return ProcessInfo.processInfo.activeProcessorCount
    }()

    /// Environment variables that fix the thread count, in order of precedence.
    static let userCountVariables = ["AQLM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"]

    /// Chunks per worker in `parallelChunks`: 4 leaves the others three quarters of a
    /// descheduled worker's share to take over, at ~0.1 µs per extra claim.
    nonisolated(unsafe) public static var chunksPerWorker = 4

    /// Sets the worker count (BLAS products included: their panels run on our workers), so
    /// `--threads N` means N cores in total. A count set here is kept: it also stops
    /// `adjustToLoad()` from changing it.
    public static func set(_ n: Int) {
        loadFollower = nil
        count = max(1, n)
    }

    nonisolated(unsafe) private static var loadFollower: LoadFollower?

    /// From now on `adjustToLoad()` moves the thread count between 1 and
    /// the current count with the cores other processes leave free (see `FreeCores`). Not when
    /// the user chose a count: AQLM_THREADS, OPENBLAS_NUM_THREADS or OMP_NUM_THREADS set, or
    /// `set(_:)` called (`--threads N`). Call from the main thread before the work starts.
    public static func followFreeCores() {
        let environment = ProcessInfo.processInfo.environment
        guard userCountVariables.allSatisfy({ environment[$0] == nil }),
              count > 1 else { return }
        loadFollower = LoadFollower(maximum: count)
    }

    /// Whether `adjustToLoad()` may change the count.
    public static var followsFreeCores: Bool { loadFollower != nil }

    /// Re-checks the free cores (at most every 0.25 s; otherwise one clock read) and sets the
    /// thread count they allow. Call only where no parallel loop is running: between chunks,
    /// sequences, layers, steps. BLAS products give the same bits at any count (fixed panels).
    public static func adjustToLoad() {
        guard let follower = loadFollower, let next = follower.check(current: count), next != count else { return }
        if follower.logs { fputs("threads: \(count) -> \(next)\n", stderr) }
        count = next
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
