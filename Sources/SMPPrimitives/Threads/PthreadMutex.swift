import Glibc

/// A pthread mutex in its own, never moving allocation: the package's one
/// blocking lock.
///
/// Why pthread and not `Synchronization.Mutex`: both are futex locks of the
/// same cost, but the thread sanitizer intercepts `pthread_mutex_*` and so
/// sees the happens-before edge of every hand-off, while a contended
/// `Mutex` hands over through the priority-inheritance futex inside the
/// (uninstrumented) standard library: TSan misses that edge and reports
/// false races on the data the lock guards. The lock-free code of this
/// package is checked under TSan, so its locks must be visible to it.
///
/// A `~Copyable` struct holding a pointer: a pthread mutex must not move
/// while in use, so it lives in its own allocation (made by `init`, freed
/// by `deinit`) and the struct, which may move, only refers to it. Store it
/// in a `let` of a `Sendable` owner (or in owned raw memory with
/// `UnsafeMutablePointer<PthreadMutex>`); every method is `borrowing`.
///
/// Concurrency contract: any thread may lock; the thread that locked must
/// unlock (a default, non-recursive mutex: relocking from the owner
/// deadlocks). Unlock happens-before the next lock's return, as POSIX
/// specifies (an acquire/release pair in the C++/Swift memory model).
/// Uncontended lock and unlock are one atomic read-modify-write each
/// (glibc); contention costs a `futex` system call.
public struct PthreadMutex: ~Copyable, @unchecked Sendable {
    // @unchecked Sendable: the pointer is to memory this value owns for its
    // whole life and that is only used through pthread calls, which are
    // thread-safe.
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>

    /// Creates an unlocked mutex (one allocation).
    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let rc = pthread_mutex_init(mutex, nil)
        precondition(rc == 0, "pthread_mutex_init failed: \(rc)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Blocks until the calling thread holds the mutex.
    @inlinable
    public func lock() {
        let rc = pthread_mutex_lock(mutex)
        assert(rc == 0, "pthread_mutex_lock failed: \(rc)")
    }

    /// Takes the mutex if it is free; never blocks.
    /// - Returns: true if the calling thread now holds it.
    @inlinable
    public func tryLock() -> Bool {
        pthread_mutex_trylock(mutex) == 0
    }

    /// Releases the mutex. Only the thread that holds it.
    @inlinable
    public func unlock() {
        let rc = pthread_mutex_unlock(mutex)
        assert(rc == 0, "pthread_mutex_unlock failed: \(rc)")
    }

    /// Runs `body` while holding the mutex (released also when `body`
    /// throws). Any thread; blocks while another thread holds the mutex.
    /// `body` must not lock the same mutex again (non-recursive: that
    /// deadlocks).
    @inlinable
    public func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// A pthread condition variable on the monotonic clock, used with a
/// ``PthreadMutex`` (see there why pthread).
///
/// The classic monitor: a waiter holds the mutex, tests its predicate and
/// calls ``wait(_:)``, which releases the mutex while it sleeps and retakes
/// it before returning; a signaller changes the state under the same mutex
/// and then signals. Spurious wake-ups happen: waiters loop on their
/// predicate.
///
/// Concurrency contract: ``wait(_:)`` and ``wait(_:untilMonotonicNanoseconds:)``
/// only while holding the mutex passed (always the same one for one
/// condition); ``signal()`` and ``broadcast()`` from any thread, with or
/// without the mutex. A `~Copyable` struct over a never moving allocation,
/// like ``PthreadMutex``.
public struct PthreadCondition: ~Copyable, @unchecked Sendable {
    // @unchecked Sendable: owned memory used only through pthread calls.
    @usableFromInline let cond: UnsafeMutablePointer<pthread_cond_t>

    /// Creates a condition whose timed waits use `CLOCK_MONOTONIC` (immune
    /// to wall-clock changes; deadlines come from ``monotonicNanoseconds()``).
    public init() {
        cond = .allocate(capacity: 1)
        cond.initialize(to: pthread_cond_t())
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        let rc = pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
        precondition(rc == 0, "pthread_cond_init failed: \(rc)")
    }

    deinit {
        pthread_cond_destroy(cond)
        cond.deallocate()
    }

    /// Releases `mutex`, sleeps until signalled (or spuriously), retakes
    /// `mutex`. The caller holds `mutex`.
    @inlinable
    public func wait(_ mutex: borrowing PthreadMutex) {
        pthread_cond_wait(cond, mutex.mutex)
    }

    /// Like ``wait(_:)``, but returns by the monotonic time `deadline` (in
    /// nanoseconds, as ``monotonicNanoseconds()`` counts) at the latest.
    /// - Returns: false if the deadline passed, true if woken (possibly
    ///   spuriously).
    @inlinable
    @discardableResult
    public func wait(_ mutex: borrowing PthreadMutex, untilMonotonicNanoseconds deadline: Int) -> Bool {
        let d = max(0, deadline)
        var ts = timespec(tv_sec: d / 1_000_000_000, tv_nsec: d % 1_000_000_000)
        return pthread_cond_timedwait(cond, mutex.mutex, &ts) != ETIMEDOUT
    }

    /// Wakes one waiter, if any.
    @inlinable
    public func signal() { pthread_cond_signal(cond) }

    /// Wakes every waiter.
    @inlinable
    public func broadcast() { pthread_cond_broadcast(cond) }
}

/// A value guarded by a ``PthreadMutex``: the `Synchronization.Mutex`
/// shape (`withLock` with `inout` access) for state that several threads
/// contend for and whose hand-offs ThreadSanitizer must see (see
/// ``PthreadMutex`` for why a contended `Mutex` hides them).
///
/// Concurrency contract: any thread; `withLock` blocks while another
/// thread holds the lock and must not be re-entered from its own body.
/// One allocation for the object and one for the mutex, at init.
package final class PthreadLockedValue<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is only touched inside `withLock`, that
    // is while holding `mutex`.
    private let mutex = PthreadMutex()
    private var value: Value

    /// A lock around `value`.
    package init(_ value: Value) { self.value = value }

    /// Runs `body` on the value while holding the lock.
    package func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        try mutex.withLock { () throws(E) -> R in try body(&value) }
    }
}
