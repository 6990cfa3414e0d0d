// Striped update locks of an RCUHashTable, each with its cache of
// recycled nodes. Readers never touch them.
import Glibc
import Synchronization

extension RCUHashTable {
    /// 64 stripes. A bucket's stripe is `hash & (stripeCount - 1)`; since
    /// there are never fewer buckets than stripes, all keys of a bucket
    /// share its stripe, in every array size.
    @inlinable static var stripeCount: Int { 64 }
    /// One stripe per 64-byte line: 16 x UInt32.
    @inlinable static var stripeStride: Int { 16 }
    /// Each stripe line also holds, at byte 8, that stripe's private cache
    /// of recycled nodes (guarded by the stripe lock).
    @inlinable static var stripeCacheOffset: Int { 8 }

    static func allocateStripes() -> UnsafeMutablePointer<Atomic<UInt32>> {
        let n = stripeCount * stripeStride
        let stripes = UnsafeMutablePointer<Atomic<UInt32>>.allocate(capacity: n)
        for i in 0..<n { (stripes + i).initialize(to: Atomic(0)) }
        for i in 0..<stripeCount { stripeCache(stripes + i * stripeStride).initialize(to: nil) }
        return stripes
    }

    /// Frees the stripes and the nodes cached in them (deinit only).
    func freeStripes() {
        for i in 0..<Self.stripeCount { rcuFreeList(Self.stripeCache(stripes + i * Self.stripeStride).pointee) }
        stripes.deinitialize(count: Self.stripeCount * Self.stripeStride)
        stripes.deallocate()
    }

    @inlinable @inline(__always)
    static func stripeCache(_ stripe: UnsafeMutablePointer<Atomic<UInt32>>) -> UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        (UnsafeMutableRawPointer(stripe) + stripeCacheOffset).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
    }

    /// Locks the stripe of hash `h` and returns it.
    @inlinable
    func lockStripe(_ h: UInt64) -> UnsafeMutablePointer<Atomic<UInt32>> {
        let s = stripes + (Int(truncatingIfNeeded: h) & (Self.stripeCount - 1)) * Self.stripeStride
        lock(s)
        return s
    }

    @inlinable
    func lock(_ s: UnsafeMutablePointer<Atomic<UInt32>>) {
        s.pointee.lockWord()
    }

    @inlinable
    func unlockStripe(_ s: UnsafeMutablePointer<Atomic<UInt32>>) {
        s.pointee.unlockWord()
    }

    func lockAllStripes() {
        // Always in index order, so two resizers cannot deadlock.
        for i in 0..<Self.stripeCount { lock(stripes + i * Self.stripeStride) }
    }

    func unlockAllStripes() {
        for i in 0..<Self.stripeCount { unlockStripe(stripes + i * Self.stripeStride) }
    }

    /// Memory for one node: from the stripe's cache of recycled nodes, else
    /// the whole shared stack of nodes reclaimed since (taken at once), else
    /// malloc. Called with `stripe` locked.
    @inlinable @inline(__always)
    func allocateNode(_ stripe: UnsafeMutablePointer<Atomic<UInt32>>) -> UnsafeMutableRawPointer {
        let cache = Self.stripeCache(stripe)
        var n = cache.pointee
        if n == nil {
            // Acquire pairs with the callbacks' releasing pushes.
            n = shared.pointee.freeNodes.exchange(nil, ordering: .acquiring)
        }
        guard let node = n else { return Layout.allocateNode() }
        cache.pointee = node.load(as: UnsafeMutableRawPointer?.self)
        return node
    }
}
