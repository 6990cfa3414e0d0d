// A hash-bucket table for read-mostly data under RCU (issue 2).
//
// Readers (inside a read section of the table's flavour) take no lock and
// write no shared memory: they load the published bucket array, a bucket
// head and the chain links with acquiring loads and compare keys. Updates
// are serialized per bucket by striped spin locks; a removed node is freed
// by liburcu's call_rcu after a grace period. The table grows without
// stopping readers: a new, larger bucket array is filled with *copies* of
// every node while updates wait, published with one releasing store, and
// the old array and its nodes are freed after a grace period. A reader
// still on the old array sees exactly the contents the new one started
// with, so a key present across a resize is never missed.
//
// Reclaimed nodes are recycled: the call_rcu callback (after the grace
// period, and after poisoning in debug builds) pushes the node on a shared
// stack, and inserts take nodes from it, whole stack at a time, into a
// per-stripe cache. glibc's cross-thread free/malloc pair was a fifth of
// the rcu-churn writer's time. Nodes go back to malloc when the table goes.
//
// Memory layout (all manually managed, no ARC on the read path):
//
//   node:   [rcu_head | next | hash | value | shared* | key]   (64-byte aligned)
//   array:  [rcu_head | mask | shared* | pad][bucket heads ...]
//   shared: counters that outlive the table object until every pending
//           call_rcu callback has run (the callbacks update them).
import CURCU
import Glibc
import Synchronization

// MARK: - Keys

/// A key of an ``RCUHashTable``: plain data, compared with `==`, hashed with
/// a per-table random seed so that a remote party who picks keys (flows)
/// cannot aim them at one bucket.
public protocol RCUHashKey: Equatable, BitwiseCopyable {
    /// A 64-bit hash of the key keyed by `seed`. Must be cheap (a few
    /// multiplies) and mix every field; ``rcuHashMix(_:_:seed:)`` is a good
    /// building block.
    func rcuHash(seed: UInt64) -> UInt64
}

/// A keyed 64-bit mix of two words (a folded 64x64->128 multiply, in the
/// style of wyhash). One multiply; every input bit affects the result.
@inlinable @inline(__always)
public func rcuHashMix(_ a: UInt64, _ b: UInt64, seed: UInt64) -> UInt64 {
    let x = (a ^ seed ^ 0xa076_1d64_78bd_642f).multipliedFullWidth(by: b ^ 0xe703_7ed1_a0b4_28db)
    let y = (x.high ^ x.low ^ seed).multipliedFullWidth(by: 0x8ebc_6af0_9c88_c6e3)
    return y.high ^ y.low
}

extension UInt64: RCUHashKey {
    @inlinable public func rcuHash(seed: UInt64) -> UInt64 { rcuHashMix(self, 0, seed: seed) }
}
extension UInt: RCUHashKey {
    @inlinable public func rcuHash(seed: UInt64) -> UInt64 { rcuHashMix(UInt64(self), 0, seed: seed) }
}
extension Int: RCUHashKey {
    @inlinable public func rcuHash(seed: UInt64) -> UInt64 { rcuHashMix(UInt64(bitPattern: Int64(self)), 0, seed: seed) }
}
extension UInt32: RCUHashKey {
    @inlinable public func rcuHash(seed: UInt64) -> UInt64 { rcuHashMix(UInt64(self), 0, seed: seed) }
}

// MARK: - Statistics

/// A racy snapshot of an ``RCUHashTable``'s counters.
public struct RCUHashTableStatistics: Sendable, Equatable {
    /// Keys in the table.
    public var count: Int
    /// Buckets in the current bucket array.
    public var bucketCount: Int
    /// Nodes handed to call_rcu (removed, or replaced by a resize) and not
    /// yet freed.
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

// MARK: - Raw layout

/// The fixed part of every node. `rcu_head` must stay at offset 0: the
/// call_rcu callback gets its address and frees that address.
@usableFromInline
struct _RCUNodeHeader: ~Copyable {
    @usableFromInline var rcuHead: rcu_head
    /// The next node in the bucket chain. Written (releasing) only under the
    /// bucket's stripe lock; read (acquiring) by lock-free readers.
    @usableFromInline let next: Atomic<UnsafeMutableRawPointer?>
    /// The key's full hash: compared before the key, reused by resizes.
    @usableFromInline let hash: UInt64
    @usableFromInline let value: UInt
    /// The table's shared counters, for the call_rcu callback.
    @usableFromInline let shared: UnsafeMutablePointer<_RCUTableShared>

