// A fixed-capacity, bucketized open-addressing hash table under RCU, in the
// style of DPDK's rte_hash (lock-free lookups, key slots from a free list,
// deferred frees behind one grace period per batch).
//
// Memory (RCUBucketTableStorage.swift):
//   buckets: bucketCount x 8 entries, one 64-byte cache line per bucket.
//            An entry is one atomic 64-bit word: 0 when empty, else
//            `occupied | signature << 32 | slot index` (bit 48 marks it
//            occupied, bits 32..47 are 16 bits of the key's hash).
//   slots:   `capacity` key/value pairs, preallocated; a slot is referred
//            to by exactly one entry while its key is in the table.
//   writer:  the update lock, the free-slot stack, the batch of slots
//            awaiting a grace period, and the counters.
//
// Each key has two candidate buckets drawn from one hash. An insert takes
// the first free entry of the first bucket, else of the second (so most
// keys sit in their first bucket and a hit costs one cache line). When
// both are full it makes room by cuckoo displacement, as rte_hash and
// libcuckoo do: a breadth-first search, at most two moves deep, for an
// entry that can move to its own other bucket. A move copies the entry
// word to the other bucket first and clears the old one after, so the key
// is always in at least one entry; a lookup that scanned the key's
// buckets in the wrong order around a move (the new entry before the copy,
// the old one after the clear) could still miss it, so every move bumps a
// move counter between the copy and the clear, and a lookup that misses
// re-checks the counter and scans again if it changed (rte_hash's
// tbl_chng_cnt; the argument is in RCUBucketTable+Lookup.swift). Slots
// never move: a move rewrites which entry refers to a slot, not the slot.
// At the default sizing (two entries per key slot, so at most half the
// entries in use) moves are rare and a refused insert (both buckets full
// even after the search) does not happen in practice; the search still
// fills tables to about 90 %.
//
// Readers (RCUBucketTable+Lookup.swift) take no lock and write nothing:
// one acquiring load per entry, then plain loads of the slot. Updates
// (RCUBucketTable+Updates.swift) are serialized by one writer lock;
// removed and replaced slots are batched and returned to the free stack
// after one grace period per batch (RCUBucketTableReclamation.swift).
import Synchronization

/// Why an insert or replace of an ``RCUBucketTable`` failed.
public enum RCUBucketTableError: Error, Sendable, Equatable {
    /// Every key slot is in use (by a key, or awaiting reclamation after a
    /// grace period even once the pending batch was reclaimed).
    case full
    /// Both candidate buckets of the key are full (8 entries each) and no
    /// displacement of at most two moves makes room. Not seen at the
    /// default sizing (at most half the entries in use); possible when a
    /// table made with few buckets is nearly full.
    case bucketsFull
}

/// A fixed-capacity concurrent hash table for plain-data keys and values,
/// with lock-free lookups that write no shared memory (RCU readers),
/// updates under one writer lock, and no allocation after `init`.
///
/// Modelled on DPDK's rte_hash in lock-free mode with rte_rcu_qsbr: keys
/// and values live in a preallocated array of key slots; buckets of 8
/// entries (one cache line) hold a 16-bit signature and a slot index per
/// entry; each key has two candidate buckets, and an insert whose buckets
/// are both full moves other keys' entries to their other buckets (cuckoo
/// displacement). A lookup of a key present throughout is never missed:
/// a lookup that misses while a move ran scans again. Removed slots are
/// reused only after a grace period of `Flavor`, batched: one grace period
/// per ``reclaimBatch`` removes, so at most that many slots wait.
///
/// Capacity is fixed at ``init(capacity:reclaimBatch:)`` (as rte_hash's
/// is); the table never grows. Size it for the most keys you will hold
/// plus ``reclaimBatch`` (slots waiting for their grace period).
///
/// Concurrency contract:
/// - ``lookup(_:)`` may run on any number of threads at once, each inside a
///   read section of `Flavor` (QSBR: a registered, online thread; memb and
///   bp: between `readLock()` and `readUnlock()`). It takes no lock,
///   allocates nothing, retains nothing and writes no shared memory: one
///   acquiring load of the move counter, at most 16 acquiring loads of
///   entries and one key comparison per signature match (a miss scans
///   again only if a displacement completed meanwhile).
/// - ``insert(_:value:)``, ``replace(_:value:)``, ``remove(_:)`` and
///   ``reclaim()`` may run on any thread, concurrently with each other
///   (serialized by one spin lock) and with lookups, but never inside an
///   explicit read section of any flavour: when the batch of pending slots
///   is full (or the free stack is empty) they wait for one grace period of
///   `Flavor` (``RCUFlavor/synchronize()``, which traps inside a read
///   section) before reusing the batch. A registered, online QSBR thread
///   may update (liburcu takes it offline for the wait). Other writers
///   wait for the lock meanwhile; readers never wait.
/// - A lookup concurrent with an insert or remove of its key may see the
///   key present or absent; one concurrent with a replace sees the old or
///   the new value, whole (a replace writes a fresh slot and swaps the
///   entry's slot index with one atomic store).
/// - Cost: no allocation and no reference counting per operation; updates
///   cost the lock, a scan of the key's two buckets (an insert into two
///   full buckets also a search of at most 144 entries and up to two
///   moves) and, once per ``reclaimBatch`` removes, one grace period.
/// - Dropping the table frees its memory at once (no lookup can be running:
///   it would hold a reference); there is no deferred callback to outlive it.
/// - Hashing: a per-table secret seed, as ``RCUHashTable``'s.
public final class RCUBucketTable<Key: RCUHashKey, Value: BitwiseCopyable, Flavor: RCUFlavor>: @unchecked Sendable {
    // @unchecked Sendable: the stored properties are immutable; all mutable
    // state is behind raw pointers, read by lookups through acquire/release
    // publication of entries and protected from reuse by grace periods,
    // and written by updates under the writer lock. Keys and values cross
    // threads as bit copies.

