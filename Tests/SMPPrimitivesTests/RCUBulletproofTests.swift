import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

/// Counters shared by a bp test's threads and tasks.
final class BulletproofTally: Sendable {
    let misses = Atomic<Int>(0)
    let lookups = Atomic<Int>(0)
    let waitsDone = Atomic<Int>(0)
    let jobs = Atomic<Int>(0)
}

/// Waits (under a deadline) for `Bulletproof.synchronize()` then
/// `Bulletproof.barrier()` on a thread of their own; false if they did not
/// both return within `seconds`. A thread that hangs is leaked rather than
/// joined, so the test fails instead of hanging.
private func bulletproofWaitsReturn(within seconds: Double) -> Bool {
    let tally = BulletproofTally()
    let waiter = PinnedThread(name: "bp-waits") {
        Bulletproof.synchronize()
        tally.waitsDone.store(1, ordering: .releasing)
        Bulletproof.barrier()
        tally.waitsDone.store(2, ordering: .releasing)
    }
    guard waitFor(seconds: seconds, { tally.waitsDone.load(ordering: .acquiring) == 2 }) else {
        _ = Unmanaged.passRetained(waiter)  // never joined: it is stuck
        return false
    }
    waiter.join()
    return true
}

/// The value the tests store for key `k` at generation `g`.
private func bpValue(_ k: UInt64, _ g: UInt64) -> UInt { UInt.of(k, generation: g) }

