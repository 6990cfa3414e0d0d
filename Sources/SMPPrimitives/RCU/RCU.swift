// RCU (read-copy-update) on liburcu.
//
// Two flavours of liburcu are exposed, as namespaces of static functions:
//
// - ``QSBR`` (quiescent-state-based reclamation) for dedicated threads that
//   run a loop (per-core executors, benchmark readers). Read sections cost
//   nothing: a registered, online thread is always a reader, and grace
//   periods end when every such thread has called ``QSBR/quiescentState()``
//   or gone offline. A registered thread that never does either blocks every
//   grace period forever.
// - ``Memb`` (membarrier) for any other thread. Read sections are real
//   (a thread-local counter, no shared write) and end on ``readUnlock()``.
//
// liburcu is linked dynamically and `_LGPL_SOURCE` is not defined, so the
// calls below are calls into the shared library, except QSBR's read lock
// and unlock, which liburcu itself defines as empty inline functions.
//
// Misuse that can be caught is caught in debug builds with a clear trap:
// a read section or quiescent state on an unregistered thread, synchronize
// or barrier inside a read section, an unbalanced unlock, double
// registration. Registration state is tracked in a C `_Thread_local`
// (release builds too: it is cheap and not on any hot path); read-section
// nesting only in debug builds, so release read sections stay free.
import CURCU

/// liburcu's callback type for ``RCUFlavor/deferFree(_:_:)``: a C function
/// that receives the `rcu_head` embedded in the object to reclaim.
public typealias RCUCallback = @convention(c) (UnsafeMutablePointer<rcu_head>?) -> Void

/// One liburcu flavour: thread registration, read sections, grace periods
/// and deferred reclamation.
///
/// All requirements are static: a flavour is a namespace, chosen at compile
/// time (``RCUHashTable`` is generic over it so that a table's grace periods
/// cover exactly the readers of that flavour).
public protocol RCUFlavor: Sendable {
    /// A short name for diagnostics ("qsbr", "memb").
    static var name: String { get }

    /// Makes the calling thread an RCU reader of this flavour.
    ///
    /// Call once per thread before its first read section; pair with
    /// ``unregisterThread()`` before the thread exits. Takes a liburcu mutex.
    static func registerThread()

    /// Removes the calling thread from this flavour's readers. Must not be
    /// inside a read section.
    static func unregisterThread()

    /// Whether the calling thread is registered with this flavour. Any thread;
    /// reads a thread-local.
    static var isThreadRegistered: Bool { get }

    /// Whether the calling thread may dereference RCU-protected pointers of
    /// this flavour now (QSBR: registered and online; memb: inside a read
    /// section). Exact in debug builds; a best effort in release builds
    /// (QSBR: always exact; memb: true if registered).
    static var isInReadSection: Bool { get }

    /// Starts a read section. The calling thread must be registered.
    /// Sections may nest. Writes no shared memory.
    static func readLock()

    /// Ends the innermost read section.
    static func readUnlock()

    /// Waits until every read section that started before the call has
    /// ended. Must not be called inside a read section of this flavour
    /// (it would wait for itself). Blocks for a grace period (microseconds
    /// to milliseconds). Any thread.
    static func synchronize()

    /// Waits until every callback passed to ``deferFree(_:_:)`` before the
    /// call has run. Must not be called inside a read section. Any thread.
    static func barrier()

    /// Runs `callback(head)` on liburcu's call_rcu worker thread after a
    /// grace period (`call_rcu`). Never blocks.
    ///
    /// `head` must point to an `rcu_head` embedded in the object to reclaim
    /// (at offset 0 by this package's convention, so the callback can free
    /// the head's address). Any thread: an unregistered (or, for QSBR,
    /// offline) caller is registered (brought online) for the duration of
    /// the call, which is slower; registered callers pay only the enqueue.
    static func deferFree(_ head: UnsafeMutablePointer<rcu_head>, _ callback: RCUCallback)

