// The raw memory of an RCUBucketTable: entries, key slots and the writer's
// block. All preallocated at init and manually managed: no allocation and
// no ARC after init.
import Synchronization

/// One key slot: the key and its value, written by the writer before the
/// entry that refers to the slot is published, read by lookups after they
/// acquire that entry, and rewritten only after a grace period once no
/// entry refers to the slot.
@usableFromInline
struct _RCUBucketSlot<Key: BitwiseCopyable, Value: BitwiseCopyable>: BitwiseCopyable {
    @usableFromInline var key: Key
    @usableFromInline var value: Value

    @inlinable @inline(__always)
    init(key: Key, value: Value) {
        self.key = key
        self.value = value
    }
}

/// The entry word's format: `occupied | signature << 32 | slot index`.
@usableFromInline
enum _RCUBucketEntry {
    @inlinable static var perBucket: Int { 8 }
    /// Set in every tag (bit 48 of an occupied entry's word), so
    /// `tag(of:)` of an empty entry (0) never equals a key's tag.
    @inlinable static var occupied: UInt64 { 1 << 16 }

    /// The occupied bit and 16 bits of the hash, in the entry's top half:
    /// what a lookup compares before touching the slot. The top 16 bits of
    /// the hash: the bucket indices use the low bits.
    @inlinable @inline(__always)
    static func tag(_ h: UInt64) -> UInt64 { occupied | (h >> 48) }

    @inlinable @inline(__always)
    static func word(tag: UInt64, slot: Int) -> UInt64 { tag << 32 | UInt64(truncatingIfNeeded: slot) }

    @inlinable @inline(__always)
    static func tag(of word: UInt64) -> UInt64 { word >> 32 }

    @inlinable @inline(__always)
    static func slot(of word: UInt64) -> Int { Int(truncatingIfNeeded: UInt32(truncatingIfNeeded: word)) }
}

enum _RCUBucketStorage {
    /// Zeroed entries (all empty), one bucket per 64-byte line.
    static func allocateEntries(_ buckets: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        let n = buckets * _RCUBucketEntry.perBucket
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * 8, alignment: 64)
        let e = raw.bindMemory(to: Atomic<UInt64>.self, capacity: n)
        for i in 0..<n { (e + i).initialize(to: Atomic(0)) }
        return e
    }

    /// The move counter, zero, alone on a 64-byte line (readers load it on
    /// every lookup; the writer's lock and counters live elsewhere).
    static func allocateMoveCounter() -> UnsafeMutablePointer<Atomic<UInt64>> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        let c = raw.bindMemory(to: Atomic<UInt64>.self, capacity: 1)
        c.initialize(to: Atomic(0))
        return c
    }

    static func freeMoveCounter(_ c: UnsafeMutablePointer<Atomic<UInt64>>) {
        c.deinitialize(count: 1)
        UnsafeMutableRawPointer(c).deallocate()
    }

    static func freeEntries(_ e: UnsafeMutablePointer<Atomic<UInt64>>, _ buckets: Int) {
        e.deinitialize(count: buckets * _RCUBucketEntry.perBucket)
        UnsafeMutableRawPointer(e).deallocate()
    }
}

/// The writer's block: the update lock and, guarded by it, the stack of
/// free slots and the batch of slots awaiting a grace period. The counters
/// are atomics so that statistics may read them racily from any thread;
/// only lock holders store them (relaxed: the lock orders the writers).
@usableFromInline
struct _RCUBucketWriter: ~Copyable {
    /// The update lock (0 free, 1 held), alone on its line with the stacks'
    /// pointers; readers never touch this block.
    @usableFromInline let lock = Atomic<UInt32>(0)
    /// Free slot indices; the top `freeCount` are free.
    @usableFromInline let free: UnsafeMutablePointer<UInt32>
    /// Slots removed since the last grace period (`pendingCount` of them).
    @usableFromInline let pendingSlots: UnsafeMutablePointer<UInt32>
    @usableFromInline let freeCount = Atomic<Int>(0)
    @usableFromInline let pendingCount = Atomic<Int>(0)
    @usableFromInline let peakPending = Atomic<Int>(0)
    @usableFromInline let count = Atomic<Int>(0)
    @usableFromInline let gracePeriods = Atomic<Int>(0)
    @usableFromInline let bucketsFullFailures = Atomic<Int>(0)
    /// Inserts that needed displacement, and the moves they made.
    @usableFromInline let displacedInserts = Atomic<Int>(0)
    @usableFromInline let displacementMoves = Atomic<Int>(0)

    init(capacity: Int, batch: Int) {
        free = .allocate(capacity: capacity)
        // Highest index at the bottom, so slot 0 is taken first (tests see
        // slots in order).
        for i in 0..<capacity { free[i] = UInt32(capacity - 1 - i) }
        freeCount.store(capacity, ordering: .relaxed)
        pendingSlots = .allocate(capacity: batch)
    }

    static func allocate(capacity: Int, batch: Int) -> UnsafeMutablePointer<_RCUBucketWriter> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<_RCUBucketWriter>.stride, alignment: 64)
        let w = raw.bindMemory(to: _RCUBucketWriter.self, capacity: 1)
        w.initialize(to: _RCUBucketWriter(capacity: capacity, batch: batch))
        return w
    }

    static func free(_ w: UnsafeMutablePointer<_RCUBucketWriter>) {
        w.pointee.free.deallocate()
        w.pointee.pendingSlots.deallocate()
        w.deinitialize(count: 1)
        UnsafeMutableRawPointer(w).deallocate()
    }

    /// One attempt at the lock (see `Atomic.tryLockWord`).
    @inlinable @inline(__always)
    func tryLockWriter() -> Bool { lock.tryLockWord() }

    /// Takes the lock, spinning then yielding (see `Atomic.lockWord`).
    @inlinable
    func lockWriter() { lock.lockWord() }

    @inlinable
    func unlockWriter() { lock.unlockWord() }
}