@Suite struct RCUBulletproofTests {
    /// The reason for bp: threads the program does not own come and go
    /// without telling RCU. Waves of plain pthreads each take bp read
    /// sections (their first read lock registers them with liburcu-bp)
    /// while this thread churns the table's keys (deferred frees), and
    /// exit without unregistering (a pool thread or a C library's thread
    /// would not). liburcu-bp's thread-exit destructor takes them out of
    /// the registry, so afterwards grace periods and barriers return at
    /// once (not blocked on, nor reading the records of, dead threads) and
    /// every node the writers removed is reclaimed.
    @Test func shortLivedThreadsExitWithoutUnregisteringAndGracePeriodsStillEnd() {
        let stable: UInt64 = 256, churn: UInt64 = 256
        let table = RCUHashTable<UInt64, UInt, Bulletproof>(initialBucketCount: 64)
        for k in 0..<(stable + churn) { #expect(table.insert(k, value: bpValue(k, 0))) }
        let tally = BulletproofTally()
        let waves = 8, perWave = 8
        var generation: UInt64 = 0
        for _ in 0..<waves {
            let readers = (0..<perWave).map { i in
                PinnedThread(name: "bp-short-\(i)") {
                    for _ in 0..<20 {
                        Bulletproof.withReadSection {
                            for k in 0..<stable where table.lookup(k) != bpValue(k, 0) {
                                tally.misses.add(1, ordering: .relaxed)
                            }
                            // A churn key may be absent; if found it is whole.
                            for k in stable..<(stable + churn) {
                                if let v = table.lookup(k), !v.belongs(to: k) { tally.misses.add(1, ordering: .relaxed) }
                            }
                        }
                        tally.lookups.add(Int(stable + churn), ordering: .relaxed)
                    }
                    // Exits here: no unregistration (bp has none to call).
                }
            }
            generation += 1
            for k in stable..<(stable + churn) {
                _ = table.remove(k)
                _ = table.insert(k, value: bpValue(k, generation))
            }
            _ = table.replace(0, value: bpValue(0, 0))  // same value, a new node
            for r in readers { r.join() }
        }
        #expect(tally.misses.load(ordering: .relaxed) == 0)
        #expect(tally.lookups.load(ordering: .relaxed) == waves * perWave * 20 * Int(stable + churn))
        // 64 threads registered with bp have exited without unregistering.
        #expect(bulletproofWaitsReturn(within: 10))
        let s = table.statistics
        #expect(s.count == Int(stable + churn))
        #expect(s.pendingReclaim == 0)
        #expect(s.liveNodes == Int(stable + churn))
        #expect(s.peakPendingReclaim >= 1)
    }

    /// The same from Swift concurrency's pool: many tasks take bp read
    /// sections (withReadSection: the body is synchronous), remove and
    /// re-insert keys and schedule grace-period jobs, with no registration
    /// anywhere; then grace periods, barriers and reclamation complete.
    @Test func swiftTasksUseBulletproofWithoutRegistering() async {
        let keys: UInt64 = 512
        let table = RCUHashTable<UInt64, UInt, Bulletproof>(initialBucketCount: 64)
        for k in 0..<keys { #expect(table.insert(k, value: bpValue(k, 0))) }
        let tally = BulletproofTally()
        let tasks = 64
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<tasks {
                group.addTask {
                    for round in 0..<10 {
                        Bulletproof.withReadSection {
                            for k in 0..<keys {
                                if let v = table.lookup(k), !v.belongs(to: k) { tally.misses.add(1, ordering: .relaxed) }
                            }
                        }
                        // Each task owns the keys ≡ t (mod tasks): remove and
                        // re-insert them (deferred frees from pool threads).
                        for k in stride(from: UInt64(t), to: keys, by: tasks) {
                            _ = table.remove(k)
                            _ = table.insert(k, value: bpValue(k, UInt64(round + 1)))
                        }
                        await Task.yield()  // outside any read section
                    }
                    Bulletproof.afterGracePeriod { tally.jobs.add(1, ordering: .relaxed) }
                }
            }
        }
        #expect(tally.misses.load(ordering: .relaxed) == 0)
        #expect(bulletproofWaitsReturn(within: 10))
        #expect(tally.jobs.load(ordering: .relaxed) == tasks)
        Bulletproof.withReadSection {
            for k in 0..<keys { #expect(table.lookup(k) == bpValue(k, 10)) }
        }
        let s = table.statistics
        #expect(s.count == Int(keys))
        #expect(s.pendingReclaim == 0)
        #expect(s.liveNodes == Int(keys))
    }

    /// RCUHashTable's whole contract under bp, from a thread that never
    /// registers: insert, lookup, growth, replace, remove, removeAll and
    /// reclamation after a barrier.
    @Test func hashTableContractUnderBulletproof() {
        let table = RCUHashTable<UInt64, UInt, Bulletproof>(initialBucketCount: 64)
        for k in UInt64(0)..<1000 { #expect(table.insert(k, value: bpValue(k, 0))) }
        #expect(!table.insert(7, value: 12345))
        #expect(table.count == 1000)
        #expect(table.statistics.resizes >= 1)
        Bulletproof.withReadSection {
            #expect(Bulletproof.isInReadSection)
            for k in UInt64(0)..<1000 { #expect(table.lookup(k) == bpValue(k, 0)) }
            #expect(table.lookup(1000) == nil)
        }
        for k in stride(from: UInt64(0), to: 1000, by: 3) { #expect(table.replace(k, value: bpValue(k, 1)) == bpValue(k, 0)) }
        for k in stride(from: UInt64(0), to: 1000, by: 2) { #expect(table.remove(k) != nil) }
        #expect(table.count == 500)
        Bulletproof.withReadSection {
            for k in UInt64(0)..<1000 {
                #expect(table.lookup(k) == (k % 2 == 0 ? nil : bpValue(k, k % 3 == 0 ? 1 : 0)))
            }
        }
        Bulletproof.barrier()
        var s = table.statistics
        #expect(s.pendingReclaim == 0)
        #expect(s.liveNodes == 500)
        table.removeAll()
        Bulletproof.barrier()
        s = table.statistics
        #expect(s.count == 0)
        #expect(s.liveNodes == 0)
        #expect(s.pendingReclaim == 0)
    }
}
