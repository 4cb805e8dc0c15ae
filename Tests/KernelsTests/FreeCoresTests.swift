import Foundation
import Kernels
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The thread count that follows the free cores: parsing /proc counters, other processes' load
/// between two samples (our own CPU time taken out), the decision with its hysteresis, and one
/// live sample beside a busy child process.
final class FreeCoresTests: XCTestCase {
    /// /proc/stat's CPU lines: user nice system idle iowait irq softirq steal guest guest_nice.
    private func procStat(_ cpus: [[UInt64]]) -> String {
        let total = (0..<10).map { f in cpus.reduce(0) { $0 + ($1.count > f ? $1[f] : 0) } }
        var lines = ["cpu  " + total.map(String.init).joined(separator: " ")]
        for (i, c) in cpus.enumerated() { lines.append("cpu\(i) " + c.map(String.init).joined(separator: " ")) }
        lines.append("intr 6940502 0 0 0")
        lines.append("ctxt 36399040")
        return lines.joined(separator: "\n") + "\n"
    }

    /// /proc/self/stat with a command name holding spaces and a ')' (it is in parentheses).
    private func processStat(user: UInt64, system: UInt64, nice: Int = 0) -> String {
        "4242 (aq lm) x) R 1 4242 1 0 -1 4194304 101 0 0 0 \(user) \(system) 0 0 \(20 + nice) \(nice) 3 0 1090866 3133440 388\n"
    }

    func testParsesTheCPUsWeMayRunOnAndOurOwnTicks() throws {
        let stat = procStat([[10, 1, 5, 100, 3, 0, 2, 4, 7, 0], [20, 0, 6, 90, 1, 1, 0, 0, 0, 0], [30, 2, 2, 50, 0, 0, 0, 0, 0, 0]])
        let all = try XCTUnwrap(FreeCores.parse(procStat: stat, processStat: processStat(user: 33, system: 11), cpus: nil))
        // busy = user + nice + system + irq + softirq + steal (guest is inside user already).
        XCTAssertEqual(all, CPUTicks(cpus: 3, busy: (10 + 1 + 5 + 2 + 4) + (20 + 6 + 1) + (30 + 2 + 2),
                                     idle: 103 + 91 + 50, own: 44, niced: 1 + 0 + 2))
        let some = try XCTUnwrap(FreeCores.parse(procStat: stat, processStat: processStat(user: 33, system: 11), cpus: [0, 2]))
        XCTAssertEqual(some, CPUTicks(cpus: 2, busy: 22 + 34, idle: 103 + 50, own: 44, niced: 1 + 2))
        // Older kernels print fewer columns (no steal/guest).
        let old = try XCTUnwrap(FreeCores.parse(procStat: "cpu0 1 2 3 4 5\n", processStat: processStat(user: 1, system: 2, nice: 10), cpus: nil))
        XCTAssertEqual(old, CPUTicks(cpus: 1, busy: 6, idle: 9, own: 3, niced: 2, ownNice: 10))
    }

    func testParsesAffinityLists() {
        XCTAssertEqual(FreeCores.parseCPUList("0-1\n"), [0, 1])
        XCTAssertEqual(FreeCores.parseCPUList("\t0-3,8,10-11"), [0, 1, 2, 3, 8, 10, 11])
        XCTAssertEqual(FreeCores.parseCPUList("5"), [5])
        for bad in ["", "3-1", "a", "1-2-3", "1,,x"] { XCTAssertNil(FreeCores.parseCPUList(bad), bad) }
    }

    func testUnreadableCountersGiveNoSample() {
        let own = processStat(user: 1, system: 1)
        XCTAssertNil(FreeCores.parse(procStat: "intr 1 2\n", processStat: own, cpus: nil))
        XCTAssertNil(FreeCores.parse(procStat: "cpu0 1 2 x\n", processStat: own, cpus: nil))
        XCTAssertNil(FreeCores.parse(procStat: procStat([[1, 1, 1, 1, 1]]), processStat: own, cpus: [5]))
        XCTAssertNil(FreeCores.parse(procStat: procStat([[1, 1, 1, 1, 1]]), processStat: "4242 (aqlm R 1 2", cpus: nil))
        XCTAssertNil(FreeCores.parse(procStat: procStat([[1, 1, 1, 1, 1]]), processStat: "4242 (aqlm) R 1 2 3", cpus: nil))
    }

