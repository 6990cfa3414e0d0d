// liburcu's QSBR flavour (quiescent-state-based reclamation).
import CSMPLinux
import CURCU

/// liburcu's QSBR flavour, for dedicated threads (see ``PinnedThread``).
///
/// A registered thread is *online* (a reader at all times, read sections
/// are free) until it calls ``threadOffline()``. It must call
/// ``quiescentState()`` regularly, outside any read section (for example
/// once per loop iteration or every 1024 lookups), or go offline before
/// blocking (sleeping, waiting for I/O, joining). Never use it on Swift
/// concurrency pool threads or other threads you do not own; use
/// ``Bulletproof`` there (see <doc:ChoosingAnRCUFlavor>).
///
/// Read sections marked with ``readLock()``/``readUnlock()`` are free in
/// liburcu (the whole online period is one) and cost the misuse checks a
/// thread-local load and store here: they are what the blocking checks
/// (``synchronize()``, ``barrier()``, ``ThreadParker/park()``, ...) see.
public enum QSBR: RCUFlavor {
    /// "qsbr".
    public static var name: String { "qsbr" }

    /// Registers the calling thread, online: from now on it is a reader
    /// until it goes offline, and must report quiescent states. Takes a
    /// liburcu mutex; traps if the thread is already registered.
    public static func registerThread() {
        let s = _rcuThreadState()
        if s.pointee.qsbr_registered != 0 { _rcuMisuse("QSBR.registerThread() on a thread already registered") }
        urcu_qsbr_register_thread()
        s.pointee.qsbr_registered = 1
        s.pointee.qsbr_online = 1
        s.pointee.qsbr_depth = 0
    }

    /// Unregisters the calling thread (online or offline), outside any read
    /// section. Takes a liburcu mutex; traps if the thread is not registered.
    public static func unregisterThread() {
        let s = _rcuThreadState()
        if s.pointee.qsbr_registered == 0 { _rcuMisuse("QSBR.unregisterThread() on a thread that is not registered") }
        if s.pointee.qsbr_depth != 0 { _rcuMisuse("QSBR.unregisterThread() inside a read section") }
        // Release before leaving the reader set (see shim.h).
        curcu_qsbr_tsan_release()
        urcu_qsbr_unregister_thread()
        s.pointee.qsbr_registered = 0
        s.pointee.qsbr_online = 0
    }

    /// Whether the calling thread is registered with QSBR. Any thread.
    public static var isThreadRegistered: Bool {
        _rcuThreadState().pointee.qsbr_registered != 0
    }

    /// Whether the calling thread is registered and online (a QSBR reader
    /// now). Exact in every build. Any thread.
    public static var isInReadSection: Bool {
        let s = _rcuThreadState()
        return s.pointee.qsbr_registered != 0 && s.pointee.qsbr_online != 0
    }

    /// Marks a read section. A no-op in liburcu (the whole online period
    /// is a read section); here, in every build, it checks that the thread
    /// is registered and online (trapping otherwise) and counts the
    /// nesting: a thread-local load, a compare and a store. Registered,
    /// online threads; sections nest. Synchronous code only: a section
    /// belongs to its thread, and an `await` may resume on another.
    @inlinable
    @available(*, noasync, message: "a read section belongs to its thread; use withReadSection with a synchronous body")
    public static func readLock() {
        let s = _rcuThreadState()
        // qsbr_online is nonzero only while registered: one word tells both.
        if _slowPath(s.pointee.qsbr_online == 0) { _readLockMisuse() }
        s.pointee.qsbr_depth &+= 1
        urcu_qsbr_read_lock()
    }

    /// Ends a read section marked by ``readLock()`` (a no-op in liburcu;
    /// here a thread-local load, a compare and a store that check the
    /// balance, trapping on an unlock without a lock).
    @inlinable
    @available(*, noasync, message: "a read section belongs to its thread; use withReadSection with a synchronous body")
    public static func readUnlock() {
        urcu_qsbr_read_unlock()
        let s = _rcuThreadState()
        if _slowPath(s.pointee.qsbr_depth <= 0) { _rcuMisuse("QSBR.readUnlock() without a matching readLock()") }
        s.pointee.qsbr_depth &-= 1
    }

    /// The cold half of ``readLock()``: says why the thread may not read.
    @usableFromInline @inline(never)
    static func _readLockMisuse() -> Never {
        if _rcuThreadState().pointee.qsbr_registered == 0 {
            _rcuMisuse("QSBR read section on a thread that is not registered (call QSBR.registerThread() first)")
        }
        _rcuMisuse("QSBR read section on an offline thread (call QSBR.threadOnline() first)")
    }