    @usableFromInline typealias Slot = _RCUBucketSlot<Key, Value>

    /// bucketCount * 8 entries, 64-byte aligned.
    @usableFromInline let entries: UnsafeMutablePointer<Atomic<UInt64>>
    /// `capacity` key slots.
    @usableFromInline let slots: UnsafeMutablePointer<Slot>
    /// bucketCount - 1 (a power of two minus one, at least 1).
    @usableFromInline let mask: Int
    /// The table's secret hash seed.
    @usableFromInline package let seed: UInt64
    /// The lock, free stack, pending batch and counters.
    @usableFromInline let writer: UnsafeMutablePointer<_RCUBucketWriter>
    /// Completed displacement moves, alone on a cache line: bumped (release)
    /// by the writer between a move's copy and its clear, loaded (acquire)
    /// by every lookup. Read-mostly: moves are rare.
    @usableFromInline let moves: UnsafeMutablePointer<Atomic<UInt64>>
    /// Key slots.
    public let capacity: Int
    /// Removes per grace period: the most slots that wait for reclamation.
    public let reclaimBatch: Int

    /// Creates an empty table of `capacity` key slots. Any thread;
    /// allocates everything the table will use (slots, buckets, free stack)
    /// and draws a secret hash seed from getrandom(2).
    ///
    /// - Parameters:
    ///   - capacity: key slots, at least 1: the most keys held at once plus
    ///     those removed and not yet reclaimed (up to `reclaimBatch`).
    ///   - reclaimBatch: removes (and replaces) per grace period; at least
    ///     1 (a larger value than `capacity` is taken as `capacity`). Larger batches cost fewer grace periods
    ///     and hold more slots back.
    public convenience init(capacity: Int, reclaimBatch: Int = 1024) {
        var rng = SystemRandomNumberGenerator()
        self.init(capacity: capacity, bucketCount: nil, reclaimBatch: reclaimBatch, seed: rng.next())
    }

    /// Creates an empty table with a given bucket count (rounded up to a
    /// power of two, at least 2; by default the smallest with at least two
    /// entries per slot) and hash seed. For tests and tuning: a known seed
    /// makes the table floodable.
    package init(capacity: Int, bucketCount: Int?, reclaimBatch: Int, seed: UInt64) {
        precondition(capacity >= 1 && capacity < Int(UInt32.max), "RCUBucketTable capacity out of range")
        precondition(reclaimBatch >= 1, "RCUBucketTable reclaimBatch must be at least 1")
        var buckets = 2
        let wanted = bucketCount ?? (capacity + 3) / 4
        while buckets < wanted { buckets <<= 1 }
        self.capacity = capacity
        self.reclaimBatch = min(reclaimBatch, capacity)
        self.mask = buckets - 1
        self.seed = seed
        self.entries = _RCUBucketStorage.allocateEntries(buckets)
        self.slots = .allocate(capacity: capacity)
        self.writer = _RCUBucketWriter.allocate(capacity: capacity, batch: self.reclaimBatch)
        self.moves = _RCUBucketStorage.allocateMoveCounter()
    }

    deinit {
        // No lookup can be running (it would hold a reference) and no
        // callback was queued: everything goes now.
        _RCUBucketStorage.freeEntries(entries, mask + 1)
        slots.deallocate()
        _RCUBucketWriter.free(writer)
        _RCUBucketStorage.freeMoveCounter(moves)
    }

    /// Buckets (8 entries each).
    public var bucketCount: Int { mask + 1 }
}
