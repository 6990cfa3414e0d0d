import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

@Suite struct RCUBucketTableStressTests {
    /// Readers look up stable keys (never changed), replaced keys (whose
    /// values a writer keeps replacing) and churn keys while two writers
    /// remove and re-insert churn keys in a table with few spare slots, so
    /// slots are recycled many times (a grace period per 16 removes).
    /// Stable keys must always be found with their own value, replaced keys
    /// always found with a whole value of their own, and a churn key, if
    /// found, must carry its own value (never a recycled slot's bits, never
    /// a torn record). At the end, slots are conserved: count + free +
    /// pending == capacity, and nothing is pending after a reclaim. Every
    /// wait has a deadline: readers stop after 60 s (and fail), so a writer
    /// waiting for a grace period always gets one.
    @Test(arguments: ["qsbr", "memb"], ["word", "record"])
    func readersAlwaysHitStableKeysDuringChurn(flavour: String, value: String) {
        switch (flavour, value) {
        case ("qsbr", "word"): churn(QSBR.self, UInt.self)
        case ("qsbr", _): churn(QSBR.self, RCUTestRecord.self)
        case (_, "word"): churn(Memb.self, UInt.self)
        default: churn(Memb.self, RCUTestRecord.self)
        }
    }

    /// Readers look up stable keys while a writer churns other keys in a
    /// table kept at about 85 % of its entries, where most inserts find
    /// both buckets full and move entries (stable keys' among them) to
    /// their other buckets. A stable key must be found, with its value, by
    /// every lookup: a lookup that scanned the key's buckets in the wrong
    /// order around a move would miss it if it did not re-check the move
    /// counter. Conservation at the end as in the churn test; the run must
    /// have made thousands of moves, or it proved nothing.
    @Test(arguments: ["qsbr", "memb"])
    func readersNeverMissKeysThatMove(flavour: String) {
        if flavour == "qsbr" { displacementChurn(QSBR.self) } else { displacementChurn(Memb.self) }
    }

