import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// CPU time counters at one instant, in clock ticks (USER_HZ, 1/100 s on Linux).
public struct CPUTicks: Equatable, Sendable {
    /// How many CPUs `busy` and `idle` cover (those this process may run on).
    public var cpus: Int
    /// Busy ticks of those CPUs, every process's: user + nice + system + irq + softirq + steal.
    public var busy: UInt64
    /// Idle ticks of those CPUs: idle + iowait.
    public var idle: UInt64
    /// Ticks this process has used, all its threads (exited ones too): utime + stime.
    public var own: UInt64
    /// Of `busy`, the ticks of processes running at a positive nice value (the nice column).
    public var niced: UInt64
    /// This process's own nice value.
    public var ownNice: Int

    public init(cpus: Int, busy: UInt64, idle: UInt64, own: UInt64, niced: UInt64 = 0, ownNice: Int = 0) {
        self.cpus = cpus
        self.busy = busy
        self.idle = idle
        self.own = own
        self.niced = niced
        self.ownNice = ownNice
    }
}

/// How many cores other processes leave us, and the thread count that follows from it.
///
/// Why: OpenBLAS splits each sgemm statically between its threads, and a two-thread product
/// beside one busy core runs at the pace of the thread that shares it, while the other thread
/// waits (measured: perplexity at 0.23x its idle throughput beside one busy-looping process on
/// a 2-core machine, 0.53x with one thread). The products now run as two fixed panels on our
/// pool (`PanelledBLAS.swift`, for thread-independent bits), where a descheduled worker's panel
/// still holds up the product for a time slice. So the thread count follows the cores
/// actually free: between two samples, the other processes' CPU time is the busy time of the
/// CPUs we may run on minus our own process's CPU time (our spinning included), in cores.
///
/// Processes at a positive nice value do not count as load while we run at nice 0 or below: a
/// user who starts a job with `nice` (10 by default) or `nice -n 19` marks it as background,
/// and the scheduler gives it ~10 % or ~1.5 % of a core it shares with one of our threads
/// (CFS weights 110 and 15 against 1024), below `giveUpShare`. Counting it as a whole core
/// dropped a foreground run to one thread and left the other core to the niced job. The nice
/// column does not say how nice: a process at nice 1-4 (weights 820-423) takes more than that
/// and is still not counted. A niced aqlm counts every other process, niced or not.
///
/// The functions on samples and loads are pure (tested on synthetic counters); `read()` takes a
/// sample from /proc/stat and /proc/self/stat (~20 µs).
public enum FreeCores {
    /// A core is no longer counted as ours when other processes took more than this share of it.
    /// Low, because the cost is not proportional to the share: a busy process takes its whole
    /// time slice (milliseconds) while the thread it displaced holds up a statically split
    /// sgemm; on an idle machine other processes use ~0.01 of a core.
    public static let giveUpShare = 0.25
    /// A core given up is taken back when other processes leave all but this share of it free.
    /// Lower than `giveUpShare`, so a load hovering at one level does not switch the count back
    /// and forth.
    public static let takeBackShare = 0.15

    /// The thread count for `available` free cores (cores minus other processes' load), with
    /// hysteresis around `current`: fewer threads once a core of ours is more than
    /// `giveUpShare` taken, more only once another core is at least 1 − `takeBackShare` free.
    /// Always within 1...maximum.
    public static func threadCount(current: Int, maximum: Int, available: Double) -> Int {
        let current = min(max(current, 1), max(maximum, 1))
        var next = current
        if available < Double(current) - giveUpShare {
            next = min(current - 1, Int((available + giveUpShare).rounded(.down)))
        } else if available >= Double(current + 1) - takeBackShare {
            next = max(current + 1, Int((available + takeBackShare).rounded(.down)))
        }
        return min(max(next, 1), max(maximum, 1))
    }

    /// Cores' worth of CPU time other processes used between two samples (0 when they used
    /// none; never negative; niced processes left out while we are not niced), or nil when the
    /// samples are too close (fewer than `minimumTicks` elapsed per CPU), not from the same
    /// CPUs, or out of order.
    public static func otherLoad(from a: CPUTicks, to b: CPUTicks, minimumTicks: UInt64 = 10) -> Double? {
        guard a.cpus == b.cpus, b.cpus > 0, b.busy >= a.busy, b.idle >= a.idle, b.own >= a.own, b.niced >= a.niced
        else { return nil }
        let busy = b.busy - a.busy, idle = b.idle - a.idle, own = b.own - a.own
        let wallTicks = Double(busy + idle) / Double(b.cpus)
        guard wallTicks >= Double(minimumTicks) else { return nil }
        // Not niced ourselves, none of the nice column's ticks are ours.
        let competing = b.ownNice <= 0 ? busy - min(busy, b.niced - a.niced) : busy
        // Our own ticks are counted by another clock than the per-CPU ones: clamp at zero.
        let others = competing > own ? Double(competing - own) : 0
        return min(Double(b.cpus), others / wallTicks)
    }

