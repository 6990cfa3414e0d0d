import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

/// The value the tests store for a key: never equal to another key's value.
func rcuTestValue(_ k: UInt64) -> UInt { UInt(truncatingIfNeeded: k &* 2654435761 &+ 1) }

/// A value type for the table tests: the value of key `k` at a generation
/// (bumped by each replace). Generation 0 is the plain value.
protocol RCUTestValue: BitwiseCopyable, Equatable, Sendable {
    static func of(_ k: UInt64, generation: UInt64) -> Self
    /// Whether this is the value of `k` at some generation (whole: a torn
    /// or foreign value is not).
    func belongs(to k: UInt64) -> Bool
}

extension UInt: RCUTestValue {
    /// `rcuTestValue(k)` with the generation in the top byte (keys stay
    /// below 2^24, so the value's top byte is otherwise zero).
    static func of(_ k: UInt64, generation: UInt64) -> UInt { rcuTestValue(k) ^ UInt(truncatingIfNeeded: generation) << 56 }
    func belongs(to k: UInt64) -> Bool { self & 0x00FF_FFFF_FFFF_FFFF == rcuTestValue(k) & 0x00FF_FFFF_FFFF_FFFF }
}

/// A 24-byte value: the key, a generation and a check word mixing both, so
/// a reader that saw half of one value and half of another would notice.
struct RCUTestRecord: RCUTestValue {
    var key: UInt64
    var generation: UInt64
    var check: UInt64

    static func of(_ k: UInt64, generation: UInt64) -> RCUTestRecord {
        RCUTestRecord(key: k, generation: generation, check: rcuHashMix(k, generation, seed: 0x7e57))
    }
    func belongs(to k: UInt64) -> Bool { key == k && check == rcuHashMix(k, generation, seed: 0x7e57) }
}

/// A 16-byte key, the size the node layout is tuned for.
struct RCUTestKey16: RCUHashKey {
    var a: UInt64
    var b: UInt64
    func rcuHash(seed: UInt64) -> UInt64 { rcuHashMix(a, b, seed: seed) }
}

/// Whether AddressSanitizer's runtime is in this process (as
/// `runningUnderTSan` detects ThreadSanitizer's).
let runningUnderASan: Bool = dlsym(nil, "__asan_init") != nil

/// Inserts one key into a fresh table, keeps a raw pointer to its node's
/// value (the mistake under test: a pointer that outlives the read
/// section), removes the key, waits for the grace period and the
/// reclamation callback (`Memb.barrier()`), and calls `body` with the stale
/// pointer while the table is still alive (so only the reclamation, not
/// the table's deinit, has had the node).
func withStaleValuePointer(_ body: (UnsafeRawPointer) -> Void) {
    let table = RCUHashTable<UInt64, UInt, Memb>(initialBucketCount: 64)
    Memb.withRegisteredThread {
        #expect(table.insert(7, value: 0x7777))
        let value = Memb.withReadSection {
            // The only key: its node heads its bucket.
            let h = UInt64(7).rcuHash(seed: table.seed)
            let node = _RCUBucketArray.bucket(table.current.load(ordering: .acquiring), h).pointee
                .load(ordering: .acquiring)!
            return UnsafeRawPointer(node + _RCUNodeLayout<UInt64, UInt>.valueOffset)
        }
        #expect(value.load(as: UInt.self) == 0x7777)
        #expect(table.remove(7) == 0x7777)
        Memb.barrier()
        #expect(table.statistics.liveNodes == 0 && table.statistics.pendingReclaim == 0)
        body(value)
    }
    withExtendedLifetime(table) {}
}

