import Foundation

/// User plus system CPU time of the whole process so far. Next to wall time it tells how much
/// of a slow run was waiting for cores shared with other work: on an idle machine with two
/// cores, wall ≈ CPU / 2 for these BLAS-bound loops.
public func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
