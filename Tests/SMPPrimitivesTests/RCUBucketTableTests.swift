import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

/// Flags shared by a slot-reuse test's threads.
private final class RCUBucketTestFlags: Sendable {
    let entered = Atomic<Bool>(false)
    let release = Atomic<Bool>(false)
    let inserted = Atomic<Bool>(false)
    let readerSawIntactSlot = Atomic<Bool>(false)
    let readerTimedOut = Atomic<Bool>(false)
}

@Suite struct RCUBucketTableTests {
    @Test func insertLookupReplaceRemove() throws {
        let table = RCUBucketTable<UInt64, UInt, Memb>(capacity: 1000)
        try Memb.withRegisteredThread { () throws -> Void in
            for k in UInt64(0)..<500 { #expect(try table.insert(k, value: rcuTestValue(k))) }
            // A present key is not inserted again, and keeps its value.
            #expect(try table.insert(7, value: 1) == false)
            #expect(table.count == 500)
            Memb.withReadSection {
                for k in UInt64(0)..<500 { #expect(table.lookup(k) == rcuTestValue(k)) }
                #expect(table.lookup(500) == nil)
            }
            #expect(try table.replace(3, value: 33) == rcuTestValue(3))
            #expect(try table.replace(600, value: 1) == nil)
            #expect(table.remove(4) == rcuTestValue(4))
            #expect(table.remove(4) == nil)
            Memb.withReadSection {
                #expect(table.lookup(3) == 33)
                #expect(table.lookup(4) == nil)
                #expect(table.lookup(5) == rcuTestValue(5))
            }
            let s = table.statistics
            #expect(s.count == 499)
            #expect(s.pendingReclaim == 2)  // the removed slot and the replaced one
            #expect(s.count + s.freeSlots + s.pendingReclaim == s.capacity)
            table.reclaim()
            #expect(table.statistics.pendingReclaim == 0)
            #expect(table.statistics.freeSlots == 1000 - 499)
            #expect(table.statistics.gracePeriods == 1)
        }
    }

    /// With every slot in use, inserts and replaces throw `.full` and
    /// change nothing; a removed slot serves the next insert once its grace
    /// period is over (the insert waits for it).
    @Test func fullTableRefusesThenReusesAfterGracePeriod() throws {
        let table = RCUBucketTable<UInt64, UInt, Memb>(capacity: 4, reclaimBatch: 4)
        try Memb.withRegisteredThread { () throws -> Void in
            for k in UInt64(0)..<4 { #expect(try table.insert(k, value: rcuTestValue(k))) }
            #expect(throws: RCUBucketTableError.full) { try table.insert(9, value: 9) }
            #expect(throws: RCUBucketTableError.full) { try table.replace(1, value: 9) }
            #expect(table.count == 4)
            Memb.withReadSection { #expect(table.lookup(1) == rcuTestValue(1)) }
            #expect(table.remove(0) == rcuTestValue(0))
            #expect(table.statistics.freeSlots == 0)
            #expect(try table.insert(9, value: 99))
            let s = table.statistics
            #expect(s.gracePeriods == 1)
            #expect(s.count == 4 && s.freeSlots == 0 && s.pendingReclaim == 0)
            Memb.withReadSection { #expect(table.lookup(9) == 99) }
        }
    }

    /// A key whose two buckets are full, with no room anywhere to move an
    /// entry to, is refused (`.bucketsFull`) although slots are free. Two
    /// buckets: every key's candidates are buckets 0 and 1, 16 entries in
    /// all, so displacement has nowhere to go.
    @Test func bothBucketsFull() throws {
        let table = RCUBucketTable<UInt64, UInt, Memb>(capacity: 64, bucketCount: 2, reclaimBatch: 8, seed: 42)
        #expect(table.bucketCount == 2)
        try Memb.withRegisteredThread { () throws -> Void in
            for k in UInt64(0)..<16 { #expect(try table.insert(k, value: rcuTestValue(k))) }
            #expect(throws: RCUBucketTableError.bucketsFull) { try table.insert(16, value: 1) }
            let s = table.statistics
            #expect(s.count == 16 && s.freeSlots == 48 && s.bucketsFullFailures == 1)
            Memb.withReadSection {
                for k in UInt64(0)..<16 { #expect(table.lookup(k) == rcuTestValue(k)) }
                #expect(table.lookup(16) == nil)
            }
            // A removed key's entry takes the next key.
            #expect(table.remove(5) == rcuTestValue(5))
            #expect(try table.insert(16, value: 16))
            Memb.withReadSection { #expect(table.lookup(16) == 16) }
        }
    }

    /// Cuckoo displacement fills a table to 85 % of its entries (first-fit
    /// into two buckets alone refuses inserts from about 45 % on): every
    /// insert succeeds, some by moving other keys, every key is found with
    /// its value, and removing them all leaves the table empty and every
    /// slot free.
    @Test func displacementFillsTheTable() throws {
        let buckets = 64
        let keys = UInt64(buckets * 8 * 85 / 100)
        let table = RCUBucketTable<UInt64, UInt, Memb>(capacity: Int(keys), bucketCount: buckets, reclaimBatch: 16, seed: 7)
        try Memb.withRegisteredThread { () throws -> Void in
            for k in 0..<keys { #expect(try table.insert(k, value: rcuTestValue(k))) }
            let s = table.statistics
            #expect(s.count == Int(keys) && s.bucketsFullFailures == 0)
            #expect(s.displacedInserts > 10)
            #expect(s.displacementMoves >= s.displacedInserts && s.displacementMoves <= 2 * s.displacedInserts)
            Memb.withReadSection {
                for k in 0..<keys { #expect(table.lookup(k) == rcuTestValue(k)) }
                #expect(table.lookup(keys) == nil)
            }
            for k in 0..<keys { #expect(table.remove(k) == rcuTestValue(k)) }
            table.reclaim()
            let after = table.statistics
            #expect(after.count == 0 && after.freeSlots == Int(keys) && after.pendingReclaim == 0)
            Memb.withReadSection {
                for k in 0..<keys { #expect(table.lookup(k) == nil) }
            }
        }
    }

    /// A removed key's slot is not reused while a reader that may have
    /// loaded it is inside its read section: the insert that needs the slot
    /// waits for the grace period, and the reader still reads the removed
    /// key's bits meanwhile.
    @Test func slotReuseWaitsForReaders() throws {
        let table = RCUBucketTable<UInt64, UInt, Memb>(capacity: 2, reclaimBatch: 2)
        try Memb.withRegisteredThread { () throws -> Void in
            #expect(try table.insert(1, value: 11))
            #expect(try table.insert(2, value: 22))
        }
        let slot = try #require(table.slotIndex(of: 1))
        let flags = RCUBucketTestFlags()
        let reader = PinnedThread(cpu: 0, name: "bucket-reader") {
            Memb.registerThread()
            Memb.readLock()
            let found = table.lookup(1) == 11
            flags.entered.store(true, ordering: .releasing)
            if !waitFor(seconds: 20, { flags.release.load(ordering: .acquiring) }) {
                flags.readerTimedOut.store(true, ordering: .relaxed)
            }
            // Still inside the section that found key 1: its slot is intact.
            let bits = table.slotContents(slot)
            flags.readerSawIntactSlot.store(found && bits.key == 1 && bits.value == 11, ordering: .relaxed)
            Memb.readUnlock()
            Memb.unregisterThread()
        }
        #expect(waitFor { flags.entered.load(ordering: .acquiring) })
        #expect(table.remove(1) == 11)
        // The only free slot is the pending one: this insert must wait.
        let inserter = PinnedThread(cpu: 1, name: "bucket-inserter") {
            let ok = (try? table.insert(3, value: 33)) == true
            flags.inserted.store(ok, ordering: .releasing)
        }
        usleep(50_000)
        #expect(flags.inserted.load(ordering: .acquiring) == false)
        #expect(table.statistics.pendingReclaim == 1)
        flags.release.store(true, ordering: .releasing)
        #expect(waitFor { flags.inserted.load(ordering: .acquiring) })
        reader.join()
        inserter.join()
        #expect(flags.readerSawIntactSlot.load(ordering: .relaxed) == true)
        #expect(flags.readerTimedOut.load(ordering: .relaxed) == false)
        #expect(table.slotIndex(of: 3) == slot)  // recycled, after the grace period
        Memb.withRegisteredThread {
            Memb.withReadSection {
                #expect(table.lookup(3) == 33)
                #expect(table.lookup(1) == nil)
                #expect(table.lookup(2) == 22)
            }
        }
        #expect(table.statistics.gracePeriods == 1)
    }

    @Test func tablesDrawDifferentSeeds() {
        let a = RCUBucketTable<UInt64, UInt, Memb>(capacity: 8)
        let b = RCUBucketTable<UInt64, UInt, Memb>(capacity: 8)
        #expect(a.seed != b.seed)
    }
}
