// RCU (read-copy-update) on liburcu: the flavour protocol.
//
// Three flavours of liburcu are exposed, as namespaces of static
// functions (which fits which thread: SMPPrimitives.docc/ChoosingAnRCUFlavor.md):
//
// - ``QSBR`` (quiescent-state-based reclamation, QSBR.swift) for dedicated
//   threads that run a loop (per-core executors, benchmark readers). Read
//   sections cost nothing in liburcu: a registered, online thread is always
//   a reader, and grace periods end when every such thread has called
//   ``QSBR/quiescentState()`` or gone offline. A registered thread that
//   never does either blocks every grace period forever.
// - ``Memb`` (membarrier, Memb.swift) for threads the program owns, which
//   register when they start and unregister before they exit. Read
//   sections are real (a thread-local counter, no shared write) and end on
//   ``RCUFlavor/readUnlock()``.
// - ``Bulletproof`` (urcu-bp, Bulletproof.swift) for threads the program
//   does not own (Swift concurrency's pool, C library callbacks): memb's
//   read sections plus automatic registration, and clean-up at thread exit.
//
// Deferred work after a grace period: ``RCUFlavor/deferFree(_:_:)`` (a C
// callback on an embedded `rcu_head`) and ``RCUFlavor/afterGracePeriod(_:)``
// (a Swift closure, GracePeriodJob.swift). Misuse checks (active in every
// build) and the per-thread record are in RCUMisuseChecks.swift.
//
// liburcu is linked dynamically and `_LGPL_SOURCE` is not defined, so the
// flavours' calls are calls into the shared library, except QSBR's read
// lock and unlock, which liburcu itself defines as empty inline functions
// (here they cost only the misuse checks' thread-local load and store).
import CURCU

/// liburcu's callback type for ``RCUFlavor/deferFree(_:_:)``: a C function
/// that receives the `rcu_head` embedded in the object to reclaim.
public typealias RCUCallback = @convention(c) (UnsafeMutablePointer<rcu_head>?) -> Void

/// One liburcu flavour: thread registration, read sections, grace periods
/// and deferred reclamation.
///
/// All requirements are static: a flavour is a namespace, chosen at compile
/// time (``RCUHashTable`` is generic over it so that a table's grace periods
/// cover exactly the readers of that flavour). The package provides
/// ``QSBR``, ``Memb`` and ``Bulletproof``; the requirements describe their
/// contract.
///
/// Which flavour fits which thread (<doc:ChoosingAnRCUFlavor>):
/// - ``QSBR`` for threads that run a loop you own (per-core executors,
///   ``PinnedThread`` workers): read sections are free, but the thread
///   must report quiescent states and go offline before it blocks.
/// - ``Memb`` for threads you own that register when they start and
///   unregister before they exit (or a scoped
///   ``withRegisteredThread(_:)``): a read lock is a thread-local update
///   and a call into liburcu.
/// - ``Bulletproof`` for threads you do not own (Swift concurrency's pool,
///   callbacks from C libraries): no registration at all, and a thread may
///   exit at any time outside a section; a read lock costs a little more
///   than memb's.
///
/// Misuse is caught in every build, for a thread-local load on the fast
/// paths: a read section on an unregistered (QSBR: or offline) thread, an
/// unbalanced unlock, and a grace-period wait, a barrier or another
/// blocking call of the library (``ThreadParker/park()``, cross-core calls)
/// inside an explicit read section of any flavour all trap with a message
/// that starts "RCU misuse:".
public protocol RCUFlavor: Sendable {
    /// A short name for diagnostics ("qsbr", "memb", "bp").
    static var name: String { get }

    /// Makes the calling thread an RCU reader of this flavour.
    ///
    /// Call once per thread before its first read section; pair with
    /// ``unregisterThread()`` before the thread exits. Takes a liburcu mutex.
    /// QSBR and memb: registering a thread twice traps. bp: optional and
    /// idempotent (liburcu-bp registers a thread on its first read lock).
    static func registerThread()

    /// Removes the calling thread from this flavour's readers. Must not be
    /// inside a read section (traps). Takes a liburcu mutex (bp: a no-op;
    /// a thread leaves when it exits).
    static func unregisterThread()

    /// Whether the calling thread is registered with this flavour (bp:
    /// always true). Any thread; reads a thread-local.
    static var isThreadRegistered: Bool { get }

    /// Whether the calling thread may dereference RCU-protected pointers of
    /// this flavour now (QSBR: registered and online; memb and bp: inside a
    /// read section). Exact in every build; reads a thread-local.
    static var isInReadSection: Bool { get }

    /// Starts a read section. The calling thread must be registered (QSBR:
    /// and online); a read lock on any other thread traps, in every build.
    /// Sections may nest. Writes no shared memory (the misuse checks'
    /// nesting count is a thread-local). Synchronous code only: a section
    /// belongs to its thread, and an `await` may resume on another (use
    /// ``withReadSection(_:)``, whose body is synchronous, from async code).
    @available(*, noasync, message: "a read section belongs to its thread; use withReadSection with a synchronous body")
    static func readLock()

