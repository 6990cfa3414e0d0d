// Reclamation for RCUHashTable: the call_rcu callbacks (one node, one
// replaced bucket array), node recycling, and the counters block's last
// reference. Callbacks are C functions, so nothing here is generic: a
// node's size comes from the counters block.
import CSMPLinux
import CURCU
import Synchronization

/// Recycles one node after a grace period (call_rcu callback, any flavour).
@usableFromInline
let rcuFreeNodeCallback: RCUCallback = { head in
    // The grace period ordered every reader's accesses before this point;
    // tell TSan (for whichever flavour queued us).
    QSBR.gracePeriodDidEnd()
    Memb.gracePeriodDidEnd()
    Bulletproof.gracePeriodDidEnd()
    let node = UnsafeMutableRawPointer(head!)
    let shared = rcuNodeHeader(node).pointee.shared
    rcuPoisonNode(node, size: shared.pointee.nodeSize)
    if smp_asan_active() != 0 {
        // Under AddressSanitizer, free for real: a recycled node is live
        // memory to ASan, so a reader that kept a pointer into it past the
        // grace period would go unseen; a freed one sits in ASan's
        // quarantine and such a read is a heap-use-after-free. (Inserts
        // then always find the free lists empty and malloc.)
        node.deallocate()
    } else {
        rcuRecycle(node, shared)
    }
    shared.pointee.liveNodes.subtract(1, ordering: .relaxed)
    rcuDropPending(shared, 1)
}

/// Pushes a reclaimed node on the table's shared stack of recycled nodes:
/// a later insert reuses it without a trip through malloc (cross-thread
/// frees are slow in glibc).
private func rcuRecycle(_ node: UnsafeMutableRawPointer, _ shared: UnsafeMutablePointer<_RCUTableShared>) {
    var top = shared.pointee.freeNodes.load(ordering: .relaxed)
    while true {
        node.storeBytes(of: top, as: UnsafeMutableRawPointer?.self)
        // Release: the poisoning before this call happens before the
        // node's reuse by the writer that takes the stack (acquire).
        let r = shared.pointee.freeNodes.compareExchange(
            expected: top, desired: node, successOrdering: .releasing, failureOrdering: .relaxed)
        if r.exchanged { break }
        top = r.original
    }
}

/// Frees a bucket array replaced by a resize, with every node in it, after
/// a grace period. No writer touches a replaced array, so it is walked
/// without locks.
let rcuFreeArrayCallback: RCUCallback = { head in
    QSBR.gracePeriodDidEnd()
    Memb.gracePeriodDidEnd()
    Bulletproof.gracePeriodDidEnd()
    let array = UnsafeMutableRawPointer(head!)
    let header = _RCUBucketArray.header(array)
    let shared = header.pointee.shared
    let freed = rcuReleaseChains(array, nodeSize: shared.pointee.nodeSize)
    header.deinitialize(count: 1)
    array.deallocate()
    shared.pointee.liveNodes.subtract(freed, ordering: .relaxed)
    rcuDropPending(shared, freed)
}

/// Drops `n` pending references; the last one frees the counters block
/// (and the recycled nodes still on its stack).
func rcuDropPending(_ shared: UnsafeMutablePointer<_RCUTableShared>, _ n: Int) {
    // Acquiring-and-releasing: every earlier access to `shared` (by other
    // callbacks and by the table) happens before the free below.
    if shared.pointee.pending.subtract(n, ordering: .acquiringAndReleasing).newValue == 0 {
        rcuFreeList(shared.pointee.freeNodes.exchange(nil, ordering: .acquiring))
        shared.deinitialize(count: 1)
        shared.deallocate()
    }
}

/// Frees a list of recycled nodes (linked through their first word).
func rcuFreeList(_ first: UnsafeMutableRawPointer?) {
    var p = first
    while let n = p {
        p = n.load(as: UnsafeMutableRawPointer?.self)
        n.deallocate()
    }
}

/// Frees every node of every chain of `array` (no concurrent access) and
/// returns how many.
func rcuReleaseChains(_ array: UnsafeMutableRawPointer, nodeSize: Int) -> Int {
    let mask = _RCUBucketArray.header(array).pointee.mask
    let buckets = _RCUBucketArray.buckets(array)
    var freed = 0
    for i in 0...mask {
        var p = buckets[i].load(ordering: .relaxed)
        while let n = p {
            p = rcuNodeHeader(n).pointee.next.load(ordering: .relaxed)
            rcuPoisonNode(n, size: nodeSize)
            n.deallocate()
            freed += 1
        }
    }
    return freed
}
