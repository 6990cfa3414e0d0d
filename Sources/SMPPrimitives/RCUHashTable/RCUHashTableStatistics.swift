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
