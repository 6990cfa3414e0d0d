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
                            let s = x % stable
                            if table.lookup(s) != V.of(s, generation: 0) { errors += 1 }
                            let rk = stable + (x >> 12) % replaced
                            if table.lookup(rk)?.belongs(to: rk) != true { errors += 1 }
                            let c = churnBase + (x >> 20) % (UInt64(writers) * churnPerWriter)
                            if let v = table.lookup(c), !v.belongs(to: c) { errors += 1 }
                        }
                    }
                    n += 32
                    if F.self == QSBR.self { QSBR.quiescentState() }
                    if n % 1024 == 0 { sched_yield() }
                }
                tally.readerErrors.add(errors, ordering: .relaxed)
                tally.lookups.add(n * 3, ordering: .relaxed)
                F.unregisterThread()
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
