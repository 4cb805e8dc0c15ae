import Foundation
import Kernels
import Synchronization
import XCTest

/// The persistent worker pool behind parallelFor/parallelChunks: every index exactly once,
/// many short jobs in a row (a late helper must not claim a newer job's index), nested and
/// concurrent callers, and a helper really running beside the caller.
final class WorkerPoolTests: XCTestCase {
    /// Counts how often each index ran.
    private final class Tally: @unchecked Sendable {
        let counts: UnsafeMutablePointer<Atomic<Int>>
        let size: Int
        init(_ size: Int) {
            self.size = size
            counts = .allocate(capacity: max(size, 1))
            for i in 0..<size { (counts + i).initialize(to: Atomic(0)) }
        }
        deinit { counts.deallocate() }
        func hit(_ i: Int) { counts[i].add(1, ordering: .relaxed) }
        var all: [Int] { (0..<size).map { counts[$0].load(ordering: .relaxed) } }
    }

    func testEveryIndexRunsExactlyOnceOverManyShortJobs() {
        let pool = WorkerPool()
        for job in 0..<3000 {
            let n = [0, 1, 2, 3, 17, 64][job % 6]
            let tally = Tally(n)
            pool.run(n, workers: 2) { tally.hit($0) }
            guard tally.all == Array(repeating: 1, count: n) else {
                return XCTFail("job \(job) with \(n) indices ran \(tally.all)")
            }
        }
    }

    func testNestedAndConcurrentLoopsComplete() {
        let pool = WorkerPool()
        let tally = Tally(8 * 8)
        pool.run(8, workers: 2) { i in
            pool.run(8, workers: 2) { j in tally.hit(i * 8 + j) }
        }
        XCTAssertEqual(tally.all, Array(repeating: 1, count: 64))

        let second = Tally(4 * 500)
        DispatchQueue.concurrentPerform(iterations: 4) { caller in
            for round in 0..<50 {
                pool.run(10, workers: 2) { i in second.hit(caller * 500 + round * 10 + i) }
            }
        }
        XCTAssertEqual(second.all, Array(repeating: 1, count: 2000))
    }

    /// Index 0 waits until index 1 has started: only a second thread running beside the first
    /// can start it (one thread alone runs 0 to the end first).
    func testAHelperRunsBesideTheCaller() {
        let pool = WorkerPool()
        let started = Atomic<Bool>(false)
        var helped = false
        pool.run(2, workers: 2) { i in
            if i == 0 {
                let deadline = Date().addingTimeInterval(5)
                while !started.load(ordering: .acquiring) && Date() < deadline {}
                helped = started.load(ordering: .acquiring)
            } else {
                started.store(true, ordering: .releasing)
            }
        }
        XCTAssertTrue(helped, "no helper picked up index 1 within 5 s")
        XCTAssertEqual(pool.helpers, 1)
    }

    func testParallelChunksCoverTheRangeWithEitherBackend() {
        let backend = Threads.backend
        defer { Threads.backend = backend }
        for choice in ParallelBackend.allCases {
            Threads.backend = choice
            let tally = Tally(1000)
            parallelChunks(1000, minChunk: 10) { lo, hi in
                for i in lo..<hi { tally.hit(i) }
            }
            XCTAssertEqual(tally.all, Array(repeating: 1, count: 1000), "\(choice)")
        }
    }

    /// One chunk stalls (as a worker that lost its core would) until every other chunk has run:
    /// the other thread must take them all, and the stalled chunk is a small part of the range
    /// (with one chunk per worker it would be half).
    func testAStalledChunkLeavesTheRestToTheOtherWorker() {
        let saved = (Threads.count, Threads.backend)
        defer { Threads.count = saved.0; Threads.backend = saved.1 }
        Threads.count = 2
        Threads.backend = .pool
        let n = 800
        let tally = Tally(n)
        let finished = Atomic<Int>(0)
        var stalledWaited = false, stalledShare = 0
        parallelChunks(n, minChunk: 1) { lo, hi in
            if lo == 0 {
                stalledShare = hi - lo
                let deadline = Date().addingTimeInterval(5)
                while finished.load(ordering: .acquiring) < n - hi && Date() < deadline { usleep(100) }
                stalledWaited = finished.load(ordering: .acquiring) == n - hi
            } else {
                finished.add(hi - lo, ordering: .releasing)
            }
            for i in lo..<hi { tally.hit(i) }
        }
        XCTAssertTrue(stalledWaited, "the chunks after the stalled one were not taken over within 5 s")
        // What the other worker had to take over: all but one of the stalled worker's chunks.
        XCTAssertLessThanOrEqual(stalledShare, n / (2 * Threads.chunksPerWorker))
        XCTAssertEqual(tally.all, Array(repeating: 1, count: n))
    }

    /// The caller finishes its share at once and waits (spinning, then asleep) for a helper
    /// whose index takes 30 ms: it must be woken when that index completes, over many jobs.
    func testTheCallerWakesWhenASlowHelperFinishes() {
        let pool = WorkerPool()
        for _ in 0..<20 {
            let tally = Tally(2)
            let start = Date()
            pool.run(2, workers: 2) { i in
                if i == 1 { usleep(30_000) }
                tally.hit(i)
            }
            XCTAssertEqual(tally.all, [1, 1])
            XCTAssertLessThan(Date().timeIntervalSince(start), 2.0)
        }
    }
}
