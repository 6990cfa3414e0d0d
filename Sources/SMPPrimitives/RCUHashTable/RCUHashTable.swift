// A hash-bucket table for read-mostly data under RCU.
//
// Readers (inside a read section of the table's flavour) take no lock and
// write no shared memory: they load the published bucket array, a bucket
// head and the chain links with acquiring loads and compare keys
// (RCUHashTable+Lookup.swift). Updates are serialized per bucket by
// striped spin locks (RCUHashTableStripes.swift, RCUHashTable+Updates.swift);
// a removed or replaced node is freed by liburcu's call_rcu after a grace
// period. The table grows without stopping readers
// (RCUHashTable+Growth.swift): a new, larger bucket array is filled with
// *copies* of every node while updates wait, published with one releasing
// store, and the old array and its nodes are freed after a grace period. A
// reader still on the old array sees exactly the contents the new one
// started with, so a key present across a resize is never missed.
//
// Reclaimed nodes are recycled (RCUHashTableReclamation.swift): the
// call_rcu callback (after the grace period, and after poisoning in debug
// builds) pushes the node on a shared stack, and inserts take nodes from
// it, whole stack at a time, into a per-stripe cache. glibc's cross-thread
// free/malloc pair was a fifth of the rcu-churn writer's time. Nodes go
// back to malloc when the table goes. Under AddressSanitizer the callback
// frees nodes instead, so a use after the grace period is a reported
// use-after-free rather than a silent read of a recycled node. The memory layout is in
// RCUHashTableStorage.swift.
import CURCU
import Synchronization

/// A concurrent hash table mapping keys to plain-data values, with
/// lock-free lookups that write no shared memory (RCU readers) and
/// per-bucket serialized updates.
///
/// Values are any `BitwiseCopyable` type: words (indices, `Unmanaged` or
/// pointer bits of objects whose lifetime you manage) or small structs. A
/// value is stored once per node and never changed in place: readers get
/// a copy of the whole value as it was inserted (``replace(_:value:)``
/// links a new node), never a torn mix. A pointer value read under a read
/// section stays meaningful only as long as its referent outlives that
/// section; the table moves bits and never dereferences them.
///
/// Concurrency contract:
/// - ``lookup(_:)`` may run on any number of threads at once, each inside a
///   read section of `Flavor` (QSBR: a registered, online thread; memb:
///   between `Memb.readLock()` and `Memb.readUnlock()`). It takes no lock,
///   allocates nothing, retains nothing and writes no shared memory.
/// - ``insert(_:value:)``, ``replace(_:value:)``, ``remove(_:)`` and
///   ``removeAll()`` may run on any thread (registered with `Flavor` for
///   speed; see ``RCUFlavor/deferFree(_:_:)``), concurrently with each
///   other and with lookups. Updates to the same bucket stripe are
///   serialized.
/// - A lookup concurrent with an insert or remove of its key may see the
///   key either present or absent, and one concurrent with a replace may
///   see the old or the new value; a key present before and throughout the
///   lookup is always found (replace never hides it), also while the table
///   grows.
/// - Removed and replaced nodes are freed after a grace period of `Flavor`.
///   Dropping the table frees its current nodes at once (no lookup can be
///   running: it would hold a reference) and never waits; nodes already
///   queued are freed by their callbacks.
/// - Memory: one node per key, the 40-byte header, then the key, then the
///   value, 64-byte aligned (64 bytes for a 16-byte key and a word value),
///   and 8 bytes per bucket. Removed nodes are recycled for later inserts,
///   so a table keeps the memory of its peak size until it is dropped
///   (under AddressSanitizer they are freed instead, so ASan can see a
///   use after the grace period).
/// - Hashing: each table draws a secret random seed, so keys chosen to
///   collide (hash flooding) spread like any others: 65,536 keys that
///   share one bucket under the unkeyed hash have a longest chain of about
///   8 here (docs/Security.md).
public final class RCUHashTable<Key: RCUHashKey, Value: BitwiseCopyable, Flavor: RCUFlavor>: @unchecked Sendable {
    // @unchecked Sendable: all mutable state is behind raw pointers, with
    // readers synchronized by acquire/release publication and RCU grace
    // periods, and writers by the stripe locks; the stored properties
    // themselves are immutable. Keys and values cross threads as bit copies
    // (as a PCQ's words do): what a pointer value refers to is the user's.

    @usableFromInline typealias Layout = _RCUNodeLayout<Key, Value>

    /// The current bucket array. Stored with release by a resize (publishing
    /// the array and every node in it); loaded with acquire by everyone.
    @usableFromInline let current: Atomic<UnsafeMutableRawPointer>
    /// The table's secret hash seed (package: tests check it is random
    /// per table; nothing may hand it to the network).
    @usableFromInline package let seed: UInt64
    @usableFromInline let shared: UnsafeMutablePointer<_RCUTableShared>
    /// Striped update locks, one per 64-byte line (RCUHashTableStripes.swift).
    @usableFromInline let stripes: UnsafeMutablePointer<Atomic<UInt32>>

    /// Creates an empty table. Any thread; allocates the bucket array and
    /// the stripe locks, and draws the table's secret hash seed from the
    /// system's random source (getrandom(2)): keys chosen to collide in
    /// the unkeyed hash, or in another table, spread here.
    ///
    /// - Parameter initialBucketCount: rounded up to a power of two, at least
    ///   64. The table doubles its buckets whenever it holds more keys than
    ///   buckets.
    public convenience init(initialBucketCount: Int = 1024) {
        // SystemRandomNumberGenerator reads getrandom(2) on Linux: a fresh
        // secret per table, so keys aimed at one table (or at the unkeyed
        // mix) spread in every other.
        var rng = SystemRandomNumberGenerator()
        self.init(initialBucketCount: initialBucketCount, seed: rng.next())
    }

    /// Creates an empty table hashing with `seed` instead of a random one.
    /// For tests (seed 0 is the unkeyed hash an attacker can compute);
    /// a known seed makes the table floodable.
    package init(initialBucketCount: Int, seed: UInt64) {
        var buckets = Self.stripeCount
        while buckets < initialBucketCount { buckets <<= 1 }
        self.seed = seed
        let shared = UnsafeMutablePointer<_RCUTableShared>.allocate(capacity: 1)
        shared.initialize(to: _RCUTableShared(nodeSize: Layout.size))
        self.shared = shared
        self.current = Atomic(_RCUBucketArray.allocate(bucketCount: buckets, shared: shared))
        self.stripes = Self.allocateStripes()
    }

    deinit {
        // No lookup can be running (it would hold a reference), so the live
        // array and its nodes can go at once.
        let array = current.load(ordering: .acquiring)
        let freed = rcuReleaseChains(array, nodeSize: Layout.size)
        shared.pointee.liveNodes.subtract(freed, ordering: .relaxed)
        _RCUBucketArray.header(array).deinitialize(count: 1)
        array.deallocate()
        freeStripes()
        // Callbacks still queued update `shared`: the last one frees it.
        rcuDropPending(shared, 1)
    }
}
