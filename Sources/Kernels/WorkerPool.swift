import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Persistent helper threads behind `parallelFor` / `parallelChunks`.
///
/// Why not `DispatchQueue.concurrentPerform`: waking a Dispatch worker costs 4-8 µs on this
/// machine, about one layer's decode work, so splitting a decode step over two cores gained
/// nothing. A helper here keeps spinning for `spinMicroseconds` after each job (the jobs of a
/// decode step follow each other within tens of µs, so it is still awake and joins in well under
/// a µs), then sleeps on a condition variable, so an idle process or a long BLAS call does not
/// lose a core to it for long.
///
/// Indices are claimed one at a time from one atomic ticket (job generation in the high 32 bits,
/// next index in the low 32), by the caller as well as the helpers. On a shared machine a helper
/// may be descheduled: the caller then runs the unclaimed indices itself and waits only for those
/// a helper has already started. A claim is a compare-exchange on the whole ticket, so a helper
/// that wakes late cannot claim an index of a newer job with an older job's body.
///
/// The caller waits for the indices helpers have started the same way a helper waits for a job:
/// it spins briefly, then sleeps until the last index completes. On a shared machine a helper can
/// be descheduled halfway through its index; a caller spinning for it would hold the very core
/// the helper needs to finish, while a sleeping caller lets the scheduler hand that core to the
/// helper. (Perplexity beside one busy core collapsed either way, 0.23-0.24x: its time was in
/// OpenBLAS's statically split sgemm, see BENCHMARKS.md, "Shared machine"; products now run as
/// two panels on this pool, just as exposed to a descheduled worker. The cure is fewer threads
/// while a core is taken: `Threads.adjustToLoad`, `FreeCores`.)
///
/// One job runs at a time. A loop started while another is running (nested inside a job body,
/// or from a second thread) runs serially on its own thread.
public final class WorkerPool: @unchecked Sendable {
    /// The pool behind the parallel loops (helpers are started on first use, up to `Threads.count - 1`).
    public static let shared = WorkerPool()

    /// The longest an idle helper spins before sleeping (it adapts below this, see
    /// `helperLoop`). The gaps between the parallel loops of one SmolLM2 decode step are mostly
    /// < 20 µs on free cores, but a prefill's products are separated by serial norms, RoPE and
    /// softmax rows of a few hundred µs: at 50 µs the helpers slept through them and every product
    /// began with a wake-up, which cost idle perplexity ~7 % once the BLAS products moved onto this
    /// pool (24 chunks, alternating: 417/407 tokens/s at 50 µs, 437/443 at 1000, 439/438 at 10000).
    /// Spinning longer is safe now that the thread count follows the free cores: beside a busy
    /// process the pool runs one thread and nobody spins. `AQLM_SPIN_US` overrides it (measuring).
    nonisolated(unsafe) public static var spinMicroseconds = Int(ProcessInfo.processInfo.environment["AQLM_SPIN_US"] ?? "") ?? 1000

