// Growing an RCUHashTable without stopping readers: copy, publish, free the
// old array after a grace period.
import CURCU

extension RCUHashTable {
    /// Doubles the bucket array until it has more buckets than keys, unless
    /// another thread already grew it past `oldBucketCount`. Takes every
    /// stripe lock (updates wait; readers do not).
    @usableFromInline
    func grow(beyond oldBucketCount: Int) {
        lockAllStripes()
        defer { unlockAllStripes() }
        let old = current.load(ordering: .acquiring)
        let oldMask = _RCUBucketArray.header(old).pointee.mask
        guard oldMask + 1 == oldBucketCount else { return }
        let count = shared.pointee.count.load(ordering: .relaxed)
        var newCount = (oldMask + 1) * 2
        while newCount < count { newCount *= 2 }
        let new = _RCUBucketArray.allocate(bucketCount: newCount, shared: shared)
        let newMask = newCount - 1
        let newBuckets = _RCUBucketArray.buckets(new)
        let oldBuckets = _RCUBucketArray.buckets(old)
        // Key and value are copied as bytes (this runs unspecialized).
        let keyOffset = Layout.keyOffset
        let payloadBytes = Layout.size - keyOffset
        var copied = 0
        // Copy, don't relink: the old chains stay intact for readers still
        // on the old array. The new array is private until published, so
        // relaxed stores suffice here.
        for i in 0...oldMask {
            var p = oldBuckets[i].load(ordering: .relaxed)
            while let n = p {
                let node = rcuNodeHeader(n)
                let h = node.pointee.hash
                let slot = newBuckets + (Int(truncatingIfNeeded: h) & newMask)
                let c = Layout.allocateNode()
                c.bindMemory(to: _RCUNodeHeader.self, capacity: 1).initialize(
                    to: _RCUNodeHeader(next: slot.pointee.load(ordering: .relaxed), hash: h, shared: shared))
                (c + keyOffset).copyMemory(from: n + keyOffset, byteCount: payloadBytes)
                slot.pointee.store(c, ordering: .relaxed)
                copied += 1
                p = node.pointee.next.load(ordering: .relaxed)
            }
        }
        shared.pointee.liveNodes.add(copied, ordering: .relaxed)
        // Release publishes the new array and every copied node: a reader
        // that acquires the new pointer sees them complete.
        current.store(new, ordering: .releasing)
        shared.pointee.resizes.add(1, ordering: .relaxed)
        shared.pointee.addPending(copied)
        Flavor.deferFree(old.assumingMemoryBound(to: rcu_head.self), rcuFreeArrayCallback)
    }
}
