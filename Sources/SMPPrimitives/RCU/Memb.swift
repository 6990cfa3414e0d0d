// liburcu's membarrier flavour.
import CSMPLinux
import CURCU

/// liburcu's membarrier flavour, for threads you own that register when
/// they start and unregister before they exit (or for a scoped
/// ``RCUFlavor/withRegisteredThread(_:)`` on any thread).
///
/// Read sections are explicit: ``readLock()``/``readUnlock()`` update the
/// thread's own reader record (no shared write); grace periods use the
/// `membarrier` system call to order them. Threads must register before
/// their first read section (a read lock on an unregistered thread traps,
/// in every build), and must unregister before they exit: liburcu keeps a
/// registered thread's reader record, which lives in that thread's
/// thread-local storage, in its registry, so a thread that exits
/// registered leaves a dangling record that later grace periods read.
/// Threads that may exit without warning (Swift concurrency's pool,
/// callbacks from C libraries) should use ``Bulletproof``; see
/// <doc:ChoosingAnRCUFlavor>.
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
        if s.pointee.memb_depth != 0 { _rcuMisuse("Memb.unregisterThread() inside a read section") }
        urcu_memb_unregister_thread()
        s.pointee.memb_registered = 0
    }

    /// Whether the calling thread is registered with memb. Any thread.
    public static var isThreadRegistered: Bool {
        _rcuThreadState().pointee.memb_registered != 0
    }

    /// Whether the calling thread is inside a memb read section (the
    /// package's nesting count, exact in every build). Any thread.
    public static var isInReadSection: Bool {
        _rcuThreadState().pointee.memb_depth > 0
    }

    /// Starts a read section: the misuse check (a thread-local load and
    /// compare: traps if the thread is not registered) and the nesting
    /// count (a store), then a call into liburcu that updates the thread's
    /// own reader record (no shared write). Registered threads; sections
    /// nest. Synchronous code only: a section belongs to its thread, and
    /// an `await` may resume on another.
    @inlinable
    @available(*, noasync, message: "a read section belongs to its thread; use withReadSection with a synchronous body")
    public static func readLock() {
        let s = _rcuThreadState()
        if _slowPath(s.pointee.memb_registered == 0) {
            _rcuMisuse("Memb read section on a thread that is not registered (call Memb.registerThread() first)")
        }
        s.pointee.memb_depth &+= 1
        urcu_memb_read_lock()
    }

    /// Ends the innermost read section (the outermost one ends the
    /// thread's participation in grace periods that wait for it). Traps on
    /// an unlock without a lock.
    @inlinable
    @available(*, noasync, message: "a read section belongs to its thread; use withReadSection with a synchronous body")
    public static func readUnlock() {
        let s = _rcuThreadState()
        if _slowPath(s.pointee.memb_depth <= 0) { _rcuMisuse("Memb.readUnlock() without a matching readLock()") }
        s.pointee.memb_depth &-= 1
        // Release before the section ends (TSan only; see shim.h).
        curcu_memb_tsan_release()
        urcu_memb_read_unlock()
    }

    /// Waits for a memb grace period (`membarrier` plus waiting for the
    /// readers). Any thread outside read sections of every flavour (traps
    /// otherwise: a memb section would deadlock, another flavour's would
    /// hold up its grace periods for the wait).
    public static func synchronize() {
        rcuCheckMayBlock("Memb.synchronize()")
        urcu_memb_synchronize_rcu()
        curcu_memb_tsan_acquire()
    }

    /// Waits for all pending memb callbacks and jobs. Any thread but a
    /// call_rcu worker, outside read sections of every flavour (traps
    /// otherwise).
    public static func barrier() {
        rcuCheckMayBlock("Memb.barrier()")
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
