// liburcu's membarrier flavour.
import CURCU

/// liburcu's membarrier flavour, for any thread (including Swift
/// concurrency pool threads, as long as a read section never spans an
/// `await`).
///
/// Read sections are explicit: ``readLock()``/``readUnlock()`` update the
/// thread's own reader record (no shared write); grace periods use the
/// `membarrier` system call to order them. Threads must register before
/// their first read section.
public enum Memb: RCUFlavor {
    /// "memb".
    public static var name: String { "memb" }

    /// Registers the calling thread as a memb reader. Takes a liburcu mutex;
    /// traps if the thread is already registered.
    public static func registerThread() {
        let s = _rcuThreadState()
        if s.pointee.memb_registered != 0 { _rcuMisuse("Memb.registerThread() on a thread already registered") }
        urcu_memb_register_thread()
        s.pointee.memb_registered = 1
        s.pointee.memb_depth = 0
    }

    /// Unregisters the calling thread, outside any read section. Takes a
    /// liburcu mutex; traps if the thread is not registered.
    public static func unregisterThread() {
        let s = _rcuThreadState()
        if s.pointee.memb_registered == 0 { _rcuMisuse("Memb.unregisterThread() on a thread that is not registered") }
        #if DEBUG
        if s.pointee.memb_depth != 0 { _rcuMisuse("Memb.unregisterThread() inside a read section") }
        #endif
        urcu_memb_unregister_thread()
        s.pointee.memb_registered = 0
    }

    /// Whether the calling thread is registered with memb. Any thread.
    public static var isThreadRegistered: Bool {
        _rcuThreadState().pointee.memb_registered != 0
    }

    /// Whether the calling thread is inside a memb read section (debug
    /// builds: the package's nesting count; release builds: liburcu's
    /// reader record). Registered threads.
    public static var isInReadSection: Bool {
        #if DEBUG
        return _rcuThreadState().pointee.memb_depth > 0
        #else
        return urcu_memb_read_ongoing() != 0
        #endif
    }

    /// Starts a read section: a call into liburcu that updates the thread's
    /// own reader record (no shared write). Registered threads;
    /// sections nest.
    @inlinable
    public static func readLock() {
        #if DEBUG
        _debugReadLock()
        #endif
        urcu_memb_read_lock()
    }

    /// Ends the innermost read section (the outermost one ends the
    /// thread's participation in grace periods that wait for it).
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

    /// Waits for a memb grace period (`membarrier` plus waiting for the
    /// readers). Any thread outside a memb read section.
    public static func synchronize() {
        #if DEBUG
        if _rcuThreadState().pointee.memb_depth != 0 { _rcuMisuse("Memb.synchronize() inside a read section") }
        #endif
        urcu_memb_synchronize_rcu()
        curcu_memb_tsan_acquire()
    }

    /// Waits for all pending memb callbacks and jobs. Any thread but a
    /// call_rcu worker, outside a memb read section.
    public static func barrier() {
        #if DEBUG
        if _rcuThreadState().pointee.memb_depth != 0 { _rcuMisuse("Memb.barrier() inside a read section") }
        #endif
        urcu_memb_barrier()
        curcu_memb_tsan_acquire()
    }

    /// Queues `callback(head)` for memb's call_rcu worker (see
    /// ``RCUFlavor/deferFree(_:_:)``). Fastest from a registered thread;
    /// any other thread is registered for the call.
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

    /// Runs `body` on memb's call_rcu worker after a grace period (see
    /// ``RCUFlavor/afterGracePeriod(_:)``); the worker is a registered memb
    /// thread, outside any read section, while `body` runs.
    public static func afterGracePeriod(_ body: sending @escaping () -> Void) {
        GracePeriodJob.schedule(Memb.self, body, membGracePeriodJob)
    }

    /// Tells ThreadSanitizer that a memb grace period has ended (see
    /// ``RCUFlavor/gracePeriodDidEnd()``). Any thread; free without TSan.
    @inlinable
    public static func gracePeriodDidEnd() {
        curcu_memb_tsan_acquire()
    }
}

/// memb's job trampoline: records the registration liburcu made for its
/// worker (see `qsbrGracePeriodJob`).
private let membGracePeriodJob: RCUCallback = { head in
    Memb.gracePeriodDidEnd()
    _rcuThreadState().pointee.memb_registered = 1
    GracePeriodJob.run(head)
}
