// liburcu's "bulletproof" flavour (urcu-bp): read sections on threads the
// program does not own.
import CSMPLinux
import CURCU

/// liburcu's bulletproof flavour, for threads you do not own: Swift
/// concurrency's pool threads, callbacks from C libraries, any thread that
/// may exit without warning.
///
/// Registration is automatic. liburcu-bp registers a thread on its first
/// read lock (once per thread: a mutex, with signals blocked) and stores
/// its reader record in a pthread key whose destructor removes the record
/// from the registry when the thread exits. So a thread may take read
/// sections without any set-up and exit at any time (outside a section)
/// without unregistering, and grace periods never wait for, nor read the
/// record of, a thread that is gone. (``Memb`` keeps a registered
/// thread's record, in that thread's own storage, until it unregisters.)
///
/// Read sections are explicit, as memb's: ``readLock()``/``readUnlock()``
/// update the thread's own reader record (no shared write; ordered by the
/// `membarrier` system call on the grace-period side), after the misuse
/// checks' nesting count. The cost over memb is a registration test on
/// every lock. See <doc:ChoosingAnRCUFlavor> for which flavour fits which
/// thread.
public enum Bulletproof: RCUFlavor {
    /// "bp".
    public static var name: String { "bp" }

    /// Registers the calling thread now rather than on its first read lock
    /// (moves the one-time mutex out of that lock). Optional and
    /// idempotent, unlike the other flavours' (it never traps). Any thread.
    public static func registerThread() {
        urcu_bp_register_thread()
    }

    /// A no-op, as liburcu-bp's: a thread leaves the reader set when it
    /// exits. Outside a bp read section (traps otherwise, as the other
    /// flavours do). Any thread.
    public static func unregisterThread() {
        if _rcuThreadState().pointee.bp_depth != 0 { _rcuMisuse("Bulletproof.unregisterThread() inside a read section") }
    }

    /// Always true: every thread may take bp read sections (liburcu-bp
    /// registers it on its first one).
    public static var isThreadRegistered: Bool { true }

    /// Whether the calling thread is inside a bp read section (the
    /// package's nesting count, exact in every build). Any thread.
    public static var isInReadSection: Bool {
        _rcuThreadState().pointee.bp_depth > 0
    }

    /// Starts a read section: the nesting count (a thread-local load and
    /// store), then a call into liburcu-bp that registers the thread if
    /// this is its first section and updates its own reader record (no
    /// shared write). Any thread; sections nest. Synchronous code only: a
    /// section belongs to its thread, and an `await` may resume on another.
    @inlinable
    @available(*, noasync, message: "a read section belongs to its thread; use withReadSection with a synchronous body")
    public static func readLock() {
        _rcuThreadState().pointee.bp_depth &+= 1
        urcu_bp_read_lock()
    }

    /// Ends the innermost read section. Traps on an unlock without a lock.
    @inlinable
    @available(*, noasync, message: "a read section belongs to its thread; use withReadSection with a synchronous body")
    public static func readUnlock() {
        let s = _rcuThreadState()
        if _slowPath(s.pointee.bp_depth <= 0) { _rcuMisuse("Bulletproof.readUnlock() without a matching readLock()") }
        s.pointee.bp_depth &-= 1
        // Release before the section ends (TSan only; see shim.h).
        curcu_bp_tsan_release()
        urcu_bp_read_unlock()
    }

    /// Waits for a bp grace period (`membarrier` plus waiting for the
    /// registered readers; threads that exited are no longer registered).
    /// Any thread outside read sections of every flavour (traps otherwise).
    public static func synchronize() {
        rcuCheckMayBlock("Bulletproof.synchronize()")
        urcu_bp_synchronize_rcu()
        curcu_bp_tsan_acquire()
    }

    /// Waits for all pending bp callbacks and jobs. Any thread but a
    /// call_rcu worker, outside read sections of every flavour (traps
    /// otherwise).
    public static func barrier() {
        rcuCheckMayBlock("Bulletproof.barrier()")
        urcu_bp_barrier()
        curcu_bp_tsan_acquire()
    }

    /// Queues `callback(head)` for bp's call_rcu worker (see
    /// ``RCUFlavor/deferFree(_:_:)``). Any thread, with no registration
    /// step: the enqueue's own read section registers a new thread.
    public static func deferFree(_ head: UnsafeMutablePointer<rcu_head>, _ callback: RCUCallback) {
        curcu_bp_tsan_release()  // see QSBR.deferFree
        urcu_bp_call_rcu(head, callback)
    }

    /// Runs `body` on bp's call_rcu worker after a grace period (see
    /// ``RCUFlavor/afterGracePeriod(_:)``); `body` may take bp read
    /// sections there like on any thread.
    public static func afterGracePeriod(_ body: sending @escaping () -> Void) {
        GracePeriodJob.schedule(Bulletproof.self, body, bpGracePeriodJob)
    }

    /// Tells ThreadSanitizer that a bp grace period has ended (see
    /// ``RCUFlavor/gracePeriodDidEnd()``). Any thread; free without TSan.
    @inlinable
    public static func gracePeriodDidEnd() {
        curcu_bp_tsan_acquire()
    }
}

/// bp's job trampoline (no registration to record: bp has none).
private let bpGracePeriodJob: RCUCallback = { head in
    Bulletproof.gracePeriodDidEnd()
    GracePeriodJob.run(head)
}