    @inlinable @inline(__always)
    init(next: UnsafeMutableRawPointer?, hash: UInt64, value: UInt, shared: UnsafeMutablePointer<_RCUTableShared>) {
        self.rcuHead = rcu_head()
        self.next = Atomic(next)
        self.hash = hash
        self.value = value
        self.shared = shared
    }
}

/// The header in front of a bucket array. Buckets start at
/// ``_RCUBucketArray/bucketsOffset``.
@usableFromInline
struct _RCUBucketArrayHeader: ~Copyable {
    @usableFromInline var rcuHead: rcu_head
    @usableFromInline let mask: Int
    let shared: UnsafeMutablePointer<_RCUTableShared>
}

/// Counters updated by writers and by call_rcu callbacks. Allocated apart
/// from the table object because callbacks may run after the table is
/// gone: `pending` counts one extra reference held by the table itself, and
/// whoever drops it to zero (the table's deinit or the last callback) frees
/// this block.
@usableFromInline
struct _RCUTableShared: ~Copyable {
    // Writers' counters, updated under stripe locks (so by several writers).
    @usableFromInline let count = Atomic<Int>(0)
    let resizes = Atomic<Int>(0)
    // Reclamation counters, also updated by the call_rcu worker: kept on
    // another cache line than `count` (padding below) to limit ping-pong.
    let _pad: (Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0)
    @usableFromInline let liveNodes = Atomic<Int>(0)
    let pending = Atomic<Int>(1)  // + 1 for the table
    let peakPending = Atomic<Int>(0)
    /// Reclaimed nodes for reuse (a push-only Treiber stack for callbacks;
    /// writers take the whole stack at once, so there is no ABA). Linked
    /// through the first word of each node (its rcu_head, unused by then).
    @usableFromInline let freeNodes = Atomic<UnsafeMutableRawPointer?>(nil)
    let nodeSize: Int

    init(nodeSize: Int) { self.nodeSize = nodeSize }

    @usableFromInline
    func addPending(_ n: Int) {
        let now = pending.add(n, ordering: .relaxed).newValue
        var peak = peakPending.load(ordering: .relaxed)
        while now > peak {
            let r = peakPending.compareExchange(expected: peak, desired: now, ordering: .relaxed)
            if r.exchanged { break }
            peak = r.original
        }
    }
}

@usableFromInline
enum _RCUBucketArray {
    /// Buckets start one cache line into the array allocation.
    @usableFromInline static let bucketsOffset = 64

    static func allocate(bucketCount: Int, shared: UnsafeMutablePointer<_RCUTableShared>) -> UnsafeMutableRawPointer {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bucketsOffset + bucketCount * 8, alignment: 64)
        raw.bindMemory(to: _RCUBucketArrayHeader.self, capacity: 1)
            .initialize(to: _RCUBucketArrayHeader(rcuHead: rcu_head(), mask: bucketCount - 1, shared: shared))
        let buckets = (raw + bucketsOffset).bindMemory(to: Atomic<UnsafeMutableRawPointer?>.self, capacity: bucketCount)
        for i in 0..<bucketCount { (buckets + i).initialize(to: Atomic(nil)) }
        return raw
    }

    @inlinable @inline(__always)
    static func header(_ a: UnsafeMutableRawPointer) -> UnsafeMutablePointer<_RCUBucketArrayHeader> {
        a.assumingMemoryBound(to: _RCUBucketArrayHeader.self)
    }

