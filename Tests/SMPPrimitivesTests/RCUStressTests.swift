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

    /// Readers look up stable keys (never changed), replaced keys (whose
    /// values writers keep replacing) and churn keys while writers insert
    /// and remove churn keys, growing the table several times per round.
    /// Stable keys must always be found with their own value; replaced keys
    /// must always be found (a replace never hides its key) with a whole
    /// value of their own; a churn key, if found, must carry its own value
    /// (never another node's, never a poisoned one). After each round: the
    /// table holds exactly what the writers left, and once a barrier has
    /// run, no node is leaked. With word values and with 24-byte records
    /// (where a torn read would show).
    @Test(arguments: ["qsbr", "memb", "bp"], ["word", "record"])
    func readersAlwaysHitStableKeysDuringChurnAndGrowth(flavour: String, value: String) {
        switch (flavour, value) {
        case ("qsbr", "word"): churnRounds(QSBR.self, UInt.self)
        case ("qsbr", _): churnRounds(QSBR.self, RCUTestRecord.self)
        case ("bp", "word"): churnRounds(Bulletproof.self, UInt.self)
        case ("bp", _): churnRounds(Bulletproof.self, RCUTestRecord.self)
        case (_, "word"): churnRounds(Memb.self, UInt.self)
        default: churnRounds(Memb.self, RCUTestRecord.self)
        }
    }

    private func churnRounds<F: RCUFlavor, V: RCUTestValue>(_: F.Type, _: V.Type) {
        let rounds = 12
        let stableCount: UInt64 = 200
        let replacedCount: UInt64 = 64
        let churnBase = stableCount + replacedCount
        let churnPerWriter: UInt64 = 600
        for round in 0..<rounds {
            let threads = Self.threadCounts[round % Self.threadCounts.count]
            let writers = max(1, threads / 2)
            let readers = threads - writers
            let table = RCUHashTable<UInt64, V, F>(initialBucketCount: 64)
            F.withRegisteredThread {
                for k in 0..<churnBase { table.insert(k, value: V.of(k, generation: 0)) }
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
                    let base = churnBase + UInt64(w) * churnPerWriter
                    // This writer's replaced keys: every writers-th one.
                    let mine = Array(stride(from: stableCount + UInt64(w), to: churnBase, by: writers))
                    var generation: UInt64 = 0
                    var errors = 0
                    func replaceOne(_ i: UInt64) {
                        let r = mine[Int(i) % mine.count]
                        let old = table.replace(r, value: V.of(r, generation: generation + 1))
                        if old != V.of(r, generation: generation) { errors += 1 }
                        if Int(i) % mine.count == mine.count - 1 { generation += 1 }
                    }
                    var ops: UInt64 = 0
                    for pass in 0..<2 {
                        for k in base..<(base + churnPerWriter) {
                            if !table.insert(k, value: V.of(k, generation: 0)) { errors += 1 }
                            if k % 16 == 0 { StressFlavor.tick(F.self) }
                            if k % 4 == 0 { replaceOne(ops); ops += 1 }
                        }
                        // Remove the odd ones (and, on the first pass, the
                        // even ones too, so the second pass re-inserts all).
                        for k in base..<(base + churnPerWriter) where pass == 0 || k % 2 == 1 {
                            if table.remove(k) != V.of(k, generation: 0) { errors += 1 }
                            if k % 16 == 0 { StressFlavor.tick(F.self) }
                            if k % 4 == 0 { replaceOne(ops); ops += 1 }
                        }
                    }
                    // Whole cycles only, so every replaced key of this
                    // writer ends at `generation`.
                    while ops % UInt64(mine.count) != 0 { replaceOne(ops); ops += 1 }
                    // An absent key is not replaced (and stays absent).
                    if table.replace(base + 1, value: V.of(base + 1, generation: 1)) != nil { errors += 1 }
                    tally.writerErrors.add(errors, ordering: .relaxed)
                    tally.successes.add(Int(generation), ordering: .relaxed)
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
                                if table.lookup(stable) != V.of(stable, generation: 0) { errors += 1 }
                                let replaced = stableCount + (x >> 12) % replacedCount
                                if table.lookup(replaced)?.belongs(to: replaced) != true { errors += 1 }
                                let churn = churnBase + (x >> 20) % (UInt64(writers) * churnPerWriter)
                                if let v = table.lookup(churn), !v.belongs(to: churn) { errors += 1 }
                            }
                        }
                        n += 32
                        StressFlavor.tick(F.self)
                        if n % 1024 == 0 { sched_yield() }
                    }
                    tally.readerErrors.add(errors, ordering: .relaxed)
                    tally.lookups.add(n * 3, ordering: .relaxed)
                    StressFlavor.leave(F.self)
                })
            }
            for t in pool { t.join() }
            #expect(tally.readerErrors.load(ordering: .relaxed) == 0, "round \(round), \(threads) threads")
            #expect(tally.writerErrors.load(ordering: .relaxed) == 0, "round \(round), \(threads) threads")
            #expect(tally.successes.load(ordering: .relaxed) >= writers, "every writer replaced its keys")
            // Conservation: stable and replaced keys plus the even churn
            // keys of each writer, each with its last value.
            let expected = Int(churnBase) + writers * Int(churnPerWriter / 2)
            F.withRegisteredThread {
                F.withReadSection {
                    var wrong = 0
                    for k in 0..<(churnBase + UInt64(writers) * churnPerWriter) {
                        let v = table.lookup(k)
                        if k < stableCount {
                            if v != V.of(k, generation: 0) { wrong += 1 }
                        } else if k < churnBase {
                            if v?.belongs(to: k) != true || v == V.of(k, generation: 0) { wrong += 1 }
                        } else if v != (k % 2 == 0 ? V.of(k, generation: 0) : nil) {
                            wrong += 1
                        }
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
            let table = RCUHashTable<UInt64, UInt, Memb>(initialBucketCount: 64)
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