    /// Call this first in every callback passed to ``deferFree(_:_:)``
    /// (and after waiting for a grace period by other means): it tells
    /// ThreadSanitizer that the grace period orders the readers' accesses
    /// before the reclamation. Without TSan it is a not-taken branch.
    static func gracePeriodDidEnd()
}

extension RCUFlavor {
    /// Runs `body` inside a read section of this flavour. The calling
    /// thread must be registered; `body` must not block on a grace period
    /// (and must not `await`: a read section belongs to its thread).
    @inlinable
    public static func withReadSection<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        readLock()
        defer { readUnlock() }
        return try body()
    }

    /// Runs `body` with the calling thread registered with this flavour,
    /// registering and unregistering around it if it was not registered.
    /// For short-lived use from arbitrary threads (tests, set-up code).
    @inlinable
    public static func withRegisteredThread<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        if isThreadRegistered { return try body() }
        registerThread()
        defer { unregisterThread() }
        return try body()
    }
}

// MARK: - Thread-local bookkeeping

// The only caller of curcu_thread_state() (see shim.h: one copy of the
// thread-local per calling object file). Not inlinable for that reason.
@usableFromInline
func _rcuThreadState() -> UnsafeMutablePointer<curcu_thread_state> {
    curcu_thread_state()
}

@usableFromInline
func _rcuMisuse(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError("RCU misuse: " + message, file: file, line: line)
}

// MARK: - QSBR

/// liburcu's QSBR flavour, for dedicated threads (see ``PinnedThread``).
///
/// A registered thread is *online* (a reader at all times, read sections
/// are free) until it calls ``threadOffline()``. It must call
/// ``quiescentState()`` regularly, outside any read section (for example
/// once per loop iteration or every 1024 lookups), or go offline before
/// blocking (sleeping, waiting for I/O, joining). Never use it on Swift
/// concurrency pool threads; use ``Memb`` there.
public enum QSBR: RCUFlavor {
    public static var name: String { "qsbr" }

    public static func registerThread() {
        let s = _rcuThreadState()
        if s.pointee.qsbr_registered != 0 { _rcuMisuse("QSBR.registerThread() on a thread already registered") }
        urcu_qsbr_register_thread()
        s.pointee.qsbr_registered = 1
        s.pointee.qsbr_online = 1
        s.pointee.qsbr_depth = 0
    }

    public static func unregisterThread() {
        let s = _rcuThreadState()
        if s.pointee.qsbr_registered == 0 { _rcuMisuse("QSBR.unregisterThread() on a thread that is not registered") }
        #if DEBUG
        if s.pointee.qsbr_depth != 0 { _rcuMisuse("QSBR.unregisterThread() inside a read section") }
        #endif
        // Release before leaving the reader set (see shim.h).
        curcu_qsbr_tsan_release()
        urcu_qsbr_unregister_thread()
        s.pointee.qsbr_registered = 0
        s.pointee.qsbr_online = 0
    }

    public static var isThreadRegistered: Bool {
        _rcuThreadState().pointee.qsbr_registered != 0
    }

    public static var isInReadSection: Bool {
        let s = _rcuThreadState()
        return s.pointee.qsbr_registered != 0 && s.pointee.qsbr_online != 0
    }

    /// Marks a read section. With QSBR this is a no-op in liburcu (the
    /// whole online period is a read section); debug builds check that the
    /// thread is registered and online and count the nesting.
    @inlinable
    public static func readLock() {
        #if DEBUG
        _debugReadLock()
        #endif
        urcu_qsbr_read_lock()
    }

    @inlinable
    public static func readUnlock() {
        urcu_qsbr_read_unlock()
        #if DEBUG
        _debugReadUnlock()
        #endif
    }

    @usableFromInline
    static func _debugReadLock() {
        let s = _rcuThreadState()
        if s.pointee.qsbr_registered == 0 {
            _rcuMisuse("QSBR read section on a thread that is not registered (call QSBR.registerThread() first)")
        }
        if s.pointee.qsbr_online == 0 {
            _rcuMisuse("QSBR read section on an offline thread (call QSBR.threadOnline() first)")
        }
        s.pointee.qsbr_depth += 1
    }

