import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

/// Per-round tallies shared by a stress round's threads.
final class RCUStressTally: Sendable {
    let readerErrors = Atomic<Int>(0)
    let lookups = Atomic<Int>(0)
    let writersRunning = Atomic<Int>(0)
    let successes = Atomic<Int>(0)
    let writerErrors = Atomic<Int>(0)
}

/// Runs `body` on a registered reader/writer thread of `F`, reporting
/// quiescent states (QSBR) through `tick`.
private enum StressFlavor {
    static func enter<F: RCUFlavor>(_: F.Type) { F.registerThread() }
    static func leave<F: RCUFlavor>(_: F.Type) { F.unregisterThread() }
    static func tick<F: RCUFlavor>(_: F.Type) {
        if F.self == QSBR.self { QSBR.quiescentState() }
    }
}

@Suite struct RCUStressTests {
    /// Thread counts per round: 2..4 on the two CPUs, and 8 (oversubscribed).
    static let threadCounts = [2, 3, 4, 8]

    /// Readers look up stable keys (never removed) and churn keys while
    /// writers insert and remove churn keys, growing the table several times
    /// per round. Stable keys must always be found with their own value; a
    /// churn key, if found, must carry its own value (never another node's,
    /// never a poisoned one). After each round: the table holds exactly what
    /// the writers left, and once a barrier has run, no node is leaked.
    @Test(arguments: ["qsbr", "memb"])
    func readersAlwaysHitStableKeysDuringChurnAndGrowth(flavour: String) {
        if flavour == "qsbr" { churnRounds(QSBR.self) } else { churnRounds(Memb.self) }
    }

    private func churnRounds<F: RCUFlavor>(_: F.Type) {
        let rounds = 12
        let stableCount: UInt64 = 200
        let churnPerWriter: UInt64 = 600
        for round in 0..<rounds {
            let threads = Self.threadCounts[round % Self.threadCounts.count]
            let writers = max(1, threads / 2)
            let readers = threads - writers
            let table = RCUHashTable<UInt64, F>(initialBucketCount: 64)
            F.withRegisteredThread {
                for k in 0..<stableCount { table.insert(k, value: rcuTestValue(k)) }
            }
            let tally = RCUStressTally()
            tally.writersRunning.store(writers, ordering: .relaxed)
            let barrier = SpinBarrier(parties: threads)
            var pool: [PinnedThread<Void>] = []
            for w in 0..<writers {
                pool.append(PinnedThread(cpu: w, name: "rcu-w\(w)") {
                    StressFlavor.enter(F.self)
                    barrier.wait()
                    // This writer's churn keys: a disjoint range.
                    let base = stableCount + UInt64(w) * churnPerWriter
                    for pass in 0..<2 {
                        for k in base..<(base + churnPerWriter) {
                            if !table.insert(k, value: rcuTestValue(k)) { tally.writerErrors.add(1, ordering: .relaxed) }
                            if k % 16 == 0 { StressFlavor.tick(F.self) }
                        }
                        // Remove the odd ones (and, on the first pass, the
                        // even ones too, so the second pass re-inserts all).
                        for k in base..<(base + churnPerWriter) where pass == 0 || k % 2 == 1 {
                            if table.remove(k) != rcuTestValue(k) { tally.writerErrors.add(1, ordering: .relaxed) }
                            if k % 16 == 0 { StressFlavor.tick(F.self) }
                        }
                    }
                    tally.writersRunning.subtract(1, ordering: .releasing)
                    StressFlavor.leave(F.self)
                })
            }
            for r in 0..<readers {
                pool.append(PinnedThread(cpu: writers + r, name: "rcu-r\(r)") {
                    StressFlavor.enter(F.self)
                    barrier.wait()
                    var errors = 0
                    var n = 0
                    var x = UInt64(r + 1) &* 0x9E37_79B9_7F4A_7C15
                    // At least a few batches, and until every writer is done.
                    while n < 2_000 || tally.writersRunning.load(ordering: .acquiring) > 0 {
                        F.withReadSection {
                            for _ in 0..<32 {
                                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                                let stable = x % stableCount
                                if table.lookup(stable) != rcuTestValue(stable) { errors += 1 }
                                let churn = stableCount + (x >> 20) % (UInt64(writers) * churnPerWriter)
                                if let v = table.lookup(churn), v != rcuTestValue(churn) { errors += 1 }
                            }
                        }
                        n += 32
                        StressFlavor.tick(F.self)
                        if n % 1024 == 0 { sched_yield() }
                    }
                    tally.readerErrors.add(errors, ordering: .relaxed)
                    tally.lookups.add(n * 2, ordering: .relaxed)
                    StressFlavor.leave(F.self)
                })
            }
            for t in pool { t.join() }
            #expect(tally.readerErrors.load(ordering: .relaxed) == 0, "round \(round), \(threads) threads")
            #expect(tally.writerErrors.load(ordering: .relaxed) == 0, "round \(round), \(threads) threads")
            // Conservation: stable keys plus the even churn keys of each writer.
            let expected = Int(stableCount) + writers * Int(churnPerWriter / 2)
            F.withRegisteredThread {
                F.withReadSection {
                    var wrong = 0
                    for k in 0..<(stableCount + UInt64(writers) * churnPerWriter) {
                        let present = k < stableCount || k % 2 == 0
                        if table.lookup(k) != (present ? rcuTestValue(k) : nil) { wrong += 1 }
                    }
                    #expect(wrong == 0)
                }
                F.barrier()
            }
            let s = table.statistics
            #expect(s.count == expected)
            #expect(s.bucketCount >= expected)
            #expect(s.resizes >= 2)
            #expect(s.pendingReclaim == 0)
            #expect(s.liveNodes == expected)
            F.withRegisteredThread {
                table.removeAll()
                F.barrier()
            }
            #expect(table.statistics.liveNodes == 0)
        }
    }

    /// Writers race to insert, then to remove, the same keys: each key is
    /// inserted exactly once and removed exactly once.
    @Test func concurrentInsertAndRemoveOfSameKeysIsExactlyOnce() {
        let keys: UInt64 = 2_000
        for round in 0..<8 {
            let threads = Self.threadCounts[round % Self.threadCounts.count]
            let table = RCUHashTable<UInt64, Memb>(initialBucketCount: 64)
            let inserted = RCUStressTally()
            let removed = RCUStressTally()
            let barrier = SpinBarrier(parties: threads)
            let pool = (0..<threads).map { t in
                PinnedThread(cpu: t, name: "rcu-x\(t)") {
                    Memb.registerThread()
                    barrier.wait()
                    // Different starting points so threads collide everywhere.
                    let start = UInt64(t) * keys / UInt64(threads)
                    for i in 0..<keys {
                        let k = (start + i) % keys
                        if table.insert(k, value: rcuTestValue(k)) { inserted.successes.add(1, ordering: .relaxed) }
                    }
                    barrier.wait()
                    for i in 0..<keys {
                        let k = (start + i) % keys
                        if let v = table.remove(k) {
                            removed.successes.add(1, ordering: .relaxed)
                            if v != rcuTestValue(k) { removed.writerErrors.add(1, ordering: .relaxed) }
                        }
                    }
                    Memb.unregisterThread()
                }
            }
            for t in pool { t.join() }
            #expect(inserted.successes.load(ordering: .relaxed) == Int(keys))
            #expect(removed.successes.load(ordering: .relaxed) == Int(keys))
            #expect(removed.writerErrors.load(ordering: .relaxed) == 0)
            #expect(table.count == 0)
            Memb.barrier()
            #expect(table.statistics.liveNodes == 0)
        }
    }
}
