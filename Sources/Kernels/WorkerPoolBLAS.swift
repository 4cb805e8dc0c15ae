import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// OpenBLAS's own worker threads, kept from spinning against ours.
///
/// After each multi-threaded call OpenBLAS's threads spin-wait (a sched_yield loop) for
/// 2^OPENBLAS_THREAD_TIMEOUT TSC cycles, by default 2^28 (~0.1 s), before sleeping. After a
/// prefill that is ~0.1 s of a core taken from the decode steps that follow, which use no BLAS
/// when the weights are packed. A shorter timeout for the whole process is no cure: dense
/// decoding calls sgemv back to back, and a thread asleep between two calls takes milliseconds
/// to wake on a loaded machine (measured: [576,1536] sgemv 41 µs → 2.4 ms at 2^20 cycles).
/// `park()` instead stops the threads once, when a batched forward is done.
public enum OpenBLASThreads {
    /// Stops OpenBLAS's worker threads (`blas_thread_shutdown_`, its fork handler); the next
    /// multi-threaded BLAS call starts them again. Call while no BLAS call is running. Returns
    /// false if this OpenBLAS does not export the function.
    @discardableResult
    public static func park() -> Bool {
        guard let shutdown else { return false }
        _ = shutdown()
        return true
    }

    private static let shutdown: (@convention(c) () -> Int32)? = {
        guard let handle = dlopen(nil, RTLD_NOW), let address = dlsym(handle, "blas_thread_shutdown_") else { return nil }
        return unsafeBitCast(address, to: (@convention(c) () -> Int32).self)
    }()
}
