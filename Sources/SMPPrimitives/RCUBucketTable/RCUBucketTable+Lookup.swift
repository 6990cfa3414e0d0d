// The read side of an RCUBucketTable: lock-free, store-free lookups.
import Synchronization

extension RCUBucketTable {
    /// The value stored for `key`, or nil.
    ///
    /// The calling thread must be inside a read section of `Flavor` (checked
    /// in debug builds). Lock-free and store-free: loads the move counter,
    /// scans the key's first bucket (one cache line) and, if the key is not
    /// there, its second; a miss scans again only if a displacement move
    /// completed meanwhile. No allocation, no retain. The value is a copy,
    /// valid after the read section ends.
    @inlinable
    public func lookup(_ key: Key) -> Value? {
        #if DEBUG
        _checkReader()
        #endif
        let h = key.rcuHash(seed: seed)
        let tag = _RCUBucketEntry.tag(h)
        let first = Int(truncatingIfNeeded: h) & mask
        let second = first ^ _alternateOffset(h)
        // Why a miss re-checks the move counter. Every store to an entry
        // is a release store, made under the writer lock; a move of K's
        // entry from `a` to `b` is, in the writer's order: store K's word
        // into `b`, bump the counter (a release RMW), clear `a`.
        //
        // Let the acquiring load below read counter value n, written by
        // the n-th move's bump (or the initial 0). That synchronizes with
        // the bump, so everything the writers did before it happens before
        // our scans; in particular K's word was stored into the entry `e`
        // that held K after the first n moves (or at K's insert, which
        // happens before this lookup if K is present throughout). Our load
        // of `e` therefore returns K's word or a later store to `e` (read
        // coherence). If it returns K's word we find K. A later store
        // comes, in `e`'s modification order, after the clear of the next
        // move of K out of `e` (K is present throughout: only a move ever
        // replaces its word with another), and every store to `e` is a
        // release store made after that move's bump (the writer lock
        // orders the writers): so our acquiring load of `e` synchronizes
        // with it, the bump happens before our second load of the counter,
        // and that load returns more than n (write-read coherence). So a
        // miss with an unchanged counter means K was not present
        // throughout; a changed counter, a new scan (which starts from the
        // new value, so the argument repeats). A reader is held up only
        // while moves keep completing, and moves happen only in inserts
        // that find both buckets full.
        var seen = moves.pointee.load(ordering: .acquiring)
        while true {
            if let v = _probe(first, tag, key) { return v }
            if let v = _probe(second, tag, key) { return v }
            let now = moves.pointee.load(ordering: .acquiring)
            if _fastPath(now == seen) { return nil }
            seen = now
        }
    }

    /// The XOR distance from a key's first bucket to its second: odd (so
    /// the two differ) and drawn from other hash bits than the first
    /// bucket's index and the tag.
    @inlinable @inline(__always)
    func _alternateOffset(_ h: UInt64) -> Int { (Int(truncatingIfNeeded: h >> 24) & mask) | 1 }

    /// The value of `key` in bucket `b`, or nil. Read side (any thread in a
    /// read section) and writers alike.
    @inlinable @inline(__always)
    func _probe(_ b: Int, _ tag: UInt64, _ key: Key) -> Value? {
        let e = entries + b &* _RCUBucketEntry.perBucket
        for i in 0..<_RCUBucketEntry.perBucket {
            // Acquire pairs with the writer's releasing store of this entry
            // (insert, replace): when we read the word it stored, the
            // writer's initialization of the slot happens before our reads
            // of it below. The slot cannot be rewritten while we read it:
            // that happens only after a grace period that began after the
            // entry stopped referring to it, and our read section (which
            // loaded the reference) is one the grace period waits for.
            let w = (e + i).pointee.load(ordering: .acquiring)
            if _RCUBucketEntry.tag(of: w) == tag {
                let s = slots + _RCUBucketEntry.slot(of: w)
                if s.pointee.key == key { return s.pointee.value }
            }
        }
        return nil
    }

    @usableFromInline
    func _checkReader() {
        if !Flavor.isInReadSection {
            _rcuMisuse("RCUBucketTable.lookup outside a \(Flavor.name) read section")
        }
    }
}
