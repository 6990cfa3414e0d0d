// The write side of an RCUBucketTable: insert, replace, remove under the
// writer lock, and the cuckoo displacement an insert into two full buckets
// uses. Slots never move; entries move only in displacement.
import Synchronization

extension RCUBucketTable {
    /// Takes the writer lock. A QSBR writer that must wait for it goes
    /// offline while it waits: the holder may be waiting for a grace
    /// period, which an online QSBR thread spinning here would block
    /// forever (it reports no quiescent state).
    @inlinable @inline(__always)
    func _lockWriter() {
        let w = writer
        if _fastPath(w.pointee.tryLockWriter()) { return }
        if Flavor.self == QSBR.self {
            QSBR.withThreadOffline { w.pointee.lockWriter() }
        } else {
            w.pointee.lockWriter()
        }
    }

    /// Inserts `key` with `value`. Returns false (and changes nothing) if
    /// the key is present; throws (changing nothing) if no key slot is free
    /// (``RCUBucketTableError/full``) or both of the key's buckets are full
    /// and displacement finds no room (``RCUBucketTableError/bucketsFull``).
    ///
    /// Any thread outside explicit read sections; takes the writer lock.
    /// Allocates nothing: the slot comes from the free stack. If the stack
    /// is empty, waits for a grace period and reuses the pending batch. If
    /// both buckets are full, moves up to two other keys' entries to their
    /// other buckets (concurrent lookups of those keys still find them).
    @inlinable @discardableResult
    public func insert(_ key: Key, value: Value) throws(RCUBucketTableError) -> Bool {
        let h = key.rcuHash(seed: seed)
        let tag = _RCUBucketEntry.tag(h)
        let first = Int(truncatingIfNeeded: h) & mask
        let second = first ^ _alternateOffset(h)
        let w = writer
        _lockWriter()
        defer { w.pointee.unlockWriter() }
        if _findEntry(first, tag, key) != nil || _findEntry(second, tag, key) != nil { return false }
        // A slot first: if there is none, nothing has moved. Then an entry,
        // in the first bucket if it has room: lookups scan it first, so a
        // key there costs one cache line.
        let slot = try _takeSlot()
        guard let e = _emptyEntry(first) ?? _emptyEntry(second) ?? _makeRoom(first, second) else {
            _returnSlot(slot)
            w.pointee.bucketsFullFailures.add(1, ordering: .relaxed)
            throw .bucketsFull
        }
        (slots + slot).initialize(to: Slot(key: key, value: value))
        // Release: the slot's initialization above happens before any read
        // of it by a lookup that loads this word (acquire).
        e.pointee.store(_RCUBucketEntry.word(tag: tag, slot: slot), ordering: .releasing)
        w.pointee.count.add(1, ordering: .relaxed)
        return true
    }

    /// Replaces the value of `key` and returns the old one, or returns nil
    /// (and changes nothing) if the key is absent; throws
    /// ``RCUBucketTableError/full`` (changing nothing) if no key slot is
    /// free even after reclaiming the pending batch.
    ///
    /// The new value goes to a fresh slot, and the key's entry is switched
    /// to it with one atomic store: a concurrent lookup finds the key
    /// throughout and gets the old or the new value, whole. The old slot
    /// is reclaimed after a grace period. Any thread outside explicit read
    /// sections; takes the writer lock; may wait for a grace period.
    @inlinable @discardableResult
    public func replace(_ key: Key, value: Value) throws(RCUBucketTableError) -> Value? {
        let h = key.rcuHash(seed: seed)
        let w = writer
        _lockWriter()
        defer { w.pointee.unlockWriter() }
        guard let e = _findEntry(h, key) else { return nil }
        let old = e.pointee.load(ordering: .relaxed)  // only lock holders store entries
        let oldSlot = _RCUBucketEntry.slot(of: old)
        let oldValue = slots[oldSlot].value
        let slot = try _takeSlot()
        (slots + slot).initialize(to: Slot(key: key, value: value))
        // Release, as in insert: the new slot is initialized before a
        // lookup that loads the new word reads it. A lookup that loaded
        // the old word reads the old slot, intact until the grace period.
        e.pointee.store(_RCUBucketEntry.word(tag: _RCUBucketEntry.tag(of: old), slot: slot), ordering: .releasing)
        _retire(oldSlot)
        return oldValue
    }