    @usableFromInline
    static func _debugReadUnlock() {
        let s = _rcuThreadState()
        if s.pointee.qsbr_depth <= 0 { _rcuMisuse("QSBR.readUnlock() without a matching readLock()") }
        s.pointee.qsbr_depth -= 1
    }

    /// Announces that the calling thread holds no reference to RCU-protected
    /// data. Call it regularly, outside read sections. Costs a load and a
    /// store to the thread's own liburcu reader record (plus a wake-up of a
    /// waiting writer, if any). Registered, online threads only.
    public static func quiescentState() {
        #if DEBUG
        let s = _rcuThreadState()
        if s.pointee.qsbr_registered == 0 { _rcuMisuse("QSBR.quiescentState() on a thread that is not registered") }
        if s.pointee.qsbr_online == 0 { _rcuMisuse("QSBR.quiescentState() on an offline thread") }
        if s.pointee.qsbr_depth != 0 { _rcuMisuse("QSBR.quiescentState() inside a read section") }
        #endif
        // Release before the announcement, so a reclaimer that sees it
        // (and acquires) is ordered after this thread's reads (TSan only).
        curcu_qsbr_tsan_release()
        urcu_qsbr_quiescent_state()
    }

    /// Takes the calling thread out of the reader set (an extended
    /// quiescent state) before it blocks. Grace periods do not wait for
    /// offline threads. Registered threads only, outside read sections.
    public static func threadOffline() {
        let s = _rcuThreadState()
        #if DEBUG
        if s.pointee.qsbr_registered == 0 { _rcuMisuse("QSBR.threadOffline() on a thread that is not registered") }
        if s.pointee.qsbr_depth != 0 { _rcuMisuse("QSBR.threadOffline() inside a read section") }
        #endif
        curcu_qsbr_tsan_release()
        urcu_qsbr_thread_offline()
        s.pointee.qsbr_online = 0
    }

    /// Puts the calling thread back in the reader set after
    /// ``threadOffline()``.
    public static func threadOnline() {
        let s = _rcuThreadState()
        #if DEBUG
        if s.pointee.qsbr_registered == 0 { _rcuMisuse("QSBR.threadOnline() on a thread that is not registered") }
        #endif
        urcu_qsbr_thread_online()
        s.pointee.qsbr_online = 1
    }

    /// Runs `body` with the calling thread offline (if it is a registered,
    /// online thread), so that it may block.
    public static func withThreadOffline<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let s = _rcuThreadState()
        guard s.pointee.qsbr_registered != 0, s.pointee.qsbr_online != 0 else { return try body() }
        threadOffline()
        defer { threadOnline() }
        return try body()
    }

    /// Waits for a QSBR grace period. A registered, online caller is taken
    /// offline by liburcu while it waits (so it does not wait for itself),
    /// but must not be inside an explicit read section.
    public static func synchronize() {
        #if DEBUG
        if _rcuThreadState().pointee.qsbr_depth != 0 { _rcuMisuse("QSBR.synchronize() inside a read section") }
        #endif
        urcu_qsbr_synchronize_rcu()
        curcu_qsbr_tsan_acquire()
    }

    /// Waits for all pending QSBR callbacks. liburcu refuses (with a
    /// warning, and without waiting) to run a barrier on an online QSBR
    /// thread, so an online caller is taken offline for the wait.
    public static func barrier() {
        #if DEBUG
        if _rcuThreadState().pointee.qsbr_depth != 0 { _rcuMisuse("QSBR.barrier() inside a read section") }
        #endif
        withThreadOffline { urcu_qsbr_barrier() }
        curcu_qsbr_tsan_acquire()
    }

    public static func deferFree(_ head: UnsafeMutablePointer<rcu_head>, _ callback: RCUCallback) {
        // call_rcu orders the caller's past before the callback, through
        // liburcu's queue (invisible to TSan): release for the callback's
        // gracePeriodDidEnd().
        curcu_qsbr_tsan_release()
        let s = _rcuThreadState()
        if s.pointee.qsbr_registered == 0 {
            // liburcu requires call_rcu callers to be registered (it reads
            // per-CPU call_rcu data under a read section).
            registerThread()
            urcu_qsbr_call_rcu(head, callback)
            unregisterThread()
        } else if s.pointee.qsbr_online == 0 {
            threadOnline()
            urcu_qsbr_call_rcu(head, callback)
            threadOffline()
        } else {
            urcu_qsbr_call_rcu(head, callback)
        }
    }

    @inlinable
    public static func gracePeriodDidEnd() {
        curcu_qsbr_tsan_acquire()
    }
}