    func testOtherLoadIsBusyTimeMinusOurs() throws {
        let start = CPUTicks(cpus: 2, busy: 1000, idle: 5000, own: 300)
        // 0.5 s on 2 CPUs (100 ticks of wall time, 200 CPU ticks): we used 2 cores, nobody else.
        XCTAssertEqual(try XCTUnwrap(FreeCores.otherLoad(from: start, to: CPUTicks(cpus: 2, busy: 1200, idle: 5000, own: 500))),
                       0, accuracy: 1e-12)
        // We used one core, a busy loop the other.
        XCTAssertEqual(try XCTUnwrap(FreeCores.otherLoad(from: start, to: CPUTicks(cpus: 2, busy: 1200, idle: 5000, own: 400))),
                       1, accuracy: 1e-12)
        // Beside us at two threads, the busy loop got a third of the CPU time.
        XCTAssertEqual(try XCTUnwrap(FreeCores.otherLoad(from: start, to: CPUTicks(cpus: 2, busy: 1198, idle: 5002, own: 432))),
                       0.66, accuracy: 1e-12)
        // Our own counter ran ahead of the per-CPU ones by a tick: no negative load.
        XCTAssertEqual(try XCTUnwrap(FreeCores.otherLoad(from: start, to: CPUTicks(cpus: 2, busy: 1100, idle: 5100, own: 401))),
                       0, accuracy: 1e-12)
    }

    func testOtherLoadNeedsAWindowFromTheSameCPUs() {
        let start = CPUTicks(cpus: 2, busy: 1000, idle: 5000, own: 300)
        XCTAssertNil(FreeCores.otherLoad(from: start, to: CPUTicks(cpus: 2, busy: 1010, idle: 5008, own: 305)), "9 ticks per CPU")
        XCTAssertNotNil(FreeCores.otherLoad(from: start, to: CPUTicks(cpus: 2, busy: 1010, idle: 5010, own: 305)))
        XCTAssertNil(FreeCores.otherLoad(from: start, to: CPUTicks(cpus: 1, busy: 1100, idle: 5100, own: 305)))
        XCTAssertNil(FreeCores.otherLoad(from: start, to: CPUTicks(cpus: 2, busy: 900, idle: 5300, own: 305)))
        XCTAssertNil(FreeCores.otherLoad(from: start, to: CPUTicks(cpus: 2, busy: 1100, idle: 5100, own: 200)))
    }

    func testThreadCountGivesUpACoreEarlyAndTakesItBackLate() {
        // Two cores: other processes' load over successive windows, and the count each gives.
        let loads = [0.02, 0.2, 0.24, 0.3, 0.2, 0.16, 0.9, 1.0, 0.14, 0.1, 0.0]
        var current = 2, counts: [Int] = []
        for load in loads {
            current = FreeCores.threadCount(current: current, maximum: 2, available: 2 - load)
            counts.append(current)
        }
        XCTAssertEqual(counts, [2, 2, 2, 1, 1, 1, 1, 1, 2, 2, 2])
        // Never below one thread, never above the maximum.
        XCTAssertEqual(FreeCores.threadCount(current: 2, maximum: 2, available: 0), 1)
        XCTAssertEqual(FreeCores.threadCount(current: 1, maximum: 2, available: 8), 2)
        XCTAssertEqual(FreeCores.threadCount(current: 1, maximum: 1, available: 2), 1)
        // More cores: several given up (or taken back) in one decision.
        XCTAssertEqual(FreeCores.threadCount(current: 8, maximum: 8, available: 5.1), 5)
        XCTAssertEqual(FreeCores.threadCount(current: 8, maximum: 8, available: 4.5), 4)
        XCTAssertEqual(FreeCores.threadCount(current: 2, maximum: 8, available: 7.9), 8)
        XCTAssertEqual(FreeCores.threadCount(current: 2, maximum: 8, available: 7.8), 7)
        XCTAssertEqual(FreeCores.threadCount(current: 2, maximum: 8, available: 2.8), 2)
    }

