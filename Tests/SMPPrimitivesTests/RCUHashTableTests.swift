import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

/// The value the tests store for a key: never equal to another key's value.
func rcuTestValue(_ k: UInt64) -> UInt { UInt(truncatingIfNeeded: k &* 2654435761 &+ 1) }

@Suite struct RCUHashTableTests {
    @Test func insertLookupRemoveAndDuplicates() {
        let table = RCUHashTable<UInt64, Memb>(initialBucketCount: 256)
        Memb.withRegisteredThread {
            for k in UInt64(0)..<1000 { #expect(table.insert(k, value: rcuTestValue(k))) }
            #expect(table.count == 1000)
            // A duplicate insert fails and leaves the old value.
            #expect(!table.insert(7, value: 12345))
            #expect(table.count == 1000)
            Memb.withReadSection {
                for k in UInt64(0)..<1000 { #expect(table.lookup(k) == rcuTestValue(k)) }
                #expect(table.lookup(1000) == nil)
                #expect(table.lookup(UInt64.max) == nil)
            }
            for k in stride(from: UInt64(0), to: 1000, by: 2) { #expect(table.remove(k) == rcuTestValue(k)) }
            #expect(table.remove(0) == nil)
            #expect(table.remove(5000) == nil)
            #expect(table.count == 500)
            Memb.withReadSection {
                for k in UInt64(0)..<1000 {
                    #expect(table.lookup(k) == (k % 2 == 0 ? nil : rcuTestValue(k)))
                }
            }
            // Re-insert after remove works.
            #expect(table.insert(0, value: 99))
            Memb.withReadSection { #expect(table.lookup(0) == 99) }
            Memb.barrier()
            var s = table.statistics
            #expect(s.count == 501)
            #expect(s.pendingReclaim == 0)
            #expect(s.peakPendingReclaim >= 1)
            #expect(s.liveNodes == 501)
            table.removeAll()
            #expect(table.count == 0)
            Memb.withReadSection { #expect(table.lookup(1) == nil) }
            Memb.barrier()
            s = table.statistics
            #expect(s.liveNodes == 0)
            #expect(s.pendingReclaim == 0)
        }
    }

    @Test func growthKeepsAllKeys() {
        let table = RCUHashTable<UInt64, Memb>(initialBucketCount: 1)
        #expect(table.bucketCount == 64)
        Memb.withRegisteredThread {
            let n: UInt64 = 20_000
            for k in 0..<n { table.insert(k &* 0x9E37_79B9_7F4A_7C15, value: rcuTestValue(k)) }
            let s = table.statistics
            #expect(s.count == Int(n))
            #expect(s.bucketCount >= Int(n))
            #expect(s.resizes >= 8)
            Memb.withReadSection {
                var misses = 0
                for k in 0..<n where table.lookup(k &* 0x9E37_79B9_7F4A_7C15) != rcuTestValue(k) { misses += 1 }
                #expect(misses == 0)
            }
            Memb.barrier()
            // Every replaced array's node copies were reclaimed.
            #expect(table.statistics.liveNodes == Int(n))
            #expect(table.statistics.pendingReclaim == 0)
        }
    }

    @Test func tablesUseDifferentSeeds() {
        let a = RCUHashTable<UInt64, Memb>()
        let b = RCUHashTable<UInt64, Memb>()
        #expect(a.seed != b.seed)
        #expect(UInt64(1).rcuHash(seed: a.seed) != UInt64(1).rcuHash(seed: b.seed))
    }

    @Test func hashSpreadsSequentialKeys() {
        // Sequential keys must not pile into a few buckets.
        let buckets = 1024
        var load = [Int](repeating: 0, count: buckets)
        let seed: UInt64 = 0x1234_5678
        for k in UInt64(0)..<UInt64(buckets * 4) {
            load[Int(truncatingIfNeeded: k.rcuHash(seed: seed)) & (buckets - 1)] += 1
        }
        #expect(load.max()! <= 16)
    }

    /// Removed nodes wait for readers: pending reclaim is visible while a
    /// reader sits in a read section, and drains after it leaves.
    @Test func removedNodesWaitForReaders() {
        let table = RCUHashTable<UInt64, QSBR>(initialBucketCount: 1024)
        let flags = RCUTestFlags()
        let box = RCUTestBox()
        let reader = PinnedThread(cpu: 0, name: "rcu-reader") {
            QSBR.registerThread()
            flags.entered.store(true, ordering: .releasing)
            while !box.release.load(ordering: .acquiring) { usleep(1000) }
            QSBR.unregisterThread()
        }
        let writer = PinnedThread(cpu: 1, name: "rcu-writer") {
            QSBR.registerThread()
            for k in UInt64(0)..<100 { table.insert(k, value: rcuTestValue(k)) }
            while !flags.entered.load(ordering: .acquiring) { sched_yield() }
            for k in UInt64(0)..<100 { _ = table.remove(k) }
            QSBR.threadOffline()
            usleep(20_000)
            box.countWhileReading.store(table.statistics.pendingReclaim, ordering: .relaxed)
            box.release.store(true, ordering: .releasing)
            QSBR.threadOnline()
            QSBR.barrier()
            box.countAfterBarrier.store(table.statistics.pendingReclaim, ordering: .relaxed)
            QSBR.unregisterThread()
        }
        reader.join()
        writer.join()
        #expect(box.countWhileReading.load(ordering: .relaxed) == 100)
        #expect(box.countAfterBarrier.load(ordering: .relaxed) == 0)
        #expect(table.statistics.peakPendingReclaim >= 100)
        #expect(table.statistics.liveNodes == 0)
    }

    #if DEBUG
    @Test func lookupOutsideReadSectionTraps() async {
        await #expect(processExitsWith: .failure) {
            let table = RCUHashTable<UInt64, Memb>()
            Memb.registerThread()
            _ = table.lookup(1)
        }
    }
    #endif
}
