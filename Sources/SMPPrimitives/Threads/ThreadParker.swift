import Synchronization

/// Parks one waiter — a thread, or an async task by suspension — until a
/// producer wakes it; producers pay for the wake-up only when the waiter
/// announced that it parks.
///
/// The protocol is the classic flag, re-check, sleep handshake (Dekker):
///
///     waiter                                  producer
///     prepareToPark(): armed = 1; fence       publish work        (release)
///     re-check every work source              fence               (seq_cst)
///     found work: cancelPark()                ringIfArmed(): load armed
///     else: park() sleeps while armed == 1      == 1: exchange to 0, signal
///
/// ## Orderings (C++/Swift memory model)
///
/// Both sides are store, sequentially consistent fence, load: the waiter
/// stores `armed` and loads the work sources, the producer stores its work
/// and loads `armed`. The two fences are ordered in the single total order
/// S of sequentially consistent operations. If the waiter's fence comes
/// first, the producer's load (after its fence) sees `armed == 1` and
/// rings; if the producer's fence comes first, the waiter's re-check
/// (after its fence) sees the work and does not sleep. They cannot both
/// miss, whatever orderings the re-check's own loads use. The producer's
/// common case, the waiter running, is one relaxed load of a word the
/// waiter rarely writes: no shared write, no system call.
///
/// Sleeping is a pthread mutex and condition variable (visible to the
/// thread sanitizer; see ``PthreadMutex``). The ringer clears `armed`
/// (acquire-release exchange, so that of several ringers exactly one
/// signals) before it takes the mutex; the waiter tests `armed` under the
/// mutex before each `pthread_cond_wait`. So a ring either lands before
/// that test (the waiter does not sleep) or waits for the mutex, which the
/// waiter releases only inside `pthread_cond_wait`, and its signal wakes
/// it: no lost wake-up.
///
/// ## Who may call what
///
/// - The waiter (one thread or task at a time): ``prepareToPark()``, then a
///   re-check, then ``park()``, ``park(timeout:)``, ``parkAsync()`` or
///   ``cancelPark()``.
/// - Producers (any thread, any number): ``ringIfArmed()`` or ``ring()``
///   after publishing and a sequentially consistent fence (one fence may
///   cover a whole burst); ``ringAlways()`` supplies the fence itself
///   (shutdown, close).
///
/// A `~Copyable` struct so that the `armed` word lives inline in its owner
/// (for example next to a socket's queue on its hot cache line): producers
/// check it without touching another object. The sleeping side (mutex and
/// condition) and the async waiter's slot are separate allocations.
public struct ThreadParker: ~Copyable, @unchecked Sendable {
    // @unchecked Sendable: `armed` is atomic; `sleep` and `asyncWaiter`
    // point to memory this value owns for its whole life: `sleep` is never
    // written after `init` (its mutex and condition are thread-safe), and
    // `asyncWaiter` is read and written only while holding that mutex.
    @usableFromInline let armed = Atomic<Int>(0)
    private let sleep: UnsafeMutablePointer<Sleep>
    /// A suspended ``parkAsync()`` caller, guarded by `sleep.mutex`. Its own
    /// allocation: writing it must not be a (formal) write of `Sleep`,
    /// which other threads read, unlocked, to reach the mutex.
    private let asyncWaiter: UnsafeMutablePointer<CheckedContinuation<Void, Never>?>

    /// The sleeping side: what only a parking waiter and a ringer that
    /// found it armed touch.
    private struct Sleep: ~Copyable {
        let mutex = PthreadMutex()
        let condition = PthreadCondition()
    }

    /// Creates a parker with no waiter (a few allocations for the sleeping
    /// side, never touched while nobody parks).
    public init() {
        sleep = .allocate(capacity: 1)
        sleep.initialize(to: Sleep())
        asyncWaiter = .allocate(capacity: 1)
        asyncWaiter.initialize(to: nil)
    }

    deinit {
        sleep.deinitialize(count: 1)
        sleep.deallocate()
        asyncWaiter.deinitialize(count: 1)
        asyncWaiter.deallocate()
    }