    /// A `nice` job beside us is background: not counted while we run at nice 0, counted when
    /// we are niced ourselves (then our own ticks are in the nice column too).
    func testNicedProcessesAreNotLoadUnlessWeAreNicedToo() throws {
        // 0.5 s on 2 CPUs: we used 1.5 cores, a niced job 0.5 core (all of the nice column).
        let start = CPUTicks(cpus: 2, busy: 1000, idle: 5000, own: 300, niced: 700)
        let foreground = CPUTicks(cpus: 2, busy: 1200, idle: 5000, own: 450, niced: 750)
        XCTAssertEqual(try XCTUnwrap(FreeCores.otherLoad(from: start, to: foreground)), 0, accuracy: 1e-12)
        // Niced ourselves: 150 of the 200 nice ticks are ours, the other job's 50 are load.
        var niced = start, nicedAfter = foreground
        niced.ownNice = 10; nicedAfter.ownNice = 10
        nicedAfter.niced = 900
        XCTAssertEqual(try XCTUnwrap(FreeCores.otherLoad(from: niced, to: nicedAfter)), 0.5, accuracy: 1e-12)
        // An unniced process beside the niced one still counts: 30 ticks of it, 20 niced.
        let mixed = CPUTicks(cpus: 2, busy: 1200, idle: 5000, own: 450, niced: 720)
        XCTAssertEqual(try XCTUnwrap(FreeCores.otherLoad(from: start, to: mixed)), 0.3, accuracy: 1e-12)
        XCTAssertNil(FreeCores.otherLoad(from: start, to: CPUTicks(cpus: 2, busy: 1200, idle: 5000, own: 450, niced: 600)))
    }

    /// From /proc text to a decision: four snapshots 0.5 s apart on 2 CPUs (50 ticks each per
    /// window). First window: our 2 threads, a daemon takes 1 tick. Second: a busy loop shares
    /// CPU 1 with our second thread (20 ticks to it, 30 to us). Third: at 1 thread, the loop has
    /// gone and CPU 1 idles but for a daemon's tick.
    func testSnapshotsOfProcStatGiveTheThreadCount() throws {
        func sample(_ cpu0: [UInt64], _ cpu1: [UInt64], own: UInt64) throws -> CPUTicks {
            try XCTUnwrap(FreeCores.parse(procStat: procStat([cpu0, cpu1]), processStat: processStat(user: own, system: 0), cpus: [0, 1]))
        }
        let snapshots = [
            try sample([1000, 0, 100, 5000, 0, 0, 0, 0], [900, 0, 100, 5100, 0, 0, 0, 0], own: 1500),
            try sample([1050, 0, 100, 5000, 0, 0, 0, 0], [949, 0, 101, 5100, 0, 0, 0, 0], own: 1599),
            try sample([1100, 0, 100, 5000, 0, 0, 0, 0], [999, 0, 101, 5100, 0, 0, 0, 0], own: 1679),
            try sample([1150, 0, 100, 5000, 0, 0, 0, 0], [999, 0, 102, 5149, 0, 0, 0, 0], own: 1729),
        ]
        var current = 2, counts: [Int] = []
        for (a, b) in zip(snapshots, snapshots.dropFirst()) {
            let load = try XCTUnwrap(FreeCores.otherLoad(from: a, to: b))
            current = FreeCores.threadCount(current: current, maximum: 2, available: Double(b.cpus) - load)
            counts.append(current)
        }
        XCTAssertEqual(counts, [2, 1, 2])
    }

