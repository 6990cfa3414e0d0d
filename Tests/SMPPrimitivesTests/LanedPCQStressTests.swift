import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

/// Multi-producer stress of ``LanedPCQ``: many short rounds behind a
/// barrier, 2 to 8 producers plus the consumer (oversubscribed on a 2-CPU
/// machine), tiny lanes to force the full path, producers that yield the
/// CPU between puts (so they are descheduled with their lane half-used)
/// and producers that drop and re-register their handle every round. Each
/// round checks exactly-once delivery and per-producer order; the end
/// checks the counters. Every wait has a deadline: a stuck round fails.
@Suite(.serialized) struct LanedPCQStressTests {
    struct Config: CustomTestStringConvertible, Sendable {
        var producers: Int
        /// Lanes beyond the producers' stay registered-but-idle or are
        /// picked up by re-registration.
        var spareLanes: Int
        var laneCapacity: Int
        var itemsPerProducer: Int
        var rounds: Int
        /// A producer yields after one put in `yieldEvery` (0 = never).
        var yieldEvery: Int
        /// Producers drop their handle at the end of each round and
        /// register a new one (possibly another lane) for the next.
        var reregister: Bool
        var testDescription: String {
            "\(producers)P+\(spareLanes) lane \(laneCapacity) \(rounds)x\(itemsPerProducer) yield 1/\(yieldEvery)"
                + (reregister ? " reregister" : "")
        }
    }

    // Sized so the suite takes a few seconds in debug, about ten under TSan.
    static let configs: [Config] = [
        Config(producers: 2, spareLanes: 0, laneCapacity: 1, itemsPerProducer: 300, rounds: 20, yieldEvery: 0, reregister: false),
        Config(producers: 2, spareLanes: 0, laneCapacity: 64, itemsPerProducer: 2_000, rounds: 20, yieldEvery: 0, reregister: false),
        Config(producers: 3, spareLanes: 1, laneCapacity: 4, itemsPerProducer: 300, rounds: 20, yieldEvery: 8, reregister: true),
        Config(producers: 4, spareLanes: 0, laneCapacity: 3, itemsPerProducer: 300, rounds: 20, yieldEvery: 16, reregister: false),
        Config(producers: 8, spareLanes: 2, laneCapacity: 2, itemsPerProducer: 100, rounds: 15, yieldEvery: 4, reregister: true),
        Config(producers: 8, spareLanes: 0, laneCapacity: 16, itemsPerProducer: 200, rounds: 15, yieldEvery: 0, reregister: true),
    ]