    private func displacementChurn<F: RCUFlavor>(_: F.Type) {
        let buckets = 32
        let stable: UInt64 = 96
        let churnKeys: UInt64 = 122  // stable + churn = 218 of 256 entries
        let batch = 16
        let capacity = Int(stable + churnKeys) + batch + 4
        let table = RCUBucketTable<UInt64, UInt, F>(capacity: capacity, bucketCount: buckets, reclaimBatch: batch, seed: 0x5EED)
        F.withRegisteredThread {
            for k in 0..<(stable + churnKeys) { _ = try? table.insert(k, value: rcuTestValue(k)) }
        }
        let tally = RCUStressTally()
        tally.writersRunning.store(1, ordering: .relaxed)
        let readers = 2
        let barrier = SpinBarrier(parties: 1 + readers)
        var pool: [PinnedThread<Void>] = []
        pool.append(PinnedThread(cpu: 0, name: "cuckoo-w") {
            F.registerThread()
            barrier.wait()
            var errors = 0
            // Remove a churn key and insert a fresh one in its place, so
            // the load stays put while the keys change; the fresh key's
            // buckets are often both full, so the insert moves entries.
            var x: UInt64 = 0x2545_F491_4F6C_DD1D
            var next = stable + churnKeys
            var live = Array(stable..<(stable + churnKeys))
            for round in 0..<100_000 {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                let i = Int(x % UInt64(live.count))
                if table.remove(live[i]) != rcuTestValue(live[i]) { errors += 1 }
                // A fresh key, or (rarely) one whose buckets stay full:
                // then try the next; count only keys that never fit.
                var placed = false
                for _ in 0..<8 where !placed {
                    do throws(RCUBucketTableError) {
                        placed = try table.insert(next, value: rcuTestValue(next))
                        if placed { live[i] = next }
                    } catch {
                        if error != .bucketsFull { errors += 1 }
                    }
                    next += 1
                }
                if !placed { errors += 1 }
                if F.self == QSBR.self && round % 64 == 0 { QSBR.quiescentState() }
            }
            tally.writerErrors.add(errors, ordering: .relaxed)
            tally.writersRunning.subtract(1, ordering: .releasing)
            F.unregisterThread()
        })
        for r in 0..<readers {
            pool.append(PinnedThread(cpu: 1 - r % 2, name: "cuckoo-r\(r)") {
                stressReader(F.self, seed: r, tally: tally, barrier: barrier, lookupsPerStep: 1) { x in
                    let s = x % stable
                    return table.lookup(s) != rcuTestValue(s) ? 1 : 0
                }
            })
        }
        for t in pool { t.join() }
        #expect(tally.readerErrors.load(ordering: .relaxed) == 0)
        #expect(tally.writerErrors.load(ordering: .relaxed) == 0)
        let s = table.statistics
        #expect(s.count == Int(stable + churnKeys))
        #expect(s.count + s.freeSlots + s.pendingReclaim == capacity)
        #expect(s.displacementMoves > 10_000)
        F.withRegisteredThread {
            F.withReadSection {
                for k in 0..<stable { #expect(table.lookup(k) == rcuTestValue(k)) }
            }
        }
    }

    private func churn<F: RCUFlavor, V: RCUTestValue>(_: F.Type, _: V.Type) {
        let stable: UInt64 = 256
        let replaced: UInt64 = 64
        let churnBase = stable + replaced
        let churnPerWriter: UInt64 = 256
        let writers = 2
        let readers = 2
        let batch = 16
        // Every key can be present at once, plus one batch pending and a
        // few spare: the free stack runs dry and the writers reclaim often.
        let capacity = Int(churnBase) + writers * Int(churnPerWriter) + batch + 4
        let table = RCUBucketTable<UInt64, V, F>(capacity: capacity, reclaimBatch: batch)
        F.withRegisteredThread {
            for k in 0..<churnBase { _ = try? table.insert(k, value: V.of(k, generation: 0)) }
        }
        let tally = RCUStressTally()
        tally.writersRunning.store(writers, ordering: .relaxed)
        let barrier = SpinBarrier(parties: writers + readers)
        var pool: [PinnedThread<Void>] = []
        for w in 0..<writers {
            pool.append(PinnedThread(cpu: w, name: "bucket-w\(w)") {
                F.registerThread()
                barrier.wait()
                let base = churnBase + UInt64(w) * churnPerWriter
                var errors = 0
                var generation: UInt64 = 0
                for round in 0..<40 {
                    for k in base..<(base + churnPerWriter) where (try? table.insert(k, value: V.of(k, generation: 0))) != true {
                        errors += 1
                    }
                    if F.self == QSBR.self { QSBR.quiescentState() }
                    // Writer 0 replaces its share of the replaced keys.
                    for r in stride(from: stable + UInt64(w), to: churnBase, by: writers) {
                        let old = try? table.replace(r, value: V.of(r, generation: generation + 1))
                        if old != V.of(r, generation: generation) { errors += 1 }
                    }
                    generation += 1
                    for k in base..<(base + churnPerWriter) where round == 39 ? k % 2 == 1 : true {
                        if table.remove(k) != V.of(k, generation: 0) { errors += 1 }
                    }
                    if F.self == QSBR.self { QSBR.quiescentState() }
                }
                tally.writerErrors.add(errors, ordering: .relaxed)
                tally.writersRunning.subtract(1, ordering: .releasing)
                F.unregisterThread()
            })
        }
        for r in 0..<readers {
            pool.append(PinnedThread(cpu: r, name: "bucket-r\(r)") {
                stressReader(F.self, seed: r, tally: tally, barrier: barrier, lookupsPerStep: 3) { x in
                    var errors = 0
                    let s = x % stable
                    if table.lookup(s) != V.of(s, generation: 0) { errors += 1 }
                    let rk = stable + (x >> 12) % replaced
                    if table.lookup(rk)?.belongs(to: rk) != true { errors += 1 }
                    let c = churnBase + (x >> 20) % (UInt64(writers) * churnPerWriter)
                    if let v = table.lookup(c), !v.belongs(to: c) { errors += 1 }
                    return errors
                }
            })
        }
        for t in pool { t.join() }
        #expect(tally.readerErrors.load(ordering: .relaxed) == 0)
        #expect(tally.writerErrors.load(ordering: .relaxed) == 0)
        let s = table.statistics
        let expectedCount = Int(churnBase) + writers * Int(churnPerWriter) / 2
        #expect(s.count == expectedCount)
        #expect(s.count + s.freeSlots + s.pendingReclaim == capacity)
        #expect(s.peakPendingReclaim <= batch)
        #expect(s.gracePeriods > 100)
        #expect(s.bucketsFullFailures == 0)
        table.reclaim()
        let after = table.statistics
        #expect(after.pendingReclaim == 0 && after.count + after.freeSlots == capacity)
        F.withRegisteredThread {
            F.withReadSection {
                for k in 0..<stable { #expect(table.lookup(k) == V.of(k, generation: 0)) }
                for k in stable..<churnBase { #expect(table.lookup(k) == V.of(k, generation: 40)) }
                for w in 0..<UInt64(writers) {
                    let base = churnBase + w * churnPerWriter
                    for k in base..<(base + churnPerWriter) {
                        #expect(table.lookup(k) == (k % 2 == 0 ? V.of(k, generation: 0) : nil))
                    }
                }
            }
        }
    }
}

/// The body of a stress reader thread: registers with `F`, waits at
/// `barrier`, then, in read sections of 32 steps, calls `step` with a fresh
/// xorshift value (it returns the errors it found) until the writers have
/// stopped and it made at least 2,000 steps; reports a quiescent state
/// (QSBR) after each section and yields every 1,024 steps. A 60 s deadline
/// turns a stuck writer into a failure (a million errors) rather than a
/// hang, and lets a writer waiting for a grace period get one.
private func stressReader<F: RCUFlavor>(
    _: F.Type, seed r: Int, tally: RCUStressTally, barrier: SpinBarrier, lookupsPerStep: Int,
    step: (UInt64) -> Int
) {
    F.registerThread()
    barrier.wait()
    var errors = 0
    var n = 0
    var x = UInt64(r + 1) &* 0x9E37_79B9_7F4A_7C15
    let deadline = monotonicSeconds() + 60
    while n < 2_000 || tally.writersRunning.load(ordering: .acquiring) > 0 {
        if monotonicSeconds() > deadline {
            errors += 1_000_000
            break
        }
        F.withReadSection {
            for _ in 0..<32 {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                errors += step(x)
            }
        }
        n += 32
        if F.self == QSBR.self { QSBR.quiescentState() }
        if n % 1024 == 0 { sched_yield() }
    }
    tally.readerErrors.add(errors, ordering: .relaxed)
    tally.lookups.add(n * lookupsPerStep, ordering: .relaxed)
    F.unregisterThread()
}