    @inlinable @inline(__always)
    static func buckets(_ a: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UnsafeMutableRawPointer?>> {
        (a + bucketsOffset).assumingMemoryBound(to: Atomic<UnsafeMutableRawPointer?>.self)
    }
}

/// The byte that overwrites freed nodes in debug builds: a reader that
/// wrongly uses a freed node sees keys that never match, values that are
/// nobody's, and a `next` that faults.
let rcuPoisonByte: UInt8 = 0xA5

@inlinable @inline(__always)
func rcuNodeHeader(_ n: UnsafeMutableRawPointer) -> UnsafeMutablePointer<_RCUNodeHeader> {
    n.assumingMemoryBound(to: _RCUNodeHeader.self)
}

/// Frees one node after a grace period (call_rcu callback, any flavour).
@usableFromInline
let rcuFreeNodeCallback: RCUCallback = { head in
    // The grace period ordered every reader's accesses before this point;
    // tell TSan (for whichever flavour queued us).
    QSBR.gracePeriodDidEnd()
    Memb.gracePeriodDidEnd()
    let node = UnsafeMutableRawPointer(head!)
    let shared = rcuNodeHeader(node).pointee.shared
    rcuPoisonNode(node, size: shared.pointee.nodeSize)
    // Recycle rather than free: a later insert reuses the node without a
    // trip through malloc (cross-thread frees are slow in glibc).
    var top = shared.pointee.freeNodes.load(ordering: .relaxed)
    while true {
        node.storeBytes(of: top, as: UnsafeMutableRawPointer?.self)
        // Release: the poisoning above happens before the node's reuse by
        // the writer that takes the stack (acquire).
        let r = shared.pointee.freeNodes.compareExchange(
            expected: top, desired: node, successOrdering: .releasing, failureOrdering: .relaxed)
        if r.exchanged { break }
        top = r.original
    }
    shared.pointee.liveNodes.subtract(1, ordering: .relaxed)
    rcuDropPending(shared, 1)
}

/// Drops `n` pending references; the last one frees the counters block.
private func rcuDropPending(_ shared: UnsafeMutablePointer<_RCUTableShared>, _ n: Int) {
    // Acquiring-and-releasing: every earlier access to `shared` (by other
    // callbacks and by the table) happens before the free below.
    if shared.pointee.pending.subtract(n, ordering: .acquiringAndReleasing).newValue == 0 {
        rcuFreeList(shared.pointee.freeNodes.exchange(nil, ordering: .acquiring))
        shared.deinitialize(count: 1)
        shared.deallocate()
    }
}

/// Frees a list of recycled nodes (linked through their first word).
func rcuFreeList(_ first: UnsafeMutableRawPointer?) {
    var p = first
    while let n = p {
        p = n.load(as: UnsafeMutableRawPointer?.self)
        n.deallocate()
    }
}

/// Frees a bucket array replaced by a resize, with every node in it, after
/// a grace period. No writer touches a replaced array, so it is walked
/// without locks.
private let rcuFreeArrayCallback: RCUCallback = { head in
    QSBR.gracePeriodDidEnd()
    Memb.gracePeriodDidEnd()
    let array = UnsafeMutableRawPointer(head!)
    let header = _RCUBucketArray.header(array)
    let shared = header.pointee.shared
    let freed = rcuReleaseChains(array, nodeSize: shared.pointee.nodeSize)
    header.deinitialize(count: 1)
    array.deallocate()
    shared.pointee.liveNodes.subtract(freed, ordering: .relaxed)
    rcuDropPending(shared, freed)
}

/// Frees every node of every chain of `array` (no concurrent access).
private func rcuReleaseChains(_ array: UnsafeMutableRawPointer, nodeSize: Int) -> Int {
    let mask = _RCUBucketArray.header(array).pointee.mask
    let buckets = _RCUBucketArray.buckets(array)
    var freed = 0
    for i in 0...mask {
        var p = buckets[i].load(ordering: .relaxed)
        while let n = p {
            p = rcuNodeHeader(n).pointee.next.load(ordering: .relaxed)
            rcuReleaseNode(n, size: nodeSize)
            freed += 1
        }
    }
    return freed
}

private func rcuReleaseNode(_ node: UnsafeMutableRawPointer, size: Int) {
    rcuPoisonNode(node, size: size)
    node.deallocate()
}

/// Ends a node's life as a node (debug builds: poisons next, hash, value
/// and key; the rcu_head is left for the free list).
private func rcuPoisonNode(_ node: UnsafeMutableRawPointer, size: Int) {
    rcuNodeHeader(node).deinitialize(count: 1)
    #if DEBUG
    memset(node + MemoryLayout<rcu_head>.size, Int32(rcuPoisonByte), size - MemoryLayout<rcu_head>.size)
    #endif
}

// MARK: - The table

/// A concurrent hash table mapping keys to word-sized values, with lock-free
/// lookups that write no shared memory (RCU readers) and per-bucket
/// serialized updates.
///
/// Values are words: store indices, or `Unmanaged`/pointer bits of objects
/// whose lifetime you manage (a value read under a read section stays
/// meaningful only as long as its referent outlives that section).
///
/// Concurrency contract:
/// - ``lookup(_:)`` may run on any number of threads at once, each inside a
///   read section of `Flavor` (QSBR: a registered, online thread; memb:
///   between `Memb.readLock()` and `Memb.readUnlock()`). It takes no lock,
///   allocates nothing and writes no shared memory.
/// - ``insert(_:value:)``, ``remove(_:)`` and ``removeAll()`` may run on any
///   thread (registered with `Flavor` for speed; see
///   ``RCUFlavor/deferFree(_:_:)``), concurrently with each other and with
///   lookups. Updates to the same bucket stripe are serialized.
/// - A lookup concurrent with an update of its key may see the key either
///   present or absent; a key present before and throughout the lookup is
///   always found, also while the table grows.
/// - Removed nodes are freed after a grace period of `Flavor`. Dropping the
///   table frees its current nodes at once (no lookup can be running: it
///   would hold a reference) and never waits; nodes already queued are
///   freed by their callbacks.
/// - Memory: one 64-byte-aligned node per key (64 bytes for a 16-byte key),
///   8 bytes per bucket. Removed nodes are recycled for later inserts, so a
///   table keeps the memory of its peak size until it is dropped.
public final class RCUHashTable<Key: RCUHashKey, Flavor: RCUFlavor>: @unchecked Sendable {
    // @unchecked Sendable: all mutable state is behind raw pointers, with
    // readers synchronized by acquire/release publication and RCU grace
    // periods, and writers by the stripe locks; the stored properties
    // themselves are immutable.

