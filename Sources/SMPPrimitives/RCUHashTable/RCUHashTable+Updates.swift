// The write side of an RCUHashTable: insert, replace, remove, serialized per
// bucket stripe; unlinked nodes go to call_rcu.
import CURCU
import Synchronization

extension RCUHashTable {
    /// Inserts `key` with `value`. Returns false (and changes nothing) if the
    /// key is present.
    ///
    /// Any thread; takes the key's stripe lock; takes one node (recycled or
    /// allocated); may grow the table (which copies every node while other
    /// updates wait, never blocking readers).
    @inlinable @discardableResult
    public func insert(_ key: Key, value: Value) -> Bool {
        let h = key.rcuHash(seed: seed)
        let stripe = lockStripe(h)
        // Relaxed would do under the lock (resizes take every stripe lock);
        // acquire keeps the reasoning local.
        let array = current.load(ordering: .acquiring)
        let mask = _RCUBucketArray.header(array).pointee.mask
        let bucket = _RCUBucketArray.buckets(array) + (Int(truncatingIfNeeded: h) & mask)
        let first = bucket.pointee.load(ordering: .relaxed)  // only we write it now
        if findNode(key, hash: h, from: first) != nil {
            unlockStripe(stripe)
            return false
        }
        let n = allocateNode(stripe)
        Layout.initializeNode(n, next: first, hash: h, key: key, value: value, shared: shared)
        // Release publishes the node's fields (and its link) to readers that
        // load this bucket head with acquire.
        bucket.pointee.store(n, ordering: .releasing)
        let newCount = shared.pointee.count.add(1, ordering: .relaxed).newValue
        unlockStripe(stripe)
        shared.pointee.liveNodes.add(1, ordering: .relaxed)
        if newCount > mask + 1 { grow(beyond: mask + 1) }
        return true
    }

    /// Replaces the value of `key` and returns the old one, or returns nil
    /// (and changes nothing) if the key is absent.
    ///
    /// A new node with the new value takes the old node's place in the
    /// chain, and the old node is freed after a grace period: a concurrent
    /// lookup finds the key throughout and gets the old or the new value,
    /// whole. Any thread; takes the key's stripe lock; takes one node.
    @inlinable @discardableResult
    public func replace(_ key: Key, value: Value) -> Value? {
        unlinkNode(key) { link, old, stripe in
            let n = allocateNode(stripe)
            // The same hash, key bits and successor: a reader standing on
            // the old node and one that reaches the new node walk the same
            // rest of the chain.
            Layout.initializeNode(
                n, next: rcuNodeHeader(old).pointee.next.load(ordering: .relaxed),
                hash: rcuNodeHeader(old).pointee.hash,
                key: (old + Layout.keyOffset).load(as: Key.self), value: value, shared: shared)
            // Release publishes the new node's fields to readers that load
            // the link with acquire; the successor was published before (by
            // a writer that held this stripe lock, so happens-before us).
            link.pointee.store(n, ordering: .releasing)
            shared.pointee.liveNodes.add(1, ordering: .relaxed)
        }
    }

    /// Removes `key` and returns its value, or nil if it was absent.
    ///
    /// Any thread; takes the key's stripe lock. The node is freed after a
    /// grace period: lookups that already reached it finish safely.
    @inlinable @discardableResult
    public func remove(_ key: Key) -> Value? {
        unlinkNode(key) { link, n, _ in
            // Release: the successor we splice in was published before, and
            // this store must not be seen before those fields by a reader
            // that follows it. The unlinked node keeps its `next`: a reader
            // standing on it still reaches the rest of the chain.
            link.pointee.store(rcuNodeHeader(n).pointee.next.load(ordering: .relaxed), ordering: .releasing)
            shared.pointee.count.subtract(1, ordering: .relaxed)
        }
    }

    /// Removes every key (each node freed after a grace period). Any
    /// thread; takes every stripe lock, so other updates wait; readers do
    /// not.
    public func removeAll() {
        // Registered once for the whole batch of deferFree calls below.
        Flavor.withRegisteredThread { removeAllLocked() }
    }

    func removeAllLocked() {
        lockAllStripes()
        let array = current.load(ordering: .acquiring)
        let mask = _RCUBucketArray.header(array).pointee.mask
        let buckets = _RCUBucketArray.buckets(array)
        var removed = 0
        for i in 0...mask {
            // Detach the whole chain with one releasing store; readers on it
            // keep walking it until the grace period ends.
            guard var p = buckets[i].load(ordering: .relaxed) else { continue }
            buckets[i].store(nil, ordering: .releasing)
            while true {
                let next = rcuNodeHeader(p).pointee.next.load(ordering: .relaxed)
                retire(p)
                removed += 1
                guard let nx = next else { break }
                p = nx
            }
        }
        shared.pointee.count.subtract(removed, ordering: .relaxed)
        unlockAllStripes()
    }

    // MARK: Internals

    /// The node of `key` in the chain starting at `first`, or nil. Called
    /// with the key's stripe locked (relaxed loads: only we write the chain).
    @inlinable
    func findNode(_ key: Key, hash h: UInt64, from first: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
        var p = first
        while let n = p {
            if Layout.matches(n, key, hash: h) { return n }
            p = rcuNodeHeader(n).pointee.next.load(ordering: .relaxed)
        }
        return nil
    }

    /// The link (bucket head or a node's `next`) that points to the node of
    /// `key`, and that node; nil if absent. Called with the key's stripe
    /// locked.
    @inlinable @inline(__always)
    func findLink(
        _ key: Key, hash h: UInt64
    ) -> (link: UnsafeMutablePointer<Atomic<UnsafeMutableRawPointer?>>, node: UnsafeMutableRawPointer)? {
        // Relaxed would do under the lock (see insert).
        let array = current.load(ordering: .acquiring)
        var link = _RCUBucketArray.bucket(array, h)
        while let n = link.pointee.load(ordering: .relaxed) {
            if Layout.matches(n, key, hash: h) { return (link, n) }
            link = rcuNodeLink(n)
        }
        return nil
    }

    /// The common part of remove and replace: finds `key` under its stripe
    /// lock, lets `relink` store a new target into the link that points to
    /// the key's node (its successor, or a replacement node), unlocks and
    /// retires the node. Returns the node's value, or nil (nothing done) if
    /// the key is absent.
    @inlinable @inline(__always)
    func unlinkNode(
        _ key: Key,
        relink: (
            _ link: UnsafeMutablePointer<Atomic<UnsafeMutableRawPointer?>>, _ node: UnsafeMutableRawPointer,
            _ stripe: UnsafeMutablePointer<Atomic<UInt32>>
        ) -> Void
    ) -> Value? {
        let h = key.rcuHash(seed: seed)
        let stripe = lockStripe(h)
        guard let (link, n) = findLink(key, hash: h) else {
            unlockStripe(stripe)
            return nil
        }
        let value = Layout.value(n)
        relink(link, n, stripe)
        unlockStripe(stripe)
        retire(n)
        return value
    }

    /// Hands an unlinked node to call_rcu: freed (recycled) after a grace
    /// period.
    @inlinable @inline(__always)
    func retire(_ n: UnsafeMutableRawPointer) {
        shared.pointee.addPending(1)
        Flavor.deferFree(n.assumingMemoryBound(to: rcu_head.self), rcuFreeNodeCallback)
    }
}