    @Test(arguments: configs)
    func exactlyOnceAndPerProducerOrder(config: Config) {
        let q = LanedPCQ<UInt>(laneCapacity: config.laneCapacity, maxLanes: config.producers + config.spareLanes)
        let barrier = SpinBarrier(parties: config.producers + 1)
        let failures = StressCounters(count: config.producers)
        let report = StressReport()
        /// Set by the consumer when a round misses its deadline, so that
        /// producers stuck on a full lane give up and every thread still
        /// reaches the barriers.
        let stop = StressFlags()
        let tagShift: UInt = 32

        let producers = (0..<config.producers).map { id in
            PinnedThread(name: "laned-stress-p") {
                var rng = SplitMix(seed: UInt64(id) &+ 1)
                var failed = 0
                func putRound(_ lane: inout LanedPCQ<UInt>.Producer) {
                    for s in 1...config.itemsPerProducer {
                        let v = UInt(id) << tagShift | UInt(s)
                        var spins = 0
                        while !lane.put(v) {
                            failed += 1
                            // Relaxed: only ends the run; no data.
                            if stop.flag.load(ordering: .relaxed) { return }
                            spins += 1
                            if spins & 15 == 0 { sched_yield() } else { spinLoopHint() }
                        }
                        if config.yieldEvery > 0 && rng.next() % UInt64(config.yieldEvery) == 0 {
                            sched_yield()
                        }
                    }
                }
                if config.reregister {
                    for _ in 0..<config.rounds {
                        barrier.wait()
                        // Every lane was released before the last barrier.
                        if var lane = q.register() { putRound(&lane) } else { failed = -1_000_000 }
                        barrier.wait()
                    }
                } else if var lane = q.register() {
                    for _ in 0..<config.rounds {
                        barrier.wait()
                        putRound(&lane)
                        barrier.wait()
                    }
                } else {
                    failed = -1_000_000
                    for _ in 0..<(2 * config.rounds) { barrier.wait() }
                }
                failures.add(id, failed)
            }
        }

        let consumer = PinnedThread(name: "laned-stress-c") {
            var rng = SplitMix(seed: 99)
            var errors = 0
            let expectedPerRound = config.producers * config.itemsPerProducer
            var next = [UInt](repeating: 1, count: config.producers)
            for _ in 0..<config.rounds {
                barrier.wait()
                for i in next.indices { next[i] = 1 }
                func check(_ v: UInt) {
                    let p = Int(v >> tagShift)
                    if p < next.count && v & 0xFFFF_FFFF == next[p] {
                        next[p] += 1
                    } else {
                        errors += 1
                    }
                }
                let deadline = monotonicSeconds() + 30
                var got = 0
                var idle = 0
                while got < expectedPerRound && !stop.flag.load(ordering: .relaxed) {
                    var took = 0
                    if rng.next() % 4 == 0 {
                        if let v = q.get() {
                            check(v)
                            took = 1
                        }
                    } else {
                        let maxCount = Swift.min(Int(rng.next() % 8) + 1, expectedPerRound - got)
                        took = q.drain(max: maxCount) { check($0) }
                        if took > maxCount { errors += 1 }
                    }
                    got += took
                    if took > 0 {
                        idle = 0
                    } else {
                        idle += 1
                        if idle & 7 == 0 { sched_yield() } else { spinLoopHint() }
                        if idle & 1023 == 0 && monotonicSeconds() > deadline {
                            errors += 1_000_000  // the round is stuck
                            stop.flag.store(true, ordering: .relaxed)
                        }
                    }
                }
                if !stop.flag.load(ordering: .relaxed) {
                    if q.get() != nil { errors += 1 }  // nothing extra
                    if next.contains(where: { $0 != UInt(config.itemsPerProducer) + 1 }) { errors += 1 }
                }
                barrier.wait()
            }
            report.errors.store(errors, ordering: .relaxed)
        }
        for t in producers { t.join() }
        consumer.join()

        let total = config.producers * config.itemsPerProducer * config.rounds
        #expect(report.errors.load(ordering: .relaxed) == 0)
        let s = q.statistics
        #expect(s.puts == total, "successful puts == items got")
        #expect(s.gets == total)
        #expect(s.failedPuts == failures.total)
        #expect(s.highWater >= 1 && s.highWater <= config.laneCapacity)
        #expect(q.approximateCount == 0)
        #expect(q.lanesInUse <= config.producers + config.spareLanes)
    }

    /// One producer stops in the middle of its run (as if preempted for a
    /// long time, holding its handle) while another keeps putting through a
    /// small lane: the consumer keeps receiving the other's items, far more
    /// than a lane holds, and the stalled one's items when it resumes.
    @Test func stalledProducerDelaysOnlyItsOwnLane() {
        let laneCapacity = 8
        let items = 5_000
        let q = LanedPCQ<UInt>(laneCapacity: laneCapacity, maxLanes: 2)
        let resume = StressFlags()
        let stalledPut = StressFlags()
        let stalled = PinnedThread(name: "laned-stalled") { () -> Bool in
            guard var lane = q.register() else { return false }
            guard lane.put(1) else { return false }
            stalledPut.flag.store(true, ordering: .releasing)
            // "Preempted" with its handle held, until the other has finished.
            guard waitFor(seconds: 30, { resume.flag.load(ordering: .acquiring) }) else { return false }
            return lane.put(2)
        }
        let runner = PinnedThread(name: "laned-runner") { () -> Bool in
            guard waitFor(seconds: 30, { stalledPut.flag.load(ordering: .acquiring) }) else { return false }
            guard var lane = q.register() else { return false }
            let deadline = monotonicSeconds() + 30
            for s in 1...items {
                while !lane.put(UInt(100 + s)) {
                    if monotonicSeconds() > deadline { return false }
                    sched_yield()
                }
            }
            return true
        }
        var fromRunner: [UInt] = []
        var fromStalled: [UInt] = []
        let ok = waitFor(seconds: 30) {
            q.drain(max: 64) { v in if v > 100 { fromRunner.append(v) } else { fromStalled.append(v) } }
            return fromRunner.count == items
        }
        #expect(ok, "the runner's items all arrive while the other producer is stalled")
        #expect(fromRunner == (1...items).map { UInt(100 + $0) })
        #expect(fromStalled == [1])
        resume.flag.store(true, ordering: .releasing)
        #expect(runner.join())
        #expect(stalled.join())
        #expect(waitFor(seconds: 30) {
            q.drain(max: 64) { fromStalled.append($0) }
            return fromStalled.count == 2
        })
        #expect(fromStalled == [1, 2])
    }
}

/// A flag shared by the threads of a test.
private final class StressFlags: Sendable {
    let flag = Atomic<Bool>(false)
}