    /// The current bucket array. Stored with release by a resize (publishing
    /// the array and every node in it); loaded with acquire by everyone.
    @usableFromInline let current: Atomic<UnsafeMutableRawPointer>
    @usableFromInline let seed: UInt64
    @usableFromInline let keyOffset: Int
    @usableFromInline let nodeSize: Int
    @usableFromInline let shared: UnsafeMutablePointer<_RCUTableShared>
    /// Striped update locks, one per 64-byte line. A bucket's stripe is
    /// `hash & (stripeCount - 1)`; since there are never fewer buckets than
    /// stripes, all keys of a bucket share its stripe, in every array size.
    @usableFromInline let stripes: UnsafeMutablePointer<Atomic<UInt32>>
    @inlinable static var stripeCount: Int { 64 }
    @inlinable static var stripeStride: Int { 16 }  // 16 x UInt32 = 64 bytes
    /// Each stripe line also holds, at byte 8, that stripe's private cache
    /// of recycled nodes (guarded by the stripe lock).
    @inlinable static var stripeCacheOffset: Int { 8 }

    /// Creates an empty table.
    ///
    /// - Parameter initialBucketCount: rounded up to a power of two, at least
    ///   64. The table doubles its buckets whenever it holds more keys than
    ///   buckets.
    public init(initialBucketCount: Int = 1024) {
        var buckets = Self.stripeCount
        while buckets < initialBucketCount { buckets <<= 1 }
        var rng = SystemRandomNumberGenerator()
        self.seed = rng.next()
        let header = MemoryLayout<_RCUNodeHeader>.size
        let align = MemoryLayout<Key>.alignment
        self.keyOffset = (header + align - 1) / align * align
        self.nodeSize = keyOffset + MemoryLayout<Key>.size
        let shared = UnsafeMutablePointer<_RCUTableShared>.allocate(capacity: 1)
        shared.initialize(to: _RCUTableShared(nodeSize: nodeSize))
        self.shared = shared
        self.current = Atomic(_RCUBucketArray.allocate(bucketCount: buckets, shared: shared))
        let n = Self.stripeCount * Self.stripeStride
        stripes = UnsafeMutablePointer<Atomic<UInt32>>.allocate(capacity: n)
        for i in 0..<n { (stripes + i).initialize(to: Atomic(0)) }
        for i in 0..<Self.stripeCount {
            stripeCache(stripes + i * Self.stripeStride).initialize(to: nil)
        }
    }

    deinit {
        // No lookup can be running (it would hold a reference), so the live
        // array and its nodes can go at once.
        let array = current.load(ordering: .acquiring)
        let freed = rcuReleaseChains(array, nodeSize: nodeSize)
        shared.pointee.liveNodes.subtract(freed, ordering: .relaxed)
        _RCUBucketArray.header(array).deinitialize(count: 1)
        array.deallocate()
        for i in 0..<Self.stripeCount { rcuFreeList(stripeCache(stripes + i * Self.stripeStride).pointee) }
        // Callbacks still queued update `shared`: the last one frees it.
        rcuDropPending(shared, 1)
        stripes.deinitialize(count: Self.stripeCount * Self.stripeStride)
        stripes.deallocate()
    }