// MARK: - Memb

/// liburcu's membarrier flavour, for any thread (including Swift
/// concurrency pool threads, as long as a read section never spans an
/// `await`).
///
/// Read sections are explicit: ``readLock()``/``readUnlock()`` update the
/// thread's own reader record (no shared write); grace periods use the
/// `membarrier` system call to order them. Threads must register before
/// their first read section.
public enum Memb: RCUFlavor {
    public static var name: String { "memb" }

    public static func registerThread() {
        let s = _rcuThreadState()
        if s.pointee.memb_registered != 0 { _rcuMisuse("Memb.registerThread() on a thread already registered") }
        urcu_memb_register_thread()
        s.pointee.memb_registered = 1
        s.pointee.memb_depth = 0
    }

    public static func unregisterThread() {
        let s = _rcuThreadState()
        if s.pointee.memb_registered == 0 { _rcuMisuse("Memb.unregisterThread() on a thread that is not registered") }
        #if DEBUG
        if s.pointee.memb_depth != 0 { _rcuMisuse("Memb.unregisterThread() inside a read section") }
        #endif
        urcu_memb_unregister_thread()
        s.pointee.memb_registered = 0
    }

    public static var isThreadRegistered: Bool {
        _rcuThreadState().pointee.memb_registered != 0
    }

    public static var isInReadSection: Bool {
        #if DEBUG
        return _rcuThreadState().pointee.memb_depth > 0
        #else
        return urcu_memb_read_ongoing() != 0
        #endif
    }

    @inlinable
    public static func readLock() {
        #if DEBUG
        _debugReadLock()
        #endif
        urcu_memb_read_lock()
    }

    @inlinable
    public static func readUnlock() {
        #if DEBUG
        _debugReadUnlock()
        #endif
        // Release before the section ends (TSan only; see shim.h).
        curcu_memb_tsan_release()
        urcu_memb_read_unlock()
    }

    @usableFromInline
    static func _debugReadLock() {
        let s = _rcuThreadState()
        if s.pointee.memb_registered == 0 {
            _rcuMisuse("Memb read section on a thread that is not registered (call Memb.registerThread() first)")
        }
        s.pointee.memb_depth += 1
    }

    @usableFromInline
    static func _debugReadUnlock() {
        let s = _rcuThreadState()
        if s.pointee.memb_depth <= 0 { _rcuMisuse("Memb.readUnlock() without a matching readLock()") }
        s.pointee.memb_depth -= 1
    }

    public static func synchronize() {
        #if DEBUG
        if _rcuThreadState().pointee.memb_depth != 0 { _rcuMisuse("Memb.synchronize() inside a read section") }
        #endif
        urcu_memb_synchronize_rcu()
        curcu_memb_tsan_acquire()
    }

    public static func barrier() {
        #if DEBUG
        if _rcuThreadState().pointee.memb_depth != 0 { _rcuMisuse("Memb.barrier() inside a read section") }
        #endif
        urcu_memb_barrier()
        curcu_memb_tsan_acquire()
    }

    public static func deferFree(_ head: UnsafeMutablePointer<rcu_head>, _ callback: RCUCallback) {
        curcu_memb_tsan_release()  // see QSBR.deferFree
        if _rcuThreadState().pointee.memb_registered == 0 {
            registerThread()
            urcu_memb_call_rcu(head, callback)
            unregisterThread()
        } else {
            urcu_memb_call_rcu(head, callback)
        }
    }

    @inlinable
    public static func gracePeriodDidEnd() {
        curcu_memb_tsan_acquire()
    }
}
