// Per-thread RCU bookkeeping and the misuse checks built on it.
//
// Misuse that can be caught is caught with a clear trap, in every build
// (release included): double registration and unregistering an
// unregistered thread; a read section (or a QSBR quiescent state) on an
// unregistered or, for QSBR, offline thread; an unbalanced unlock; a
// grace-period wait, barrier or other blocking call of the library inside
// an explicit read section of any flavour (rcuCheckMayBlock below).
//
// The record is a C `_Thread_local` (CSMPLinux's smp_rcu_thread_state,
// initial-exec, reached through an inline accessor): a read lock costs one
// thread-local load (the registration word, or the depth) and one store
// (the depth), on the thread's own cache line. A trap's message is built
// in a cold, never-inlined function, so the inlined fast paths carry only
// a compare and a branch.
import CSMPLinux

/// The calling thread's RCU record. Inlined everywhere: the record has one
/// definition (CSMPLinux/linux.c), so every module's copy of the accessor
/// reaches the same thread-local.
@inlinable @inline(__always)
func _rcuThreadState() -> UnsafeMutablePointer<smp_rcu_thread_state> {
    smp_rcu_state()
}

@usableFromInline @inline(never)
func _rcuMisuse(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError("RCU misuse: " + message, file: file, line: line)
}

/// The names of the flavours whose explicit read sections the calling
/// thread is inside ("qsbr, memb"), or "" if none.
func _rcuOpenReadSections() -> String {
    let s = _rcuThreadState()
    var open: [String] = []
    if s.pointee.qsbr_depth != 0 { open.append(QSBR.name) }
    if s.pointee.memb_depth != 0 { open.append(Memb.name) }
    if s.pointee.bp_depth != 0 { open.append(Bulletproof.name) }
    return open.joined(separator: ", ")
}

/// Traps if the calling thread is inside an explicit read section of any
/// flavour (``QSBR``, ``Memb`` or ``Bulletproof``): `operation` is about to
/// block, and a reader that blocks holds up every grace period of its
/// flavour (and deadlocks if what it waits for needs one).
///
/// The library calls it before each of its blocking waits: grace periods
/// and barriers of every flavour, ``ThreadParker/park()``, cross-core
/// calls and full-ring waits. Any thread; a thread-local load and a
/// compare in every build. A QSBR thread that is merely online (outside
/// ``RCUFlavor/readLock()``) passes: QSBR's online period is managed by
/// going offline before blocking, which is the caller's loop's business.
@inline(__always)
package func rcuCheckMayBlock(_ operation: StaticString) {
    let s = _rcuThreadState()
    // One OR of three words on the same line: the common case is a single
    // not-taken branch.
    if _slowPath(s.pointee.qsbr_depth | s.pointee.memb_depth | s.pointee.bp_depth != 0) {
        _rcuBlockingMisuse(operation)
    }
}

@inline(never)
private func _rcuBlockingMisuse(_ operation: StaticString, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError(
        "RCU misuse: \(operation) inside an RCU read section (\(_rcuOpenReadSections())) would block "
            + "while the section holds up every grace period of its flavour (a deadlock if the wait needs one); "
            + "end the read section before blocking",
        file: file, line: line)
}
