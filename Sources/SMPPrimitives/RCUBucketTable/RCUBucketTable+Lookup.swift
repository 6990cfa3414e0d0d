// The read side of an RCUBucketTable: lock-free, store-free lookups.
import Synchronization

extension RCUBucketTable {
    /// The value stored for `key`, or nil.
    ///
    /// The calling thread must be inside a read section of `Flavor` (checked
    /// in debug builds). Lock-free and store-free: scans the key's first
    /// bucket (one cache line) and, if the key is not there, its second;
    /// no allocation, no retain. The value is a copy, valid after the read
    /// section ends.
    @inlinable
    public func lookup(_ key: Key) -> Value? {
        #if DEBUG
        _checkReader()
        #endif
        let h = key.rcuHash(seed: seed)
        let tag = _RCUBucketEntry.tag(h)
        let first = Int(truncatingIfNeeded: h) & mask
        if let v = _probe(first, tag, key) { return v }
        return _probe(first ^ _alternateOffset(h), tag, key)
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
