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
// Each key has two candidate buckets drawn from one hash (two choices, no
// cuckoo displacement): an entry never moves once written, so a reader
// scanning both buckets cannot miss a key present throughout its lookup,
// and needs no change counter (rte_hash's tbl_chng_cnt exists because its
// cuckoo moves entries between buckets). The price: an insert fails when
// both buckets are full, which the sizing keeps rare (at least two entries
// per key slot by default).
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
    /// Both candidate buckets of the key are full (8 entries each). Rare at
    /// the default sizing; the table does not move entries to make room.
    case bucketsFull
}

/// A fixed-capacity concurrent hash table for plain-data keys and values,
/// with lock-free lookups that write no shared memory (RCU readers),
/// updates under one writer lock, and no allocation after `init`.
///
/// Modelled on DPDK's rte_hash in lock-free mode with rte_rcu_qsbr: keys
/// and values live in a preallocated array of key slots; buckets of 8
/// entries (one cache line) hold a 16-bit signature and a slot index per
/// entry; each key has two candidate buckets. Entries never move, so a
/// lookup of a key present throughout is never missed. Removed slots are
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
///   allocates nothing, retains nothing and writes no shared memory: at
///   most 16 acquiring loads of entries and one key comparison per
///   signature match.
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
///   cost the lock, a scan of the key's two buckets and, once per
///   ``reclaimBatch`` removes, one grace period.
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
    }

    deinit {
        // No lookup can be running (it would hold a reference) and no
        // callback was queued: everything goes now.
        _RCUBucketStorage.freeEntries(entries, mask + 1)
        slots.deallocate()
        _RCUBucketWriter.free(writer)
    }

    /// Buckets (8 entries each).
    public var bucketCount: Int { mask + 1 }
}
