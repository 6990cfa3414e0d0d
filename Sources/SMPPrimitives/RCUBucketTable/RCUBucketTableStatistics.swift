// The counters of an RCUBucketTable, read racily.

/// A racy snapshot of an ``RCUBucketTable``'s counters. Once updates have
/// stopped, `count + freeSlots + pendingReclaim == capacity`.
public struct RCUBucketTableStatistics: Sendable, Equatable {
    /// Keys in the table.
    public var count: Int
    /// Key slots (fixed at init).
    public var capacity: Int
    /// Buckets of 8 entries.
    public var bucketCount: Int
    /// Slots on the free stack.
    public var freeSlots: Int
    /// Removed or replaced slots waiting for a grace period.
    public var pendingReclaim: Int
    /// The largest ``pendingReclaim`` seen (at most the table's
    /// ``RCUBucketTable/reclaimBatch``).
    public var peakPendingReclaim: Int
    /// Grace periods waited for by updates and ``RCUBucketTable/reclaim()``.
    public var gracePeriods: Int
    /// Inserts refused because both of the key's buckets were full and
    /// displacement found no room.
    public var bucketsFullFailures: Int
    /// Inserts that found both of the key's buckets full and made room by
    /// moving other keys' entries (cuckoo displacement).
    public var displacedInserts: Int
    /// Entry moves those inserts made (one or two each).
    public var displacementMoves: Int
}

extension RCUBucketTable {
    /// Keys in the table (racy while updates run). Any thread; one relaxed
    /// load.
    public var count: Int { writer.pointee.count.load(ordering: .relaxed) }

    /// A racy snapshot of the counters (each read relaxed, so they need not
    /// agree with each other while updates run). Any thread; never locks.
    public var statistics: RCUBucketTableStatistics {
        let w = writer
        return RCUBucketTableStatistics(
            count: w.pointee.count.load(ordering: .relaxed),
            capacity: capacity,
            bucketCount: bucketCount,
            freeSlots: w.pointee.freeCount.load(ordering: .relaxed),
            pendingReclaim: w.pointee.pendingCount.load(ordering: .relaxed),
            peakPendingReclaim: w.pointee.peakPending.load(ordering: .relaxed),
            gracePeriods: w.pointee.gracePeriods.load(ordering: .relaxed),
            bucketsFullFailures: w.pointee.bucketsFullFailures.load(ordering: .relaxed),
            displacedInserts: w.pointee.displacedInserts.load(ordering: .relaxed),
            displacementMoves: w.pointee.displacementMoves.load(ordering: .relaxed))
    }

    /// The slot index holding `key`, or nil. Takes the writer lock. Tests.
    package func slotIndex(of key: Key) -> Int? {
        let w = writer
        _lockWriter()
        defer { w.pointee.unlockWriter() }
        return _findEntry(key.rcuHash(seed: seed), key).map { _RCUBucketEntry.slot(of: $0.pointee.load(ordering: .relaxed)) }
    }

    /// The bits in slot `index` now (a plain read: call inside a read
    /// section that saw the slot referred to, or with no writer running).
    /// Tests.
    package func slotContents(_ index: Int) -> (key: Key, value: Value) {
        (slots[index].key, slots[index].value)
    }
}