    /// A live window beside a busy-looping child process while this thread spins too: the child's
    /// CPU time shows up as other processes' load and ours does not. (Only inequalities: the
    /// machine may be loaded, so how much either gets is not known in advance.)
    func testLiveSampleSeesAnotherProcessAndNotOurOwnTime() throws {
        let cpus = FreeCores.allowedCPUs()
        let before = try XCTUnwrap(FreeCores.read(cpus: cpus))
        XCTAssertEqual(before.cpus, cpus?.count ?? ProcessInfo.processInfo.activeProcessorCount)
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sh")
        child.arguments = ["-c", "while :; do :; done"]
        try child.run()
        defer { child.terminate(); child.waitUntilExit() }
        let childStart = try XCTUnwrap(Self.processTicks(child.processIdentifier))
        let ownStart = Self.threadCPUSeconds()
        let wallEnd = Date().addingTimeInterval(0.6)
        var sink = 0.0
        while Date() < wallEnd { for i in 0..<10_000 { sink += Double(i).squareRoot() } }
        XCTAssertGreaterThan(sink, 0)
        let ownTicks = (Self.threadCPUSeconds() - ownStart) * 100
        let childTicks = Double(try XCTUnwrap(Self.processTicks(child.processIdentifier)) - childStart)
        let after = try XCTUnwrap(FreeCores.read(cpus: cpus))
        let load = try XCTUnwrap(FreeCores.otherLoad(from: before, to: after))
        let wallTicks = Double((after.busy + after.idle) - (before.busy + before.idle)) / Double(after.cpus)
        XCTAssertGreaterThanOrEqual(Double(after.own - before.own), ownTicks - 3, "our spinning counts as ours")
        XCTAssertGreaterThanOrEqual(load * wallTicks, 0.8 * childTicks - 3,
                                    "the child's \(childTicks) ticks are other processes' load (\(load) cores over \(wallTicks) ticks)")
    }

    /// A live window beside a busy child started with `nice -n 19`: its ticks land in the nice
    /// column that `otherLoad` leaves out while we are not niced.
    func testLiveSampleCountsANicedChildInTheNiceColumn() throws {
        let cpus = FreeCores.allowedCPUs()
        let before = try XCTUnwrap(FreeCores.read(cpus: cpus))
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/usr/bin/nice")
        child.arguments = ["-n", "19", "/bin/sh", "-c", "while :; do :; done"]
        try child.run()
        defer { child.terminate(); child.waitUntilExit() }
        Thread.sleep(forTimeInterval: 0.05)   // nice execs the shell
        let childStart = try XCTUnwrap(Self.processTicks(child.processIdentifier))
        // On a loaded machine a nice-19 process gets ~1.5 % of a core: wait for 20 ticks of it.
        let deadline = Date().addingTimeInterval(10)
        var childTicks = 0.0
        while childTicks < 20, Date() < deadline {
            Thread.sleep(forTimeInterval: 0.1)
            childTicks = Double(try XCTUnwrap(Self.processTicks(child.processIdentifier)) - childStart)
        }
        let after = try XCTUnwrap(FreeCores.read(cpus: cpus))
        if childTicks < 20 { throw XCTSkip("the machine left the niced child \(childTicks) ticks in 10 s") }
        XCTAssertGreaterThanOrEqual(Double(after.niced - before.niced), 0.8 * childTicks - 3,
                                    "the niced child's \(childTicks) ticks are in the nice column")
    }

    /// utime + stime of process `pid`, in ticks.
    private static func processTicks(_ pid: Int32) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let u = UInt64(fields[11]), let s = UInt64(fields[12]) else { return nil }
        return u + s
    }

    private static func threadCPUSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    func testAChosenCountStopsFollowingTheLoad() {
        let saved = Threads.count
        defer { Threads.set(saved) }
        Threads.set(2)
        Threads.followFreeCores()
        let environment = ProcessInfo.processInfo.environment
        if ["AQLM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"].allSatisfy({ environment[$0] == nil }) {
            XCTAssertTrue(Threads.followsFreeCores)
        } else {
            XCTAssertFalse(Threads.followsFreeCores, "a count chosen in the environment is kept")
        }
        Threads.set(2)
        XCTAssertFalse(Threads.followsFreeCores)
        Threads.adjustToLoad()
        XCTAssertEqual(Threads.count, 2)
    }
}
