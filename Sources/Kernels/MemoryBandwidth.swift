import CBLAS
import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Machine probes that put kernel figures in context: how fast memory streams and how fast
/// OpenBLAS multiplies on this machine, measured in the same run as the kernels.

/// GB/s of a streaming read of a `bytes`-sized buffer (default 256 MiB: far beyond L3) by
/// `Threads.count` workers, best of `repeats` passes.
public func measureStreamingBandwidth(bytes: Int = 256 << 20, repeats: Int = 5) -> Double {
    let count = bytes / MemoryLayout<Float>.stride / 64 * 64
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
    defer { buffer.deallocate() }
    buffer.initialize(repeating: 1, count: count)
    let vectors = count / 16
    let workers = Threads.count
    // Each worker's sum is kept so the reads cannot be optimised away.
    let sums = UnsafeMutablePointer<Float>.allocate(capacity: workers)
    defer { sums.deallocate() }
    var best = Double.infinity
    for _ in 0..<repeats {
        let seconds = timeSeconds {
            parallelFor(workers) { w in
                let lo = vectors * w / workers / 4 * 4, hi = vectors * (w + 1) / workers / 4 * 4
                sums[w] = streamSum(UnsafeRawPointer(buffer + lo * 16), vectors: hi - lo)
            }
        }
        best = min(best, seconds)
    }
    return Double(count * 4) / best / 1e9
}

/// Σ of `vectors` SIMD16 floats: four independent accumulators so loads, not adds, limit it.
@inline(never)
func streamSum(_ p: UnsafeRawPointer, vectors: Int) -> Float {
    var s0 = SIMD16<Float>(), s1 = SIMD16<Float>(), s2 = SIMD16<Float>(), s3 = SIMD16<Float>()
    var i = 0
    while i + 4 <= vectors {
        s0 += p.loadUnaligned(fromByteOffset: i * 64, as: SIMD16<Float>.self)
        s1 += p.loadUnaligned(fromByteOffset: i * 64 + 64, as: SIMD16<Float>.self)
        s2 += p.loadUnaligned(fromByteOffset: i * 64 + 128, as: SIMD16<Float>.self)
        s3 += p.loadUnaligned(fromByteOffset: i * 64 + 192, as: SIMD16<Float>.self)
        i += 4
    }
    return ((s0 + s1) + (s2 + s3)).sum()
}

/// GFLOP/s of C[m, n] = A[m, k] · B[n, k]ᵀ through `sgemm` (panels on our workers; the prefill shape: m tokens,
/// n outputs, k inputs), best of `repeats` after one warm-up call.
public func measureSgemmGFLOPS(m: Int, n: Int, k: Int, repeats: Int = 5) -> Double {
    var random = SeededRandom(seed: 1)
    let a = (0..<(m * k)).map { _ in random.nextFloat() - 0.5 }
    let b = (0..<(n * k)).map { _ in random.nextFloat() - 0.5 }
    var c = [Float](repeating: 0, count: m * n)
    var best = Double.infinity
    a.withUnsafeBufferPointer { a in
        b.withUnsafeBufferPointer { b in
            c.withUnsafeMutableBufferPointer { c in
                for i in 0...repeats {
                    let seconds = timeSeconds {
                        sgemm(.noTrans, .trans, m, n, k, 1, a.baseAddress!, k, b.baseAddress!, k, 0, c.baseAddress!, n)
                    }
                    if i > 0 { best = min(best, seconds) }
                }
            }
        }
    }
    return 2 * Double(m) * Double(n) * Double(k) / best / 1e9
}

/// Wall-clock seconds of one call of `body`.
@inline(__always)
func timeSeconds(_ body: () -> Void) -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
}

/// CPU seconds this process has used, all threads.
func processCPUSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
}