    private let ticket = Atomic<UInt64>(0)
    private let completed = Atomic<Int>(0)
    private let count = Atomic<Int>(0)
    private let allowedHelpers = Atomic<Int>(0)
    private let running = Atomic<Bool>(false)
    private let sleepers = Atomic<Int>(0)
    /// The caller is asleep on `jobDone` (or about to be): the helper completing the last index wakes it.
    private let callerAsleep = Atomic<Bool>(false)
    private var generation: UInt32 = 0
    /// The current job's body: written by the caller before the ticket publishes the job, read
    /// by a helper only after it has claimed one of the job's indices.
    private var body: ((Int) -> Void)?
    private var helperCount = 0
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let wakeUp: UnsafeMutablePointer<pthread_cond_t>
    private let jobDone: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        wakeUp = .allocate(capacity: 1)
        jobDone = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wakeUp, nil)
        pthread_cond_init(jobDone, nil)
    }

    /// Helper threads started so far.
    public var helpers: Int { helperCount }

    /// Runs `body(i)` for every i in `0..<n` on the calling thread and up to `workers - 1`
    /// helpers; returns when all have finished.
    public func run(_ n: Int, workers: Int, _ body: (Int) -> Void) {
        guard n > 1, workers > 1,
              running.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
        else {
            for i in 0..<n { body(i) }
            return
        }
        defer { running.store(false, ordering: .releasing) }
        startHelpers(upTo: workers - 1)
        withoutActuallyEscaping(body) { body in
            self.body = body
            allowedHelpers.store(workers - 1, ordering: .relaxed)
            count.store(n, ordering: .relaxed)
            completed.store(0, ordering: .relaxed)
            generation &+= 1
            publish(UInt64(generation) << 32)
            runIndices(of: generation)
            waitForCompletion(of: n)
            // Close the job before the next one changes `count` and `body`: a helper that read
            // this job's last ticket (index n, nothing left) and then a larger next `count`
            // would otherwise claim index n and run it with the next job's body. After this
            // store its claim fails and it reads an index no count reaches.
            ticket.store((UInt64(generation) << 32) | 0xFFFF_FFFF, ordering: .sequentiallyConsistent)
            self.body = nil
        }
    }

    /// Makes the job visible and wakes sleeping helpers. The ticket store and the sleeper load
    /// are sequentially consistent, pairing with the helper's increment-then-check in
    /// `waitForJob`: either the helper sees the new job or this sees the helper asleep.
    private func publish(_ newTicket: UInt64) {
        ticket.store(newTicket, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(wakeUp)
            pthread_mutex_unlock(mutex)
        }
    }

    /// Claims and runs indices of job `job` until none is left.
    private func runIndices(of job: UInt32) {
        var current = ticket.load(ordering: .acquiring)
        while UInt32(truncatingIfNeeded: current >> 32) == job {
            let index = Int(current & 0xFFFF_FFFF)
            guard index < count.load(ordering: .relaxed) else { return }
            let (claimed, seen) = ticket.compareExchange(expected: current, desired: current + 1,
                                                         ordering: .acquiringAndReleasing)
            if claimed {
                body!(index)
                let done = completed.add(1, ordering: .sequentiallyConsistent).newValue
                if done == count.load(ordering: .relaxed) && callerAsleep.load(ordering: .sequentiallyConsistent) {
                    pthread_mutex_lock(mutex)
                    pthread_cond_broadcast(jobDone)
                    pthread_mutex_unlock(mutex)
                }
                current = current + 1
            } else {
                current = seen
            }
        }
    }

    /// Returns once all `n` indices have completed: spins for up to `spinMicroseconds` (an index a
    /// helper is running on a free core ends within microseconds in a decode step), then sleeps.
    /// `callerAsleep` and `completed` are sequentially consistent on both sides: either the
    /// helper completing the last index sees the caller asleep and wakes it, or the caller's
    /// re-check under the mutex sees the count complete.
    private func waitForCompletion(of n: Int) {
        if completed.load(ordering: .acquiring) >= n { return }
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(Self.spinMicroseconds) * 1000
        repeat {
            for _ in 0..<16 where completed.load(ordering: .acquiring) >= n { return }
        } while DispatchTime.now().uptimeNanoseconds < deadline

        pthread_mutex_lock(mutex)
        callerAsleep.store(true, ordering: .sequentiallyConsistent)
        while completed.load(ordering: .sequentiallyConsistent) < n {
            pthread_cond_wait(jobDone, mutex)
        }
        callerAsleep.store(false, ordering: .sequentiallyConsistent)
        pthread_mutex_unlock(mutex)
    }

    private func startHelpers(upTo wanted: Int) {
        while helperCount < wanted {
            // The job about to be published is newer than `generation`: the helper joins it.
            let index = helperCount, published = generation
            // Helpers run (mostly asleep) for the rest of the process and keep their pool alive.
            let thread = Thread { self.helperLoop(index: index, after: published) }
            thread.name = "aqlm-worker-\(index + 1)"
            thread.start()
            helperCount += 1
        }
    }

    private func helperLoop(index: Int, after published: UInt32) {
        var seen = published
        var spin = Self.spinMicroseconds
        while true {
            let (job, caughtSpinning) = waitForJob(after: seen, spinMicroseconds: spin)
            seen = job
            // Spinning pays when jobs follow each other closely (a decode step on free cores).
            // When they do not (the caller itself keeps losing its core on a loaded machine),
            // every spin is CPU taken from the process's share: halve the window after each
            // miss, double it after each catch.
            spin = caughtSpinning ? min(Self.spinMicroseconds, 2 * spin + 1) : spin / 2
            if index < allowedHelpers.load(ordering: .relaxed) { runIndices(of: seen) }
        }
    }

    /// The generation of the next job after `seen`, and whether it came while spinning: spins
    /// for up to `spinMicroseconds`, then sleeps.
    private func waitForJob(after seen: UInt32, spinMicroseconds: Int) -> (UInt32, Bool) {
        func job() -> UInt32 { UInt32(truncatingIfNeeded: ticket.load(ordering: .acquiring) >> 32) }
        if spinMicroseconds > 0 {
            let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(spinMicroseconds) * 1000
            repeat {
                for _ in 0..<16 {
                    let g = job()
                    if g != seen { return (g, true) }
                }
            } while DispatchTime.now().uptimeNanoseconds < deadline
        }

        pthread_mutex_lock(mutex)
        sleepers.add(1, ordering: .sequentiallyConsistent)
        var g = UInt32(truncatingIfNeeded: ticket.load(ordering: .sequentiallyConsistent) >> 32)
        while g == seen {
            pthread_cond_wait(wakeUp, mutex)
            g = UInt32(truncatingIfNeeded: ticket.load(ordering: .sequentiallyConsistent) >> 32)
        }
        sleepers.subtract(1, ordering: .sequentiallyConsistent)
        pthread_mutex_unlock(mutex)
        return (g, false)
    }
}
