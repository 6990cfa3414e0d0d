// rcu_hash: the project's RCU hash table under the rcu workloads.
import SMPPrimitives

/// `RCUHashTable<BenchFlowKey, UInt, QSBR>` with one bucket per key; the
/// writer removes and re-inserts through the table's own call_rcu
/// reclamation.
final class RCUHashBench: QSBRBenchTable, Sendable {
    static var implName: String { "rcu_hash" }
    static var note: String {
        "RCUHashTable<BenchFlowKey, UInt, QSBR>, one bucket per key, QSBR.quiescentState every 1024 lookups"
    }
    static var writerNote: String {
        "remove + insert, call_rcu reclamation (worker pinned to CPU 1, nodes recycled), QSBR.barrier at end"
    }
    let table: RCUHashTable<BenchFlowKey, UInt, QSBR>

    init(keys: UnsafeMutableBufferPointer<BenchFlowKey>) {
        table = RCUHashTable(initialBucketCount: keys.count)
        for i in 0..<keys.count { precondition(table.insert(keys[i], value: rcuBenchValue(i))) }
    }
    @inline(__always) func lookup(_ key: BenchFlowKey) -> UInt { table.lookup(key) ?? 0 }
    @inline(__always) func replace(_ i: Int, _ key: BenchFlowKey) -> Bool {
        let removed = table.remove(key)
        let inserted = table.insert(key, value: rcuBenchValue(i))
        QSBR.quiescentState()  // the writer is a QSBR reader too
        return removed == rcuBenchValue(i) && inserted
    }
    var pendingReclaimPeak: Int { table.statistics.peakPendingReclaim }
    func verify(keys: UnsafeMutableBufferPointer<BenchFlowKey>) -> Int {
        var bad = QSBR.withRegisteredThread {
            QSBR.withReadSection { rcuBenchMismatches(keys) { table.lookup($0) } }
        }
        let s = table.statistics
        if s.count != keys.count { bad += 1 }
        // Every removed node was reclaimed: only the table's nodes remain.
        if s.pendingReclaim != 0 || s.liveNodes != keys.count { bad += 1 }
        return bad
    }
    func destroy() {}
}
