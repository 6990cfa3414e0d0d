// urcu_lfht: liburcu's lock-free resizable hash table (cds_lfht, QSBR
// flavour) under the rcu workloads, with call_rcu reclamation.
import CURCU
import SMPPrimitives
import Synchronization

/// liburcu's cds_lfht node for the benchmark: the lfht node at offset 0 (so
/// the match function can cast), the rcu_head for call_rcu, key, value, and
/// the owning table's pending-reclaim counter (64 bytes in all).
private struct LFHTNode {
    var node = cds_lfht_node()
    var rcuHead = rcu_head()
    var key: BenchFlowKey
    var value: UInt
    var pending: UnsafePointer<Atomic<Int>>
}

private let lfhtFreeNode: RCUCallback = { head in
    QSBR.gracePeriodDidEnd()
    let raw = UnsafeMutableRawPointer(head!) - MemoryLayout<LFHTNode>.offset(of: \LFHTNode.rcuHead)!
    let pending = raw.assumingMemoryBound(to: LFHTNode.self).pointee.pending
    raw.assumingMemoryBound(to: LFHTNode.self).deinitialize(count: 1)
    raw.deallocate()
    pending.pointee.subtract(1, ordering: .relaxed)
}

private let lfhtMatch: @convention(c) (UnsafeMutablePointer<cds_lfht_node>?, UnsafeRawPointer?) -> Int32 = { node, key in
    // The node was published through liburcu (uninstrumented): tell TSan.
    curcu_tsan_acquire_object(node)
    let n = UnsafeMutableRawPointer(node!).assumingMemoryBound(to: LFHTNode.self)
    return n.pointee.key == key!.assumingMemoryBound(to: BenchFlowKey.self).pointee ? 1 : 0
}

/// The hash seed for cds_lfht (fixed; it has no per-table seed of its own).
private let lfhtSeed: UInt64 = 0x9e37_79b9

final class LFHTBench: QSBRBenchTable, @unchecked Sendable {
    // @unchecked Sendable: cds_lfht is a concurrent table (its own
    // synchronization); `peak` is touched only by the writer thread (and
    // read after it is joined).
    static var implName: String { "urcu_lfht" }
    static var note: String {
        "liburcu cds_lfht QSBR (cds_lfht_new_flavor), one bucket per key, no auto-resize, quiescent state every 1024 "
            + "lookups"
    }
    static var writerNote: String {
        "cds_lfht_lookup + cds_lfht_del + call_rcu free (worker pinned to CPU 1) + cds_lfht_add_unique, barrier at end"
    }
    nonisolated(unsafe) let ht: OpaquePointer
    /// Removed nodes awaiting call_rcu (writer + call_rcu worker). Freed by
    /// `destroy()`, after the writer's barrier.
    let pending: UnsafeMutablePointer<Atomic<Int>>
    nonisolated(unsafe) var peak = 0

    init(keys: UnsafeMutableBufferPointer<BenchFlowKey>) {
        let n = UInt(keys.count)
        guard let ht = cds_lfht_new_flavor(n, n, n, 0, curcu_qsbr_flavor(), nil) else {
            fatalError("cds_lfht_new_flavor failed")
        }
        self.ht = ht
        pending = .allocate(capacity: 1)
        pending.initialize(to: Atomic(0))
        QSBR.withRegisteredThread {
            for i in 0..<keys.count { precondition(add(i, keys[i])) }
        }
    }

    private func add(_ i: Int, _ key: BenchFlowKey) -> Bool {
        let n = UnsafeMutablePointer<LFHTNode>.allocate(capacity: 1)
        n.initialize(to: LFHTNode(key: key, value: rcuBenchValue(i), pending: pending))
        curcu_tsan_release_object(n)
        let node = UnsafeMutableRawPointer(n).assumingMemoryBound(to: cds_lfht_node.self)
        var k = key
        let r = QSBR.withReadSection {
            cds_lfht_add_unique(ht, UInt(truncatingIfNeeded: key.rcuHash(seed: lfhtSeed)), lfhtMatch, &k, node)
        }
        if r != node {
            n.deallocate()
            return false
        }
        return true
    }

    @inline(__always) private func find(_ key: BenchFlowKey) -> UnsafeMutablePointer<LFHTNode>? {
        var it = cds_lfht_iter()
        var k = key
        cds_lfht_lookup(ht, UInt(truncatingIfNeeded: key.rcuHash(seed: lfhtSeed)), lfhtMatch, &k, &it)
        guard let node = cds_lfht_iter_get_node(&it) else { return nil }
        return UnsafeMutableRawPointer(node).assumingMemoryBound(to: LFHTNode.self)
    }

    @inline(__always) func lookup(_ key: BenchFlowKey) -> UInt { find(key)?.pointee.value ?? 0 }
    func replace(_ i: Int, _ key: BenchFlowKey) -> Bool {
        var ok = true
        QSBR.withReadSection {
            guard let n = find(key), n.pointee.value == rcuBenchValue(i),
                  cds_lfht_del(ht, UnsafeMutableRawPointer(n).assumingMemoryBound(to: cds_lfht_node.self)) == 0
            else { ok = false; return }
            let p = pending.pointee.add(1, ordering: .relaxed).newValue
            if p > peak { peak = p }
            let head = UnsafeMutableRawPointer(n) + MemoryLayout<LFHTNode>.offset(of: \LFHTNode.rcuHead)!
            QSBR.deferFree(head.assumingMemoryBound(to: rcu_head.self), lfhtFreeNode)
        }
        if !add(i, key) { ok = false }
        QSBR.quiescentState()
        return ok
    }
    var pendingReclaimPeak: Int { peak }
    func verify(keys: UnsafeMutableBufferPointer<BenchFlowKey>) -> Int {
        QSBR.withRegisteredThread {
            var bad = QSBR.withReadSection { rcuBenchMismatches(keys) { lookup($0) } }
            var before = 0, after = 0
            var count: UInt = 0
            QSBR.withReadSection { cds_lfht_count_nodes(ht, &before, &count, &after) }
            if count != UInt(keys.count) { bad += 1 }
            if pending.pointee.load(ordering: .relaxed) != 0 { bad += 1 }
            return bad
        }
    }
    func destroy() {
        // No reader or writer is left: unlink and free at once.
        QSBR.withRegisteredThread {
            var it = cds_lfht_iter()
            QSBR.withReadSection {
                cds_lfht_first(ht, &it)
                while let node = cds_lfht_iter_get_node(&it) {
                    cds_lfht_next(ht, &it)
                    if cds_lfht_del(ht, node) == 0 {
                        let n = UnsafeMutableRawPointer(node).assumingMemoryBound(to: LFHTNode.self)
                        n.deinitialize(count: 1)
                        n.deallocate()
                    }
                }
            }
        }
        _ = cds_lfht_destroy(ht, nil)
        pending.deinitialize(count: 1)
        pending.deallocate()
    }
}
