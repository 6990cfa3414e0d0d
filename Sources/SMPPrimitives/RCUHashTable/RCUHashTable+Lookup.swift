// The read side of an RCUHashTable: lock-free, store-free lookups.
import Synchronization

extension RCUHashTable {
    /// The value stored for `key`, or nil.
    ///
    /// The calling thread must be inside a read section of `Flavor` (checked
    /// in debug builds). Lock-free and store-free: a few dependent loads, no
    /// allocation, no retain. The value is a copy, valid after the read
    /// section ends (what it points to, if it is a pointer, may not be).
    @inlinable
    public func lookup(_ key: Key) -> Value? {
        #if DEBUG
        _checkReader()
        #endif
        let h = key.rcuHash(seed: seed)
        // Acquire pairs with the resize's releasing publication: the array
        // header, its buckets and every node copied into it are visible.
        let array = current.load(ordering: .acquiring)
        // Acquire (consume would do) pairs with the releasing store that
        // linked the node: its hash, key and value are initialized.
        var p = _RCUBucketArray.bucket(array, h).pointee.load(ordering: .acquiring)
        while let n = p {
            if Layout.matches(n, key, hash: h) { return Layout.value(n) }
            // Same pairing for the link to the next node.
            p = rcuNodeHeader(n).pointee.next.load(ordering: .acquiring)
        }
        return nil
    }

    @usableFromInline
    func _checkReader() {
        if !Flavor.isInReadSection {
            _rcuMisuse("RCUHashTable.lookup outside a \(Flavor.name) read section")
        }
    }
}
