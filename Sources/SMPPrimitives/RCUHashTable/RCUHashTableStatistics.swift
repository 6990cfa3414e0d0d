// The counters of an RCUHashTable, read racily.

/// A racy snapshot of an ``RCUHashTable``'s counters.
public struct RCUHashTableStatistics: Sendable, Equatable {
    /// Keys in the table.
    public var count: Int
    /// Buckets in the current bucket array.
    public var bucketCount: Int
    /// Nodes handed to call_rcu (removed, replaced, or copied away by a
    /// resize) and not yet freed.
    public var pendingReclaim: Int
    /// The largest ``pendingReclaim`` seen.
    public var peakPendingReclaim: Int
    /// Nodes in use: ``count`` plus ``pendingReclaim`` once updates have
    /// finished (recycled nodes kept for reuse are not counted). Zero after
    /// ``RCUHashTable/removeAll()`` and a barrier.
    public var liveNodes: Int
    /// How many times the table has grown.
    public var resizes: Int
}

extension RCUHashTable {
    /// Keys in the table (racy while updates run). Any thread; one relaxed
    /// load.
    public var count: Int { shared.pointee.count.load(ordering: .relaxed) }

    /// Buckets in the current array. Any thread.
    public var bucketCount: Int {
        _RCUBucketArray.header(current.load(ordering: .acquiring)).pointee.mask + 1
    }

    /// A racy snapshot of the counters (each read relaxed, so they need not
    /// agree with each other while updates or reclamation run). Any thread.
    public var statistics: RCUHashTableStatistics {
        let s = shared
        return RCUHashTableStatistics(
            count: s.pointee.count.load(ordering: .relaxed),
            bucketCount: bucketCount,
            pendingReclaim: s.pointee.pending.load(ordering: .relaxed) - 1,
            peakPendingReclaim: max(0, s.pointee.peakPending.load(ordering: .relaxed) - 1),
            liveNodes: s.pointee.liveNodes.load(ordering: .relaxed),
            resizes: s.pointee.resizes.load(ordering: .relaxed))
    }
}

/// The chain lengths of an ``RCUHashTable``'s current bucket array: what a
/// lookup costs, for tests and diagnostics (hash flooding, load).
package struct RCUHashTableChainStatistics: Sendable, Equatable {
    /// Buckets in the current array.
    package var bucketCount: Int
    /// Keys found on the chains (the table's count, exactly: the walk holds
    /// every stripe lock).
    package var keys: Int
    /// Buckets with at least one key.
    package var occupiedBuckets: Int
    /// The longest chain: the most keys a lookup compares.
    package var longestChain: Int
}

extension RCUHashTable {
    /// Walks every chain of the current array. Any thread; holds every
    /// stripe lock for the walk (updates wait, lookups do not), so no node
    /// is unlinked or retired and no resize replaces the array meanwhile.
    /// O(keys + buckets): tests and diagnostics only.
    package var chainStatistics: RCUHashTableChainStatistics {
        lockAllStripes()
        defer { unlockAllStripes() }
        let array = current.load(ordering: .acquiring)
        let mask = _RCUBucketArray.header(array).pointee.mask
        let buckets = _RCUBucketArray.buckets(array)
        var s = RCUHashTableChainStatistics(bucketCount: mask + 1, keys: 0, occupiedBuckets: 0, longestChain: 0)
        for i in 0...mask {
            var length = 0
            var p = buckets[i].load(ordering: .relaxed)
            while let n = p {
                length += 1
                p = rcuNodeHeader(n).pointee.next.load(ordering: .relaxed)
            }
            s.keys += length
            if length > 0 { s.occupiedBuckets += 1 }
            s.longestChain = max(s.longestChain, length)
        }
        return s
    }

    /// The nodes a ``lookup(_:)`` of `key` visits now: the key's position
    /// in its chain (1 for the head) if present, else the chain's length.
    /// Any thread; takes the key's stripe lock (so the chain cannot change
    /// during the walk). Tests and diagnostics only.
    package func lookupProbes(_ key: Key) -> Int {
        let h = key.rcuHash(seed: seed)
        let stripe = lockStripe(h)
        defer { unlockStripe(stripe) }
        var p = _RCUBucketArray.bucket(current.load(ordering: .acquiring), h).pointee.load(ordering: .relaxed)
        var probes = 0
        while let n = p {
            probes += 1
            if Layout.matches(n, key, hash: h) { break }
            p = rcuNodeHeader(n).pointee.next.load(ordering: .relaxed)
        }
        return probes
    }
}