    /// Removes `key` and returns its value, or nil if it was absent.
    ///
    /// Any thread outside explicit read sections; takes the writer lock.
    /// The key's slot joins the pending batch and is reused after a grace
    /// period; when the batch is full, this call waits for that grace
    /// period (once per ``reclaimBatch`` removes and replaces).
    @inlinable @discardableResult
    public func remove(_ key: Key) -> Value? {
        let h = key.rcuHash(seed: seed)
        let w = writer
        _lockWriter()
        defer { w.pointee.unlockWriter() }
        guard let e = _findEntry(h, key) else { return nil }
        let slot = _RCUBucketEntry.slot(of: e.pointee.load(ordering: .relaxed))
        let value = slots[slot].value
        // Lookups that still load the old word read the slot, which stays
        // intact: it is reused only after a grace period that starts after
        // this store (sequenced before the synchronize that ends the
        // batch); a read section that starts after the grace period begins
        // sees this store or a later one (RCU's guarantee, liburcu's full
        // fences). Release although an empty entry publishes no slot: a
        // lookup that reads this store must also see every earlier move's
        // counter bump (the argument in lookup(_:) needs every store to an
        // entry to be a release store).
        e.pointee.store(0, ordering: .releasing)
        w.pointee.count.subtract(1, ordering: .relaxed)
        _retire(slot)
        return value
    }

    /// Waits for a grace period if any removed slot is pending and returns
    /// the pending batch to the free stack. Any thread outside explicit
    /// read sections; takes the writer lock. (Updates do this by
    /// themselves when the batch fills or the free stack runs dry.)
    public func reclaim() {
        let w = writer
        _lockWriter()
        _reclaimLocked()
        w.pointee.unlockWriter()
    }

    // MARK: Internals (writer lock held)

    /// The entry of `key` in either of its buckets.
    @inlinable @inline(__always)
    func _findEntry(_ h: UInt64, _ key: Key) -> UnsafeMutablePointer<Atomic<UInt64>>? {
        let tag = _RCUBucketEntry.tag(h)
        let first = Int(truncatingIfNeeded: h) & mask
        return _findEntry(first, tag, key) ?? _findEntry(first ^ _alternateOffset(h), tag, key)
    }

    /// The entry of `key` in bucket `b`, or nil. Relaxed loads: only lock
    /// holders store entries.
    @inlinable @inline(__always)
    func _findEntry(_ b: Int, _ tag: UInt64, _ key: Key) -> UnsafeMutablePointer<Atomic<UInt64>>? {
        let e = entries + b &* _RCUBucketEntry.perBucket
        for i in 0..<_RCUBucketEntry.perBucket {
            let w = (e + i).pointee.load(ordering: .relaxed)
            if _RCUBucketEntry.tag(of: w) == tag && slots[_RCUBucketEntry.slot(of: w)].key == key { return e + i }
        }
        return nil
    }

    /// The first empty entry of bucket `b`, or nil.
    @inlinable @inline(__always)
    func _emptyEntry(_ b: Int) -> UnsafeMutablePointer<Atomic<UInt64>>? {
        let e = entries + b &* _RCUBucketEntry.perBucket
        for i in 0..<_RCUBucketEntry.perBucket where (e + i).pointee.load(ordering: .relaxed) == 0 { return e + i }
        return nil
    }