    /// A sample from /proc/stat's lines for `cpus` (all CPU lines when nil) and
    /// /proc/self/stat's text; nil if either does not parse.
    public static func parse(procStat: String, processStat: String, cpus: Set<Int>?) -> CPUTicks? {
        var busy: UInt64 = 0, idle: UInt64 = 0, niced: UInt64 = 0, counted = 0
        for line in procStat.split(separator: "\n") where line.hasPrefix("cpu") {
            let fields = line.split(separator: " ")
            // "cpu" alone is the total line; "cpuN" one CPU.
            guard let index = Int(fields[0].dropFirst(3)) else { continue }
            if let cpus, !cpus.contains(index) { continue }
            let ticks = fields.dropFirst().prefix(8).compactMap { UInt64($0) }
            guard ticks.count >= 5 else { return nil }
            // user nice system idle iowait irq softirq steal
            idle += ticks[3] + ticks[4]
            busy += ticks[0] + ticks[1] + ticks[2] + ticks.dropFirst(5).reduce(0, +)
            niced += ticks[1]
            counted += 1
        }
        // The command name in parentheses may hold spaces: fields are counted after the last ')'.
        guard counted > 0, let close = processStat.lastIndex(of: ")") else { return nil }
        let fields = processStat[processStat.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15,
        // nice field 19.
        guard fields.count > 16, let user = UInt64(fields[11]), let system = UInt64(fields[12]),
              let nice = Int(fields[16]) else { return nil }
        return CPUTicks(cpus: counted, busy: busy, idle: idle, own: user + system, niced: niced, ownNice: nice)
    }

    /// The CPUs this process may run on (its affinity, /proc/self/status's Cpus_allowed_list),
    /// or nil if unknown.
    public static func allowedCPUs() -> Set<Int>? {
        guard let status = readSmallFile("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") })
        else { return nil }
        return parseCPUList(String(line.dropFirst("Cpus_allowed_list:".count)))
    }

    /// A kernel CPU list ("0-3,8,10-11") as a set, or nil if it does not parse.
    public static func parseCPUList(_ text: String) -> Set<Int>? {
        var cpus = Set<Int>()
        for part in text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ",") {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
            guard bounds.count <= 2, let low = bounds.first ?? nil, let high = bounds.last ?? nil, low <= high else { return nil }
            cpus.formUnion(low...high)
        }
        return cpus.isEmpty ? nil : cpus
    }

    /// A sample of this machine's counters now, or nil where /proc is not readable.
    public static func read(cpus: Set<Int>? = allowedCPUs()) -> CPUTicks? {
        guard let stat = readSmallFile("/proc/stat"), let own = readSmallFile("/proc/self/stat") else { return nil }
        return parse(procStat: stat, processStat: own, cpus: cpus)
    }

    /// A /proc file's text (their size is reported as 0, so read until the end).
    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 { return nil }
            if n == 0 { break }
            data += buffer[0..<n]
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Follows the free cores during a run: `Threads.followFreeCores()` starts it, and the long
/// loops call `Threads.adjustToLoad()` at their natural boundaries (between perplexity chunks,
/// calibration sequences, quantized layers, fine-tuning steps, decode steps). A check within
/// `interval` of the last sample returns at once (one clock read), so a boundary may come often.
final class LoadFollower: @unchecked Sendable {
    /// The shortest window a decision is made on: 0.25 s is 25 ticks per CPU, so a tick of
    /// accounting error moves the load by 0.04 core, far from the 0.25 that gives a core up;
    /// and the first decision comes early (perplexity's first 512-token chunk takes ~1.2 s on
    /// 2 free cores with the default model, ~5 s beside a busy one at 2 threads).
    static let interval: UInt64 = 250_000_000
    let maximum: Int
    let cpus: Set<Int>?
    /// AQLM_THREADS_LOG set: each change of the count is written to stderr.
    let logs = ProcessInfo.processInfo.environment["AQLM_THREADS_LOG"] != nil
    private var last: CPUTicks
    private var lastTime: UInt64

    init?(maximum: Int) {
        let cpus = FreeCores.allowedCPUs()
        guard let first = FreeCores.read(cpus: cpus) else { return nil }
        self.maximum = maximum
        self.cpus = cpus
        last = first
        lastTime = DispatchTime.now().uptimeNanoseconds
    }

    /// The thread count for the window since the last sample, or nil while the window is short
    /// (or /proc did not answer).
    func check(current: Int) -> Int? {
        let now = DispatchTime.now().uptimeNanoseconds
        guard now &- lastTime >= Self.interval, let sample = FreeCores.read(cpus: cpus) else { return nil }
        defer { last = sample; lastTime = now }
        guard let load = FreeCores.otherLoad(from: last, to: sample) else { return nil }
        return FreeCores.threadCount(current: current, maximum: maximum, available: Double(sample.cpus) - load)
    }
}
