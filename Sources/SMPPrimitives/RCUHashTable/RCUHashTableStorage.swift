// The raw memory of an RCUHashTable: nodes, bucket arrays and the counters
// block that outlives the table. All manually managed: no ARC on the read
// path.
//
//   node:   [rcu_head | next | hash | shared* | key | value]  (64-byte aligned)
//   array:  [rcu_head | mask | shared* | pad][bucket heads ...]
//   shared: counters that outlive the table object until every pending
//           call_rcu callback has run (the callbacks update them).
//
// The node header is not generic (the call_rcu callbacks, C functions,
// read it); key and value follow it at offsets fixed per <Key, Value> by
// ``_RCUNodeLayout``, constants once the table is specialized.
import CURCU
import Glibc
import Synchronization

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
    /// The table's shared counters, for the call_rcu callback.
    @usableFromInline let shared: UnsafeMutablePointer<_RCUTableShared>

    @inlinable @inline(__always)
    init(next: UnsafeMutableRawPointer?, hash: UInt64, shared: UnsafeMutablePointer<_RCUTableShared>) {
        self.rcuHead = rcu_head()
        self.next = Atomic(next)
        self.hash = hash
        self.shared = shared
    }
}

/// Where a node's key and value sit for one key and value type. Key first,
/// so a lookup compares hash and key in the node's first cache line however
/// large the value (a 16-byte key and a word value fill exactly 64 bytes).
@usableFromInline
enum _RCUNodeLayout<Key: BitwiseCopyable, Value: BitwiseCopyable> {
    @inlinable @inline(__always)
    static func roundUp(_ n: Int, _ alignment: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    @inlinable
    static var keyOffset: Int {
        @inline(__always) get { roundUp(MemoryLayout<_RCUNodeHeader>.size, MemoryLayout<Key>.alignment) }
    }

    @inlinable
    static var valueOffset: Int {
        @inline(__always) get { roundUp(keyOffset + MemoryLayout<Key>.size, MemoryLayout<Value>.alignment) }
    }

    /// Bytes per node.
    @inlinable
    static var size: Int { @inline(__always) get { valueOffset + MemoryLayout<Value>.size } }

    /// Node alignment: a cache line (or more, for an over-aligned key or
    /// value).
    @inlinable
    static var alignment: Int {
        @inline(__always) get { max(64, MemoryLayout<Key>.alignment, MemoryLayout<Value>.alignment) }
    }

    /// Fresh memory for one node.
    @inlinable
    static func allocateNode() -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer.allocate(byteCount: size, alignment: alignment)
    }

    /// Initializes a node at `n` (fresh or recycled memory).
    @inlinable @inline(__always)
    static func initializeNode(
        _ n: UnsafeMutableRawPointer, next: UnsafeMutableRawPointer?, hash: UInt64, key: Key, value: Value,
        shared: UnsafeMutablePointer<_RCUTableShared>
    ) {
        n.bindMemory(to: _RCUNodeHeader.self, capacity: 1)
            .initialize(to: _RCUNodeHeader(next: next, hash: hash, shared: shared))
        (n + keyOffset).initializeMemory(as: Key.self, repeating: key, count: 1)
        (n + valueOffset).initializeMemory(as: Value.self, repeating: value, count: 1)
    }

    /// Whether node `n` holds `key` (hash compared first).
    @inlinable @inline(__always)
    static func matches(_ n: UnsafeMutableRawPointer, _ key: Key, hash h: UInt64) -> Bool
    where Key: Equatable {
        rcuNodeHeader(n).pointee.hash == h && (n + keyOffset).load(as: Key.self) == key
    }

    @inlinable @inline(__always)
    static func value(_ n: UnsafeMutableRawPointer) -> Value {
        (n + valueOffset).load(as: Value.self)
    }
}

@inlinable @inline(__always)
func rcuNodeHeader(_ n: UnsafeMutableRawPointer) -> UnsafeMutablePointer<_RCUNodeHeader> {
    n.assumingMemoryBound(to: _RCUNodeHeader.self)
}

/// The link field (`next`) of node `n`, as a bucket-head-like slot.
@inlinable @inline(__always)
func rcuNodeLink(_ n: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UnsafeMutableRawPointer?>> {
    (n + MemoryLayout<rcu_head>.size).assumingMemoryBound(to: Atomic<UnsafeMutableRawPointer?>.self)
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
    /// Bytes per node, for the callbacks (which are not generic).
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

    /// The bucket of hash `h` in array `a`.
    @inlinable @inline(__always)
    static func bucket(_ a: UnsafeMutableRawPointer, _ h: UInt64) -> UnsafeMutablePointer<Atomic<UnsafeMutableRawPointer?>> {
        buckets(a) + (Int(truncatingIfNeeded: h) & header(a).pointee.mask)
    }
}

/// The byte that overwrites freed nodes in debug builds: a reader that
/// wrongly uses a freed node sees keys that never match, values that are
/// nobody's, and a `next` that faults.
let rcuPoisonByte: UInt8 = 0xA5

/// Ends a node's life as a node (debug builds: poisons next, hash, key and
/// value; the rcu_head is left for the free list). Keys and values are
/// bitwise-copyable: nothing to deinitialize past the header.
func rcuPoisonNode(_ node: UnsafeMutableRawPointer, size: Int) {
    rcuNodeHeader(node).deinitialize(count: 1)
    #if DEBUG
    memset(node + MemoryLayout<rcu_head>.size, Int32(rcuPoisonByte), size - MemoryLayout<rcu_head>.size)
    #endif
}
