// rcu_bucket: the project's fixed-capacity bucketized RCU table under the
// rcu workloads.
import SMPPrimitives

/// `RCUBucketTable<BenchFlowKey, UInt, QSBR>` with room for every key plus
/// two reclamation batches; the writer removes and re-inserts, and waits
/// for one grace period per batch of removes.
final class RCUBucketBench: QSBRBenchTable, Sendable {
    static var implName: String { "rcu_bucket" }
    static var note: String {
        "RCUBucketTable<BenchFlowKey, UInt, QSBR>, 8-entry buckets, two choices, capacity keys + 2 x \(batch), "
            + "QSBR.quiescentState every 1024 lookups"
    }
    static var writerNote: String {
        "remove + insert under one writer lock, key slots from a free list; one QSBR.synchronize per \(batch) removes"
    }
    /// Removes per grace period.
    static let batch = 1024
    let table: RCUBucketTable<BenchFlowKey, UInt, QSBR>

    init(keys: UnsafeMutableBufferPointer<BenchFlowKey>) {
        table = RCUBucketTable(capacity: keys.count + 2 * Self.batch, reclaimBatch: Self.batch)
        for i in 0..<keys.count { precondition((try? table.insert(keys[i], value: rcuBenchValue(i))) == true) }
    }
    @inline(__always) func lookup(_ key: BenchFlowKey) -> UInt { table.lookup(key) ?? 0 }
    @inline(__always) func replace(_ i: Int, _ key: BenchFlowKey) -> Bool {
        let removed = table.remove(key)
        let inserted = (try? table.insert(key, value: rcuBenchValue(i))) ?? false
        return removed == rcuBenchValue(i) && inserted
    }
    var pendingReclaimPeak: Int { table.statistics.peakPendingReclaim }
    func verify(keys: UnsafeMutableBufferPointer<BenchFlowKey>) -> Int {
        var bad = QSBR.withRegisteredThread {
            QSBR.withReadSection { rcuBenchMismatches(keys) { table.lookup($0) } }
        }
        table.reclaim()
        let s = table.statistics
        if s.count != keys.count { bad += 1 }
        // Conservation of key slots: nothing pending after the reclaim, and
        // every slot is either a key's or free.
        if s.pendingReclaim != 0 || s.count + s.freeSlots != s.capacity { bad += 1 }
        return bad
    }
    func destroy() {}
}