    /// Ends the innermost read section. An unlock without a lock traps.
    @available(*, noasync, message: "a read section belongs to its thread; use withReadSection with a synchronous body")
    static func readUnlock()

    /// Waits until every read section that started before the call has
    /// ended. Must not be called inside an explicit read section of any
    /// flavour (this one's would wait for itself, another's would hold up
    /// that flavour's grace periods): it traps there, in every build.
    /// Blocks for a grace period (microseconds to milliseconds). Any
    /// thread. Tells ThreadSanitizer that the grace period ended (no
    /// ``gracePeriodDidEnd()`` needed after it).
    static func synchronize()

    /// Waits until every callback passed to ``deferFree(_:_:)`` and every
    /// job passed to ``afterGracePeriod(_:)`` before the call has run. Must
    /// not be called inside an explicit read section of any flavour (traps,
    /// in every build), nor from such a callback or job (it would wait for
    /// itself). Any other thread.
    static func barrier()

    /// Runs `callback(head)` on liburcu's call_rcu worker thread after a
    /// grace period (`call_rcu`). Never waits for the grace period.
    ///
    /// `head` must point to an `rcu_head` embedded in the object to reclaim
    /// (at offset 0 by this package's convention, so the callback can free
    /// the head's address). Any thread: an unregistered (or, for QSBR,
    /// offline) caller is registered (brought online) for the duration of
    /// the call, which takes a liburcu mutex; registered callers (bp: every
    /// thread after its first section) pay only the enqueue.
    ///
    /// The callback runs on the worker, one at a time and in order with the
    /// flavour's other callbacks and jobs. It must call
    /// ``gracePeriodDidEnd()`` first, should only reclaim (free memory,
    /// update counters) and must not block or call ``barrier()``; for more,
    /// use ``afterGracePeriod(_:)``.
    static func deferFree(_ head: UnsafeMutablePointer<rcu_head>, _ callback: RCUCallback)

    /// Runs `body` once, on liburcu's call_rcu worker thread of this
    /// flavour, after a grace period: every read section of this flavour
    /// that was in progress when `afterGracePeriod` was called has ended
    /// before `body` starts (sections begun later may still be running).
    ///
    /// For work that must wait for readers but not on the caller's thread:
    /// dropping references to objects unlinked from an RCU structure,
    /// draining queues that readers may still have been filling. What the
    /// caller did before the call happens before `body` (liburcu's queue
    /// and grace period order them; ThreadSanitizer is told).
    ///
    /// - The caller: any thread, inside a read section or not; never waits.
    ///   Costs one allocation (the job record; the closure's context is the
    ///   caller's) and one ``deferFree(_:_:)``.
    /// - `body` runs on the worker, which is registered with this flavour
    ///   (for QSBR, online): it may take read sections, look up RCU tables,
    ///   remove entries and schedule more deferred work. Jobs and callbacks
    ///   of one worker run one at a time, in order.
    /// - `body` must not call ``barrier()`` (it would wait for itself), must
    ///   not register, unregister or take the worker offline, and should
    ///   not block: it delays every callback queued behind it, so the
    ///   reclamation of every RCU table of the flavour and every
    ///   ``barrier()``.
    /// - ``barrier()`` called after `afterGracePeriod` returns waits until
    ///   `body` has run.
    ///
    /// `body` is `sending`: the caller gives up its captures, which are then
    /// used by the worker thread alone.
    static func afterGracePeriod(_ body: sending @escaping () -> Void)

    /// Call this first in every callback passed to ``deferFree(_:_:)``
    /// (and after waiting for a grace period by other means): it tells
    /// ThreadSanitizer that the grace period orders the readers' accesses
    /// before the reclamation. Without TSan it is a not-taken branch.
    /// (``afterGracePeriod(_:)`` calls it before its job.)
    static func gracePeriodDidEnd()
}

extension RCUFlavor {
    /// Runs `body` inside a read section of this flavour. The calling
    /// thread must be registered (bp: any thread); `body` must not block
    /// (a grace period, a barrier or a blocking call of the library inside
    /// it traps) and is synchronous (a read section belongs to its thread),
    /// so this may be called from async code.
    @inlinable
    public static func withReadSection<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        readLock()
        defer { readUnlock() }
        return try body()
    }

    /// Runs `body` with the calling thread registered with this flavour,
    /// registering and unregistering around it if it was not registered.
    /// For short-lived use from arbitrary threads (tests, set-up code);
    /// registration takes a liburcu mutex twice.
    @inlinable
    public static func withRegisteredThread<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        if isThreadRegistered { return try body() }
        registerThread()
        defer { unregisterThread() }
        return try body()
    }
}
