// Reclamation for RCUBucketTable: one grace period per batch of removed
// slots.
//
// rte_hash with rte_rcu_qsbr takes a token per delete and polls the
// readers' counters without blocking. liburcu 0.13 (this package's) has no
// polled grace period (start_poll_synchronize_rcu arrived in 0.14), and
// call_rcu's worker sleeps 10 ms between batches, so a table reclaiming
// through call_rcu holds ten milliseconds of removes back (RCUHashTable's
// rcu-churn backlog: ~22,000 nodes). Here the writer itself waits for one
// grace period per full batch: the backlog never exceeds the batch, and the
// wait (one reader quiescent interval, microseconds) is paid once per
// `reclaimBatch` removes, never per update.
import Glibc
import Synchronization

extension RCUBucketTable {
    /// Waits for a grace period and moves every pending slot to the free
    /// stack. Writer lock held; outside explicit read sections (the
    /// flavour's synchronize traps inside one).
    @usableFromInline
    func _reclaimLocked() {
        let w = writer
        let n = w.pointee.pendingCount.load(ordering: .relaxed)
        guard n > 0 else { return }
        // Every read section that could have loaded an entry referring to a
        // pending slot began before the entry changed, so before this grace
        // period began: it has ended when synchronize returns, and its
        // reads of the slot happen before our rewrites of it (liburcu's
        // fences; TSan is told by the flavour's synchronize).
        Flavor.synchronize()
        let f = w.pointee.freeCount.load(ordering: .relaxed)
        for i in 0..<n {
            let slot = Int(w.pointee.pendingSlots[i])
            #if DEBUG
            // A lookup that wrongly kept a slot past its grace period sees
            // a key that never matches and a value that is nobody's.
            memset(slots + slot, 0xA5, MemoryLayout<Slot>.size)
            #endif
            w.pointee.free[f + i] = UInt32(truncatingIfNeeded: slot)
        }
        w.pointee.freeCount.store(f + n, ordering: .relaxed)
        w.pointee.pendingCount.store(0, ordering: .relaxed)
        w.pointee.gracePeriods.add(1, ordering: .relaxed)
    }
}