    // MARK: Lookup

    /// The value stored for `key`, or nil.
    ///
    /// The calling thread must be inside a read section of `Flavor` (checked
    /// in debug builds). Lock-free and store-free: a few dependent loads.
    @inlinable
    public func lookup(_ key: Key) -> UInt? {
        #if DEBUG
        _checkReader()
        #endif
        let h = key.rcuHash(seed: seed)
        // Acquire pairs with the resize's releasing publication: the array
        // header, its buckets and every node copied into it are visible.
        let array = current.load(ordering: .acquiring)
        let mask = _RCUBucketArray.header(array).pointee.mask
        // Acquire (consume would do) pairs with the releasing store that
        // linked the node: its hash, value and key are initialized.
        var p = _RCUBucketArray.buckets(array)[Int(truncatingIfNeeded: h) & mask].load(ordering: .acquiring)
        while let n = p {
            let node = n.assumingMemoryBound(to: _RCUNodeHeader.self)
            if node.pointee.hash == h && (n + keyOffset).load(as: Key.self) == key {
                return node.pointee.value
            }
            // Same pairing for the link to the next node.
            p = node.pointee.next.load(ordering: .acquiring)
        }
        return nil
    }

    @usableFromInline
    func _checkReader() {
        if !Flavor.isInReadSection {
            _rcuMisuse("RCUHashTable.lookup outside a \(Flavor.name) read section")
        }
    }

    // MARK: Updates

    /// Inserts `key` with `value`. Returns false (and changes nothing) if the
    /// key is present. Any thread; takes the key's stripe lock; allocates
    /// one node; may grow the table (which copies every node while other
    /// updates wait, never blocking readers).
    @inlinable @discardableResult
    public func insert(_ key: Key, value: UInt) -> Bool {
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
        n.bindMemory(to: _RCUNodeHeader.self, capacity: 1)
            .initialize(to: _RCUNodeHeader(next: first, hash: h, value: value, shared: shared))
        (n + keyOffset).initializeMemory(as: Key.self, repeating: key, count: 1)
        // Release publishes the node's fields (and its link) to readers that
        // load this bucket head with acquire.
        bucket.pointee.store(n, ordering: .releasing)
        let newCount = shared.pointee.count.add(1, ordering: .relaxed).newValue
        unlockStripe(stripe)
        shared.pointee.liveNodes.add(1, ordering: .relaxed)
        if newCount > mask + 1 { grow(beyond: mask + 1) }
        return true
    }

    @inlinable @inline(__always)
    func stripeCache(_ stripe: UnsafeMutablePointer<Atomic<UInt32>>) -> UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        (UnsafeMutableRawPointer(stripe) + Self.stripeCacheOffset).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
    }

    /// Memory for one node: from the stripe's cache of recycled nodes, else
    /// the whole shared stack of nodes reclaimed since (taken at once), else
    /// malloc. Called with `stripe` locked.
    @inlinable @inline(__always)
    func allocateNode(_ stripe: UnsafeMutablePointer<Atomic<UInt32>>) -> UnsafeMutableRawPointer {
        let cache = stripeCache(stripe)
        var n = cache.pointee
        if n == nil {
            // Acquire pairs with the callbacks' releasing pushes.
            n = shared.pointee.freeNodes.exchange(nil, ordering: .acquiring)
        }
        guard let node = n else {
            return UnsafeMutableRawPointer.allocate(byteCount: nodeSize, alignment: 64)
        }
        cache.pointee = node.load(as: UnsafeMutableRawPointer?.self)
        return node
    }