    /// Waiter: announces the intent to park. Follow it with a re-check of
    /// every work source, then ``park()`` (or a variant) if nothing was
    /// found, ``cancelPark()`` otherwise.
    ///
    /// A relaxed store and a sequentially consistent fence (the waiter's
    /// half of the handshake above).
    @inlinable
    public func prepareToPark() {
        armed.store(1, ordering: .relaxed)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Waiter: the re-check found work; withdraws the announcement (a
    /// relaxed store: a producer that still rings only costs a signal).
    @inlinable
    public func cancelPark() {
        armed.store(0, ordering: .relaxed)
    }

    /// True while the waiter has announced that it parks. A relaxed load:
    /// producers call it after their fence. Any thread.
    @inlinable
    public var isArmed: Bool { armed.load(ordering: .relaxed) != 0 }

    /// Waiter (thread): blocks until rung; returns at once if it already
    /// was since ``prepareToPark()``. Never inside an explicit RCU read
    /// section (of any flavour): that traps, in every build, before
    /// blocking.
    public func park() {
        rcuCheckMayBlock("ThreadParker.park()")
        sleep.pointee.mutex.lock()
        // Acquire pairs with the ringer's exchange: what it published before
        // ringing is visible once we return.
        while armed.load(ordering: .acquiring) != 0 {
            sleep.pointee.condition.wait(sleep.pointee.mutex)
        }
        sleep.pointee.mutex.unlock()
    }

    /// Waiter (thread): blocks until rung or until `timeout` has passed
    /// (on the monotonic clock), then withdraws the announcement. Never
    /// inside an explicit RCU read section (traps, as ``park()``).
    public func park(timeout: Duration) {
        rcuCheckMayBlock("ThreadParker.park(timeout:)")
        let deadline = monotonicNanoseconds() &+ timeout.nanosecondsRoundedUp
        sleep.pointee.mutex.lock()
        while armed.load(ordering: .acquiring) != 0 {
            if !sleep.pointee.condition.wait(sleep.pointee.mutex, untilMonotonicNanoseconds: deadline) { break }
        }
        sleep.pointee.mutex.unlock()
        armed.store(0, ordering: .relaxed)
    }

    /// Waiter (async task): suspends until rung; resumes at once if it
    /// already was. Never hold an RCU read section across this call.
    public func parkAsync() async {
        // Copies of the pointers: the closure must not capture `self` (a
        // noncopyable value) across the suspension.
        let sleep = self.sleep, slot = self.asyncWaiter
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            sleep.pointee.mutex.lock()
            if armed.load(ordering: .acquiring) == 0 {
                sleep.pointee.mutex.unlock()
                c.resume()
            } else {
                slot.pointee = c
                sleep.pointee.mutex.unlock()
            }
        }
    }

    /// Producer: wakes the waiter if it is parked or about to park. Call
    /// after a sequentially consistent fence that follows the publication
    /// of the work. Any thread; one relaxed load when nobody waits.
    /// - Returns: true if this call woke the waiter.
    @inlinable
    @discardableResult
    public func ringIfArmed() -> Bool {
        guard isArmed else { return false }
        return ring()
    }

    /// Producer: like ``ringIfArmed()`` without the preliminary load (for
    /// callers that just checked ``isArmed``): an atomic exchange, then,
    /// if the waiter was armed, the mutex and a signal. Any thread.
    /// - Returns: true if this call woke the waiter.
    @discardableResult
    public func ring() -> Bool {
        // The exchange makes exactly one ringer do the (expensive) signal;
        // release publishes the ringer's work to the waiter's acquire.
        guard armed.exchange(0, ordering: .acquiringAndReleasing) != 0 else { return false }
        // The slot through a local copy of its pointer: `take()` through
        // the stored property is instrumented (with -sanitize=thread) as a
        // modifying access of the property itself, which `parkAsync()`
        // reads without the mutex, and TSan reported the two as racing
        // (a formal access only: the pointer never changes after `init`).
        let slot = asyncWaiter
        sleep.pointee.mutex.lock()
        let waiter = slot.pointee.take()
        sleep.pointee.condition.signal()
        sleep.pointee.mutex.unlock()
        waiter?.resume()
        return true
    }

    /// Wakes the waiter if armed, supplying the fence itself (shutdown,
    /// close). Any thread.
    public func ringAlways() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        _ = ring()
    }
}