@Suite struct RCUHashTableTests {
    @Test func insertLookupRemoveAndDuplicates() {
        let table = RCUHashTable<UInt64, UInt, Memb>(initialBucketCount: 256)
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

    /// The same contract with a 24-byte struct value: insert, lookup,
    /// replace (the whole new value, the key kept), remove, reclamation.
    @Test func structValuesInsertLookupReplaceRemove() {
        #expect(MemoryLayout<RCUTestRecord>.size == 24)
        let v = RCUTestRecord.of
        // From 64 buckets: 1000 keys also exercise growth with struct values.
        let table = RCUHashTable<UInt64, RCUTestRecord, Memb>(initialBucketCount: 64)
        Memb.withRegisteredThread {
            for k in UInt64(0)..<1000 { #expect(table.insert(k, value: v(k, 0))) }
            #expect(!table.insert(7, value: v(7, 9)))
            #expect(table.count == 1000)
            #expect(table.statistics.resizes >= 1)
            Memb.withReadSection {
                for k in UInt64(0)..<1000 { #expect(table.lookup(k) == v(k, 0)) }
                #expect(table.lookup(1000) == nil)
            }
            // Replace returns the old value and changes only the value.
            for k in stride(from: UInt64(0), to: 1000, by: 3) { #expect(table.replace(k, value: v(k, 1)) == v(k, 0)) }
            #expect(table.replace(5000, value: v(5000, 1)) == nil)
            #expect(table.count == 1000)
            Memb.withReadSection {
                #expect(table.lookup(5000) == nil)
                for k in UInt64(0)..<1000 { #expect(table.lookup(k) == v(k, k % 3 == 0 ? 1 : 0)) }
            }
            for k in stride(from: UInt64(0), to: 1000, by: 2) { #expect(table.remove(k) == v(k, k % 3 == 0 ? 1 : 0)) }
            // A removed key cannot be replaced.
            #expect(table.replace(0, value: v(0, 2)) == nil)
            #expect(table.count == 500)
            Memb.withReadSection {
                for k in UInt64(0)..<1000 { #expect(table.lookup(k) == (k % 2 == 0 ? nil : v(k, k % 3 == 0 ? 1 : 0))) }
            }
            Memb.barrier()
            var s = table.statistics
            #expect(s.pendingReclaim == 0)
            #expect(s.liveNodes == 500)
            table.removeAll()
            Memb.barrier()
            s = table.statistics
            #expect(s.count == 0)
            #expect(s.liveNodes == 0)
        }
    }

    /// Key first, then value: a 16-byte key and a word value fill one
    /// 64-byte node; a larger value only extends it.
    @Test func nodeLayoutPutsKeyThenValueAfterTheHeader() {
        typealias Word = _RCUNodeLayout<RCUTestKey16, UInt>
        #expect(Word.keyOffset == 40)
        #expect(Word.valueOffset == 56)
        #expect(Word.size == 64)
        typealias Record = _RCUNodeLayout<UInt64, RCUTestRecord>
        #expect(Record.keyOffset == 40)
        #expect(Record.valueOffset == 48)
        #expect(Record.size == 72)
        #expect(_RCUNodeLayout<UInt32, UInt8>.size == 45)
        #expect(Record.alignment == 64)
    }

    @Test func growthKeepsAllKeys() {
        let table = RCUHashTable<UInt64, UInt, Memb>(initialBucketCount: 1)
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
        let a = RCUHashTable<UInt64, UInt, Memb>()
        let b = RCUHashTable<UInt64, UInt, Memb>()
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

    /// Removed and replaced nodes wait for readers: pending reclaim is
    /// visible while a reader sits in a read section, and drains after it
    /// leaves.
    @Test(arguments: ["remove", "replace"])
    func unlinkedNodesWaitForReaders(update: String) {
        let table = RCUHashTable<UInt64, UInt, QSBR>(initialBucketCount: 1024)
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
            for k in UInt64(0)..<100 {
                if update == "remove" {
                    _ = table.remove(k)
                } else {
                    _ = table.replace(k, value: UInt.of(k, generation: 1))
                }
            }
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
        #expect(table.statistics.liveNodes == (update == "remove" ? 0 : 100))
        if update == "replace" {
            QSBR.withRegisteredThread {
                QSBR.withReadSection {
                    for k in UInt64(0)..<100 { #expect(table.lookup(k) == UInt.of(k, generation: 1)) }
                }
            }
        }
    }

    /// Under AddressSanitizer, a read through a pointer into a node after
    /// the node's grace period is a reported heap-use-after-free: the table
    /// frees reclaimed nodes there instead of recycling them.
    @Test(.enabled(if: runningUnderASan, "needs AddressSanitizer (swift test --sanitize=address)"))
    func useAfterGracePeriodIsCaughtByASan() async throws {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            withStaleValuePointer { stale in
                // ASan stops the process here, in this load. Through
                // `pointee`, whose load is this module's (instrumented)
                // code: `UnsafeRawPointer.load(as:)` at -Onone runs the
                // standard library's uninstrumented copy, which ASan
                // cannot see.
                let v = stale.assumingMemoryBound(to: UInt.self).pointee
                print("read \(v) through a pointer into a reclaimed node unnoticed")
            }
        }
        let report = String(decoding: try #require(result).standardErrorContent, as: UTF8.self)
        #expect(report.contains("AddressSanitizer: heap-use-after-free"), "child's stderr: \(report.prefix(2000))")
    }

    #if DEBUG
    /// Without ASan (debug builds, not under TSan, which cannot see
    /// liburcu's barrier order the poisoning before our read), the node
    /// is recycled and poisoned: a stale read sees the poison, not the value.
    @Test(.enabled(if: !runningUnderASan && !runningUnderTSan))
    func useAfterGracePeriodReadsPoisonWithoutASan() {
        withStaleValuePointer { stale in
            #expect(stale.load(as: UInt.self) == UInt(truncatingIfNeeded: 0xA5A5_A5A5_A5A5_A5A5 as UInt64))
        }
    }

    @Test func lookupOutsideReadSectionTraps() async {
        await #expect(processExitsWith: .failure) {
            let table = RCUHashTable<UInt64, UInt, Memb>()
            Memb.registerThread()
            _ = table.lookup(1)
        }
    }
    #endif
}