    /// Removes `key` and returns its value, or nil if it was absent. Any
    /// thread; takes the key's stripe lock. The node is freed after a grace
    /// period: lookups that already reached it finish safely.
    @inlinable @discardableResult
    public func remove(_ key: Key) -> UInt? {
        let h = key.rcuHash(seed: seed)
        let stripe = lockStripe(h)
        let array = current.load(ordering: .acquiring)
        let mask = _RCUBucketArray.header(array).pointee.mask
        var link = UnsafeMutableRawPointer(_RCUBucketArray.buckets(array) + (Int(truncatingIfNeeded: h) & mask))
            .assumingMemoryBound(to: Atomic<UnsafeMutableRawPointer?>.self)
        while let n = link.pointee.load(ordering: .relaxed) {
            let node = rcuNodeHeader(n)
            if node.pointee.hash == h && (n + keyOffset).load(as: Key.self) == key {
                let value = node.pointee.value
                // Release: the successor we splice in was published before,
                // and this store must not be seen before those fields by a
                // reader that follows it.
                link.pointee.store(node.pointee.next.load(ordering: .relaxed), ordering: .releasing)
                shared.pointee.count.subtract(1, ordering: .relaxed)
                unlockStripe(stripe)
                // The unlinked node keeps its `next`: a reader standing on it
                // still reaches the rest of the chain.
                shared.pointee.addPending(1)
                Flavor.deferFree(UnsafeMutableRawPointer(n).assumingMemoryBound(to: rcu_head.self), rcuFreeNodeCallback)
                return value
            }
            link = UnsafeMutableRawPointer(node).advanced(by: MemoryLayout<rcu_head>.size)
                .assumingMemoryBound(to: Atomic<UnsafeMutableRawPointer?>.self)
        }
        unlockStripe(stripe)
        return nil
    }

    /// Removes every key (each node freed after a grace period). Any thread.
    public func removeAll() {
        // Registered once for the whole batch of deferFree calls below.
        Flavor.withRegisteredThread { removeAllLocked() }
    }

    private func removeAllLocked() {
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
                shared.pointee.addPending(1)
                Flavor.deferFree(p.assumingMemoryBound(to: rcu_head.self), rcuFreeNodeCallback)
                removed += 1
                guard let nx = next else { break }
                p = nx
            }
        }
        shared.pointee.count.subtract(removed, ordering: .relaxed)
        unlockAllStripes()
    }

    /// Keys in the table (racy while updates run). Any thread.
    public var count: Int { shared.pointee.count.load(ordering: .relaxed) }

    /// Buckets in the current array. Any thread.
    public var bucketCount: Int {
        _RCUBucketArray.header(current.load(ordering: .acquiring)).pointee.mask + 1
    }

    /// A racy snapshot of the counters. Any thread.
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

    // MARK: Internals

    @inlinable
    func findNode(_ key: Key, hash h: UInt64, from first: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
        var p = first
        while let n = p {
            let node = rcuNodeHeader(n)
            if node.pointee.hash == h && (n + keyOffset).load(as: Key.self) == key { return n }
            p = node.pointee.next.load(ordering: .relaxed)
        }
        return nil
    }

    /// Doubles the bucket array until it has more buckets than keys, unless
    /// another thread already grew it past `oldBucketCount`.
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
                let c = UnsafeMutableRawPointer.allocate(byteCount: nodeSize, alignment: 64)
                c.bindMemory(to: _RCUNodeHeader.self, capacity: 1).initialize(to: _RCUNodeHeader(
                    next: slot.pointee.load(ordering: .relaxed), hash: h, value: node.pointee.value, shared: shared))
                (c + keyOffset).copyMemory(from: n + keyOffset, byteCount: MemoryLayout<Key>.size)
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

    @inlinable
    func lockStripe(_ h: UInt64) -> UnsafeMutablePointer<Atomic<UInt32>> {
        let s = stripes + (Int(truncatingIfNeeded: h) & (Self.stripeCount - 1)) * Self.stripeStride
        lock(s)
        return s
    }

    @inlinable
    func lock(_ s: UnsafeMutablePointer<Atomic<UInt32>>) {
        var spins = 0
        // Acquire on success: the previous holder's writes (released by
        // its unlock) are visible in the critical section.
        while !s.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
            repeat {
                spins += 1
                // Yield soon: the holder may be preempted (oversubscription).
                if spins < 100 { spinLoopHint() } else { sched_yield() }
            } while s.pointee.load(ordering: .relaxed) != 0
        }
    }

    @inlinable
    func unlockStripe(_ s: UnsafeMutablePointer<Atomic<UInt32>>) {
        // Release: the critical section's writes happen before the next
        // holder's acquire.
        s.pointee.store(0, ordering: .releasing)
    }

    private func lockAllStripes() {
        // Always in index order, so two resizers cannot deadlock.
        for i in 0..<Self.stripeCount { lock(stripes + i * Self.stripeStride) }
    }

    private func unlockAllStripes() {
        for i in 0..<Self.stripeCount { unlockStripe(stripes + i * Self.stripeStride) }
    }
}