    /// Makes an empty entry in bucket `b1` or `b2` (both full) by cuckoo
    /// displacement: a breadth-first search for a path of at most two
    /// moves, each taking an entry to its key's other bucket, the deepest
    /// first (into an empty entry). Returns the freed entry, or nil
    /// (nothing moved). At most 16 + 128 entries examined, one key rehash
    /// each.
    @usableFromInline
    func _makeRoom(_ b1: Int, _ b2: Int) -> UnsafeMutablePointer<Atomic<UInt64>>? {
        let n = _RCUBucketEntry.perBucket
        // One move: an entry of b1 or b2 whose other bucket has room.
        for pass in 0..<2 {
            let b = pass == 0 ? b1 : b2
            let e = entries + b &* n
            for i in 0..<n {
                let other = _otherBucket(of: e + i, in: b)
                if let free = _emptyEntry(other) {
                    _move(e + i, to: free)
                    _countDisplacement(moves: 1)
                    return e + i
                }
            }
        }
        // Two moves: an entry x of b1 or b2, an entry y of x's other
        // bucket whose own other bucket has room; y moves there, then x
        // into y's entry.
        for pass in 0..<2 {
            let b = pass == 0 ? b1 : b2
            let e = entries + b &* n
            for i in 0..<n {
                let xOther = _otherBucket(of: e + i, in: b)
                let f = entries + xOther &* n
                for j in 0..<n {
                    let yOther = _otherBucket(of: f + j, in: xOther)
                    if let free = _emptyEntry(yOther) {
                        _move(f + j, to: free)
                        _move(e + i, to: f + j)
                        _countDisplacement(moves: 2)
                        return e + i
                    }
                }
            }
        }
        return nil
    }

    /// The other candidate bucket of the key whose (occupied) entry `e`
    /// lies in bucket `b`: the key is rehashed from its slot.
    @inlinable @inline(__always)
    func _otherBucket(of e: UnsafeMutablePointer<Atomic<UInt64>>, in b: Int) -> Int {
        let slot = _RCUBucketEntry.slot(of: e.pointee.load(ordering: .relaxed))
        return b ^ _alternateOffset(slots[slot].key.rcuHash(seed: seed))
    }

    /// Moves the word of entry `from` into the empty entry `to`, keeping
    /// the key findable throughout (the ordering is argued in
    /// lookup(_:)): copy, bump the move counter, clear.
    @inlinable @inline(__always)
    func _move(_ from: UnsafeMutablePointer<Atomic<UInt64>>, to: UnsafeMutablePointer<Atomic<UInt64>>) {
        let word = from.pointee.load(ordering: .relaxed)  // only lock holders store entries
        // Release: the slot's initialization (before its first publication,
        // ordered before us by the writer lock) happens before a lookup's
        // reads of it through this entry.
        to.pointee.store(word, ordering: .releasing)
        // Release RMW between the copy and the clear: a lookup that reads
        // the clear (or any later store to `from`) sees this bump; one that
        // reads this bump sees the copy.
        moves.pointee.wrappingAdd(1, ordering: .releasing)
        from.pointee.store(0, ordering: .releasing)
    }

    @inlinable @inline(__always)
    func _countDisplacement(moves n: Int) {
        let w = writer
        w.pointee.displacedInserts.add(1, ordering: .relaxed)
        w.pointee.displacementMoves.add(n, ordering: .relaxed)
    }

    /// Puts back a slot taken by `_takeSlot()` and not used.
    @inlinable @inline(__always)
    func _returnSlot(_ slot: Int) {
        let w = writer
        let n = w.pointee.freeCount.load(ordering: .relaxed)
        w.pointee.free[n] = UInt32(truncatingIfNeeded: slot)
        w.pointee.freeCount.store(n + 1, ordering: .relaxed)
    }

    /// A free slot's index: from the free stack, else (after a grace
    /// period) from the pending batch.
    @inlinable @inline(__always)
    func _takeSlot() throws(RCUBucketTableError) -> Int {
        let w = writer
        var n = w.pointee.freeCount.load(ordering: .relaxed)
        if _slowPath(n == 0) {
            _reclaimLocked()
            n = w.pointee.freeCount.load(ordering: .relaxed)
            if n == 0 { throw .full }
        }
        w.pointee.freeCount.store(n - 1, ordering: .relaxed)
        return Int(w.pointee.free[n - 1])
    }

    /// Adds `slot` (no longer referred to by any entry) to the pending
    /// batch; reclaims the batch when it is full.
    @inlinable @inline(__always)
    func _retire(_ slot: Int) {
        let w = writer
        let n = w.pointee.pendingCount.load(ordering: .relaxed)
        w.pointee.pendingSlots[n] = UInt32(truncatingIfNeeded: slot)
        w.pointee.pendingCount.store(n + 1, ordering: .relaxed)
        if n + 1 > w.pointee.peakPending.load(ordering: .relaxed) {
            w.pointee.peakPending.store(n + 1, ordering: .relaxed)
        }
        if _slowPath(n + 1 == reclaimBatch) { _reclaimLocked() }
    }
}