    /// Announces that the calling thread holds no reference to RCU-protected
    /// data. Call it regularly, outside read sections. Costs a load and a
    /// store to the thread's own liburcu reader record (plus a wake-up of a
    /// waiting writer, if any), and the misuse check's thread-local load
    /// and compare (every build). Registered, online threads only, outside
    /// read sections; traps otherwise.
    public static func quiescentState() {
        let s = _rcuThreadState()
        if _slowPath(s.pointee.qsbr_online == 0 || s.pointee.qsbr_depth != 0) {
            if s.pointee.qsbr_registered == 0 { _rcuMisuse("QSBR.quiescentState() on a thread that is not registered") }
            if s.pointee.qsbr_online == 0 { _rcuMisuse("QSBR.quiescentState() on an offline thread") }
            _rcuMisuse("QSBR.quiescentState() inside a read section")
        }
        // Release before the announcement, so a reclaimer that sees it
        // (and acquires) is ordered after this thread's reads (TSan only).
        curcu_qsbr_tsan_release()
        urcu_qsbr_quiescent_state()
    }

    /// Takes the calling thread out of the reader set (an extended
    /// quiescent state) before it blocks. Grace periods do not wait for
    /// offline threads. Registered threads only, outside read sections
    /// (traps otherwise).
    public static func threadOffline() {
        let s = _rcuThreadState()
        if s.pointee.qsbr_registered == 0 { _rcuMisuse("QSBR.threadOffline() on a thread that is not registered") }
        if s.pointee.qsbr_depth != 0 { _rcuMisuse("QSBR.threadOffline() inside a read section") }
        curcu_qsbr_tsan_release()
        urcu_qsbr_thread_offline()
        s.pointee.qsbr_online = 0
    }

    /// Puts the calling thread back in the reader set after
    /// ``threadOffline()``. Registered threads only (traps otherwise).
    public static func threadOnline() {
        let s = _rcuThreadState()
        if s.pointee.qsbr_registered == 0 { _rcuMisuse("QSBR.threadOnline() on a thread that is not registered") }
        urcu_qsbr_thread_online()
        s.pointee.qsbr_online = 1
    }

    /// Runs `body` with the calling thread offline (if it is a registered,
    /// online thread), so that it may block. Any thread, outside read
    /// sections.
    public static func withThreadOffline<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let s = _rcuThreadState()
        guard s.pointee.qsbr_registered != 0, s.pointee.qsbr_online != 0 else { return try body() }
        threadOffline()
        defer { threadOnline() }
        return try body()
    }

    /// Waits for a QSBR grace period. A registered, online caller is taken
    /// offline by liburcu while it waits (so it does not wait for itself),
    /// but must not be inside an explicit read section of any flavour
    /// (traps, in every build). Any thread.
    public static func synchronize() {
        rcuCheckMayBlock("QSBR.synchronize()")
        urcu_qsbr_synchronize_rcu()
        curcu_qsbr_tsan_acquire()
    }

    /// Waits for all pending QSBR callbacks and jobs. liburcu refuses (with
    /// a warning, and without waiting) to run a barrier on an online QSBR
    /// thread, so an online caller is taken offline for the wait. Any
    /// thread but a call_rcu worker, outside explicit read sections of any
    /// flavour (traps, in every build).
    public static func barrier() {
        rcuCheckMayBlock("QSBR.barrier()")
        withThreadOffline { urcu_qsbr_barrier() }
        curcu_qsbr_tsan_acquire()
    }

    /// Queues `callback(head)` for QSBR's call_rcu worker (see
    /// ``RCUFlavor/deferFree(_:_:)``). Fastest from a registered, online
    /// thread; any other thread is brought online for the call.
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

    /// Runs `body` on QSBR's call_rcu worker after a grace period (see
    /// ``RCUFlavor/afterGracePeriod(_:)``); the worker is a registered,
    /// online QSBR thread while `body` runs.
    public static func afterGracePeriod(_ body: sending @escaping () -> Void) {
        GracePeriodJob.schedule(QSBR.self, body, qsbrGracePeriodJob)
    }

    /// Tells ThreadSanitizer that a QSBR grace period has ended (see
    /// ``RCUFlavor/gracePeriodDidEnd()``). Any thread; free without TSan.
    @inlinable
    public static func gracePeriodDidEnd() {
        curcu_qsbr_tsan_acquire()
    }
}

/// QSBR's job trampoline. liburcu registered the worker with QSBR itself
/// and keeps it online while callbacks run; recording that in the worker's
/// thread state lets a job use this package's read sections and deferred
/// frees there (instead of registering a second time).
private let qsbrGracePeriodJob: RCUCallback = { head in
    QSBR.gracePeriodDidEnd()
    let s = _rcuThreadState()
    s.pointee.qsbr_registered = 1
    s.pointee.qsbr_online = 1
    GracePeriodJob.run(head)
}
