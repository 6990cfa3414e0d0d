import Glibc
import Synchronization

/// A wake-up for one parked waiter (a thread or an async task), rung by
/// producers only when the waiter announced that it parks.
///
/// The protocol is the classic "flag, re-check, sleep" (Dekker) handshake:
///
///     waiter                                 producer
///     armed = 1            (seq_cst)         put item            (release)
///     re-check for work    (seq_cst/acquire) fence               (seq_cst)
///     if none: sleep until armed == 0         if armed == 1 (relaxed load):
///                                                 armed.exchange(0) == 1 → signal
///
/// Either the producer's load sees `armed == 1` and rings, or the waiter's
/// re-check sees the item: the two seq_cst operations on each side cannot
/// both miss (StoreLoad ordering on both sides). The producer's common case
/// is one plain load of a line the waiter rarely writes: no shared write.
///
/// Concurrency contract: one waiter at a time (``prepareToPark()``,
/// ``cancelPark()``, ``park()``, ``parkAsync()``); any number of threads may
/// call ``ringIfArmed()`` (after their own fence).
///
/// A `~Copyable` struct so that the `armed` word lives inline in its owner
/// (a ``Socket``'s hot cache line): producers check it without touching
/// another object.
public struct ReaderWakeup: ~Copyable, @unchecked Sendable {
    // @unchecked Sendable: `mutex`/`cond` are pthread objects in stable heap
    // memory used only through pthread calls; `asyncWaiter` points to a slot
    // read and written only while holding `mutex`.
    @usableFromInline let armed = Atomic<Int>(0)
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>
    private let asyncWaiter: UnsafeMutablePointer<CheckedContinuation<Void, Never>?>

    public init() {
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        asyncWaiter = .allocate(capacity: 1)
        asyncWaiter.initialize(to: nil)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
        asyncWaiter.deinitialize(count: 1)
        asyncWaiter.deallocate()
    }

    /// Waiter: announce the intent to park. Must be followed by a re-check
    /// for work, then ``park()`` / ``parkAsync()`` or ``cancelPark()``.
    public func prepareToPark() {
        // seq_cst: the store must be ordered before the waiter's re-check
        // loads (StoreLoad), pairing with the producer's fence.
        armed.store(1, ordering: .sequentiallyConsistent)
    }

    /// Waiter: the re-check found work; withdraw the announcement.
    public func cancelPark() {
        armed.store(0, ordering: .relaxed)
    }

    /// True when the waiter has announced that it parks (a cheap load;
    /// producers call it after their fence).
    @inlinable
    public var isArmed: Bool { armed.load(ordering: .relaxed) != 0 }

    /// Waiter: blocks until rung (returns at once if already rung).
    public func park() {
        pthread_mutex_lock(mutex)
        // The ringer clears `armed` before taking the mutex to signal, so a
        // check under the mutex cannot miss its signal.
        while armed.load(ordering: .acquiring) != 0 {
            pthread_cond_wait(cond, mutex)
        }
        pthread_mutex_unlock(mutex)
    }

    /// Waiter: blocks until rung or until `nanoseconds` passed.
    public func park(timeoutNanoseconds: Int) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var deadline = now
        let total = Int(now.tv_nsec) + timeoutNanoseconds
        deadline.tv_sec += total / 1_000_000_000
        deadline.tv_nsec = total % 1_000_000_000
        pthread_mutex_lock(mutex)
        while armed.load(ordering: .acquiring) != 0 {
            if pthread_cond_timedwait(cond, mutex, &deadline) == ETIMEDOUT { break }
        }
        pthread_mutex_unlock(mutex)
        armed.store(0, ordering: .relaxed)
    }

    /// Waiter (async): suspends until rung. Never hold an RCU read section
    /// across this call.
    public func parkAsync() async {
        // Copies of the pointers: the closure must not capture `self`
        // (a noncopyable value) across the suspension.
        let mutex = self.mutex, slot = self.asyncWaiter
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            pthread_mutex_lock(mutex)
            if armed.load(ordering: .acquiring) == 0 {
                pthread_mutex_unlock(mutex)
                c.resume()
            } else {
                slot.pointee = c
                pthread_mutex_unlock(mutex)
            }
        }
    }

    /// Producer: wakes the waiter if it is parked or about to park.
    /// Call after a sequentially consistent fence that follows the
    /// producer's publication of work. Returns true if this call woke it.
    @inlinable
    @discardableResult
    public func ringIfArmed() -> Bool {
        guard isArmed else { return false }
        return ring()
    }

    @usableFromInline
    package func ring() -> Bool {
        // The exchange makes exactly one ringer do the (expensive) signal.
        guard armed.exchange(0, ordering: .acquiringAndReleasing) != 0 else { return false }
        pthread_mutex_lock(mutex)
        let waiter = asyncWaiter.pointee
        asyncWaiter.pointee = nil
        pthread_cond_signal(cond)
        pthread_mutex_unlock(mutex)
        waiter?.resume()
        return true
    }

    /// Wakes the waiter unconditionally (shutdown, close).
    public func ringAlways() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        _ = ring()
    }
}
