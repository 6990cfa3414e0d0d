import Glibc
import Synchronization

/// A kernel continuation (NetBSD kcont): a piece of work bound to one
/// ``CoreExecutor`` that runs there once per pending period, after a delay.
///
/// - ``schedule(after:)`` makes it pending; scheduling a pending
///   continuation coalesces (returns false, it still runs once).
/// - ``cancel()`` withdraws a pending run; ``cancelAndWait()`` also waits
///   until the body is not running (NetBSD's callout_halt(9)), so that its
///   owner may free what the body touches.
/// - Guarantee: a continuation scheduled at least once runs at least once
///   *after* its last schedule (and sees the memory effects that preceded
///   that schedule), unless cancelled afterwards.
/// - A schedule from inside the body (a timer that re-arms itself) runs on
///   a later pass of the executor's loop at the earliest, even with no
///   delay: between two runs the executor drains its mailboxes and reports
///   a quiescent state.
///
/// ## State machine
///
/// One atomic word: bits 0-1 phase, bit 2 `queued`, bit 3 `halting`, bits
/// 4... the delay in milliseconds of the pending run.
///
/// ```
///  phase      schedule (any thread)          cancel (any thread)     owner (executor)
///  IDLE       -> PENDING(d), push if !queued   no-op, false            -
///  PENDING    coalesced, false                -> IDLE, true           expiry & !queued: -> RUNNING, run
///  RUNNING    -> RESCHED(d), true             no-op, false            after body: -> IDLE
///  RESCHED    coalesced, false                -> RUNNING, true        after body: -> PENDING(d), re-file;
///                                                                     if halting: -> IDLE
/// ```
/// `queued` is set by the scheduler that pushes the continuation onto the
/// owner's hand-off list (only when it was clear: a node is never on the
/// list twice) and cleared only by the owner when it pops it; the owner then
/// files it by the phase it reads in the same atomic step (PENDING: re-file
/// at now + d; IDLE: cancelled, unfile). The wheel never fires a node whose
/// `queued` bit is set: a newer schedule is on its way and re-files it.
/// A running continuation is never `queued`.
///
/// `halting` is set only on a running body, by ``cancelAndWait()`` (with
/// a CAS: RUNNING -> RUNNING + halting, RESCHED -> RUNNING + halting, the
/// latter withdrawing the re-schedule), kept by schedule and cancel, and
/// cleared by the owner's CAS that ends the run, which then goes to IDLE
/// even from RESCHED: a body that re-arms itself cannot outrun the wait.
///
/// Memory ordering (the C++/Swift model). Every write to `state` is a
/// read-modify-write (CAS, fetch-and, exchange, or the coalesced path's
/// add of zero), never a plain store. So a release RMW heads a release
/// sequence that runs through every later modification of the word, and
/// an acquiring operation that reads any later value synchronizes with it.
/// - schedule, coalesced: an RMW that adds 0 with release ordering; the
///   value it reads (PENDING or RESCHED) decides. The owner's acquiring CAS
///   that starts the run (PENDING -> RUNNING, after RESCHED -> PENDING) is
///   later in the modification order, so it reads from the release
///   sequence this RMW heads and the caller's earlier writes happen before
///   the body. Linux's queue_work relies on the same thing: its
///   test_and_set_bit of the work's PENDING bit must be ordered even when
///   it finds the bit already set. A fence and a relaxed load (the old
///   path) write nothing: no release sequence starts there, and a release
///   fence synchronizes only through a later atomic write of its own
///   thread, so in the model the body's reads raced with those writes.
/// - schedule, IDLE -> PENDING and RUNNING -> RESCHED: sequentially
///   consistent CASes; their release orders the caller's writes before the
///   next run the same way (their acquire lets the scheduler see what the
///   runs before wrote).
/// - owner: PENDING -> RUNNING acquires (above); RUNNING -> IDLE and
///   RESCHED -> PENDING release the body's effects to whatever acquires a
///   later value (a scheduler's CAS, ``cancelAndWait()``'s final load).
///   All are sequentially consistent CASes.
/// - cancel, and cancelAndWait's marking: sequentially consistent CASes;
///   exactly one of a cancel and the owner's CAS PENDING -> RUNNING wins.
///   cancelAndWait returns after an acquiring load reads IDLE: that value
///   is in the release sequence of the owner's CAS that ended the last
///   run, so every run happens before the return.
/// - hand-off: the pusher writes `handoffNext`, then publishes it with a
///   releasing (sequentially consistent) CAS of the executor's list head;
///   the owner takes the list with an acquiring exchange, reads and clears
///   `handoffNext`, and only then clears `queued` (a releasing fetch-and),
///   so the next pusher, whose CAS acquires that value, does not race with
///   it on `handoffNext`.
///
/// Interleavings:
/// - schedule racing schedule: one CAS wins; the loser reloads, sees
///   PENDING and coalesces.
/// - schedule racing the start of a run (owner CAS PENDING -> RUNNING):
///   the scheduler's RMW either reads PENDING (coalesced; the run starts
///   later in the modification order and sees its earlier writes, above),
///   or RUNNING, in which case it moves to RESCHED and the owner runs the
///   body again.
/// - schedule racing the end of a run (owner CAS RUNNING -> IDLE): either
///   the owner's CAS fails (RESCHED: re-filed) or the scheduler sees IDLE
///   and pushes a fresh hand-off.
/// - cancel then schedule before the owner pops the first hand-off: the
///   second schedule sees `queued` and does not push; the pop files the
///   latest phase and delay.
/// - cancel of a filed entry: the node stays filed (the wheel is owner-only)
///   and is dropped when its tick comes and the owner finds it IDLE.
/// - schedule from inside the body: RUNNING -> RESCHED; after the body the
///   owner re-files it at the back of the expired list (delay 0) or in a
///   slot, and the current pass, which runs only what was due when it
///   began, does not run it again.
/// - cancelAndWait racing the end of a run: either its mark lands first
///   (the owner's CAS fails, reloads and ends in IDLE) or the owner's CAS
///   does (IDLE, or PENDING after a re-schedule, which the waiter then
///   cancels like any pending run); either way it waits for IDLE.
///
/// Lifetime: each push onto the hand-off list carries a retain; the owner
/// keeps one reference while the node is filed or queued and releases it
/// when the continuation goes idle. Nothing is allocated per schedule.
///
/// Concurrency contract: `schedule`, `cancel` and `cancelAndWait` from any
/// thread (`cancelAndWait` with the limits it states); the body runs on
/// the executor's thread, never concurrently with itself.
public final class KernelContinuation: @unchecked Sendable {
    // @unchecked: the `@exclusivity(unchecked)` fields below are owned by the
    // executor thread (links, ownerHoldsReference; after that thread ended,
    // by whoever empties the closed hand-off list) or handed over through
    // the release/acquire of the hand-off list (handoffNext); `state` is
    // atomic.

    @usableFromInline static let phaseMask = 3
    @usableFromInline static let idle = 0
    @usableFromInline static let pending = 1
    @usableFromInline static let running = 2
    @usableFromInline static let rescheduled = 3
    @usableFromInline static let queued = 4
    @usableFromInline static let halting = 8
    /// The bits a phase change keeps.
    @usableFromInline static let flagBits = queued | halting
    @usableFromInline static let delayShift = 4

    /// The executor whose thread runs the body.
    public let executor: CoreExecutor
    let body: @Sendable () -> Void
    @usableFromInline let state = Atomic<Int>(0)

    // Owner-only (the executor thread).
    @exclusivity(unchecked) var wheelNext: Unmanaged<KernelContinuation>?
    @exclusivity(unchecked) var wheelPrev: Unmanaged<KernelContinuation>?
    @exclusivity(unchecked) var wheelSlot = -1
    @exclusivity(unchecked) var expires = 0
    @exclusivity(unchecked) var ownerHoldsReference = false
    // Written by the single pusher (the scheduler that set `queued`) before
    // its publishing CAS; read by the owner after its acquiring exchange.
    @exclusivity(unchecked) var handoffNext: UnsafeMutableRawPointer?

    /// Creates an idle continuation bound to `executor`.
    public init(on executor: CoreExecutor, _ body: @escaping @Sendable () -> Void) {
        self.executor = executor
        self.body = body
    }

    /// True while a run is pending (scheduled and not yet started). Any
    /// thread; a racy snapshot.
    public var isPending: Bool {
        let p = state.load(ordering: .relaxed) & KernelContinuation.phaseMask
        return p == KernelContinuation.pending || p == KernelContinuation.rescheduled
    }

    /// Makes the continuation pending: its body runs on its executor after
    /// `delay`.
    ///
    /// The executor's timer wheel counts 1 ms ticks, so `delay` is rounded
    /// up to whole milliseconds d (zero or negative: d = 0, the executor's
    /// next loop pass). The executor files the continuation d ticks after
    /// the current tick, so the body starts no earlier than `delay` minus
    /// one tick after this call (the wheel's tick granularity), and later
    /// by however long the executor takes to get to it. A schedule that
    /// coalesces keeps the pending run's delay. Called from inside the body
    /// it re-arms the continuation for a later loop pass, never the
    /// current one.
    ///
    /// Any thread. The coalesced path (already pending) is one atomic
    /// read-modify-write of the state word that adds zero with release
    /// ordering, and it never looks at `delay`. In the memory model that
    /// RMW is a write (it joins the word's modification order, which is
    /// what orders the caller's earlier writes before the body); it leaves
    /// the value unchanged. LLVM lowers such an idempotent RMW on x86-64 to
    /// a full barrier (a locked no-op on the stack, `lock or $0, -64(%rsp)`)
    /// and a plain load of the word: the very instructions of the fence and
    /// load this path used before, so on x86-64 it costs the same and the
    /// cache line may stay shared. On AArch64 it is a real atomic RMW (one
    /// LSE instruction, or a load/store-exclusive loop), which takes the
    /// line exclusive. The first schedule of a period converts
    /// the delay (a compare and, unless it is zero, one 64-bit division by
    /// a constant), then costs one CAS, one more CAS to push onto the
    /// owner's hand-off list, and a doorbell check (a `futex_wake` only if
    /// the owner is parked). No allocation.
    /// - Returns: false if coalesced with an already pending run.
    @discardableResult @inlinable
    public func schedule(after delay: Duration = .zero) -> Bool {
        // An idempotent RMW with release ordering whose result decides:
        // if it reads PENDING or RESCHED we coalesce, and the owner's
        // acquiring CAS that starts the run reads from the release
        // sequence this RMW heads (see the type's comment), so the body
        // sees the caller's earlier writes. Not acquiring: the coalescing
        // caller needs nothing from the owner.
        var s = state.wrappingAdd(0, ordering: .releasing).oldValue
        let phase = s & KernelContinuation.phaseMask
        if phase == KernelContinuation.pending || phase == KernelContinuation.rescheduled { return false }
        return scheduleSlow(s: &s, delay: delay)
    }

    @usableFromInline
    func scheduleSlow(s: inout Int, delay: Duration) -> Bool {
        let d = min(delay.millisecondsRoundedUp, Int.max >> KernelContinuation.delayShift)
        while true {
            switch s & KernelContinuation.phaseMask {
            case KernelContinuation.pending, KernelContinuation.rescheduled:
                return false
            case KernelContinuation.idle:
                let new = KernelContinuation.pending | KernelContinuation.queued | (d << KernelContinuation.delayShift)
                let (ok, cur) = state.compareExchange(expected: s, desired: new,
                                                      ordering: .sequentiallyConsistent)
                guard ok else { s = cur; continue }
                if s & KernelContinuation.queued == 0 {
                    executor.handOff(self, delay: d)
                }
                return true
            default: // running
                let new = KernelContinuation.rescheduled | (s & KernelContinuation.flagBits) | (d << KernelContinuation.delayShift)
                let (ok, cur) = state.compareExchange(expected: s, desired: new,
                                                      ordering: .sequentiallyConsistent)
                guard ok else { s = cur; continue }
                return true
            }
        }
    }

    /// Withdraws a pending run. Any thread. A body already running finishes
    /// (use ``cancelAndWait()`` to wait for it). One CAS.
    /// - Returns: true if a pending run was cancelled.
    @discardableResult
    public func cancel() -> Bool {
        var s = state.load(ordering: .relaxed)
        while true {
            let new: Int
            switch s & KernelContinuation.phaseMask {
            case KernelContinuation.pending: new = KernelContinuation.idle | (s & KernelContinuation.flagBits)
            case KernelContinuation.rescheduled: new = KernelContinuation.running | (s & KernelContinuation.flagBits)
            default: return false
            }
            let (ok, cur) = state.compareExchange(expected: s, desired: new, ordering: .sequentiallyConsistent)
            if ok { return true }
            s = cur
        }
    }

    /// Withdraws a pending run and waits until the body is not running, so
    /// that when it returns the body neither runs nor will run and its
    /// owner may free what the body touches (NetBSD's callout_halt(9)).
    ///
    /// A re-schedule that the running body makes while the call waits (a
    /// timer that re-arms itself) is withdrawn too: the call marks the
    /// running body `halting`, and its executor then ends the run in IDLE
    /// whatever the body scheduled. Every run of the body happens before
    /// the return (the final load acquires the owner's release at the end
    /// of the last run).
    ///
    /// Contract: the caller must first stop everything else that schedules
    /// this continuation (as callout_halt's caller must stop re-arming it).
    /// A ``schedule(after:)`` from another thread that races with the call
    /// may be withdrawn, or may survive it: its run can then start after
    /// the return. The caller must not hold a lock the body takes (NetBSD
    /// passes such a lock to callout_halt as its interlock; there is none
    /// here), and two bodies that halt each other's continuations from
    /// different executors wait for each other forever.
    ///
    /// From where, and what it costs:
    /// - A foreign thread: one CAS; while the body runs, one more CAS to
    ///   mark it, then a brief spin, then `sched_yield`, then sleeps of
    ///   50 µs growing to 1 ms. A QSBR-registered, online caller goes
    ///   offline while it waits (the body may wait for a grace period); it
    ///   must not be inside an RCU read section of any flavour.
    /// - Another executor (of the same group or another): it waits as a
    ///   synchronous `call` does, handling its own incoming messages and
    ///   foreign jobs, so a body that calls into the waiting executor
    ///   cannot deadlock with it.
    /// - The continuation's own executor, outside the body: the body cannot
    ///   be running there; one CAS, no wait.
    /// - Inside the body (or a message handler nested in it, e.g. while
    ///   the body waits for a `call`): it withdraws a re-schedule the body
    ///   made and returns at once. It cannot wait for the run it is part
    ///   of, which finishes after it returns; NetBSD's callout_halt does
    ///   not wait either when a callout halts itself from its own handler.
    /// - Returns: true if a run was pending when the call began and was
    ///   withdrawn (as ``cancel()`` returns); re-schedules withdrawn while
    ///   it waits are not counted.
    @discardableResult
    public func cancelAndWait() -> Bool {
        let cancelled = cancel()
        if executor.isCurrent {
            // On the owner's thread a RUNNING body is our own caller.
            return cancelled
        }
        if let waiter = CoreExecutor.current {
            waiter.waitDraining { haltSettled() }
            return cancelled
        }
        QSBR.withThreadOffline {
            var spins = 0
            while !haltSettled() {
                spins += 1
                if spins < KernelContinuation.haltSpins {
                    spinLoopHint()
                } else if spins < 2 * KernelContinuation.haltSpins {
                    sched_yield()
                } else {
                    // 50, 100, 200, ... µs, at most 1 ms: a body that runs
                    // long is noticed at most a millisecond late.
                    let step = min(spins - 2 * KernelContinuation.haltSpins, 5)
                    usleep(UInt32(min(50 << step, 1_000)))
                }
            }
        }
        return cancelled
    }

    /// Passes of the busy phases of a foreign ``cancelAndWait()`` wait.
    static let haltSpins = 64

    /// One step of ``cancelAndWait()``'s wait: true once the body is neither
    /// running nor pending. A running body is marked `halting` (its owner
    /// then withdraws any re-schedule when the run ends, so a body that
    /// re-arms itself cannot outrun the wait); a pending run found here
    /// (re-armed before the mark, or a racing schedule) is withdrawn.
    /// Acquiring: when it returns true, every run of the body happens
    /// before (the owner's CAS that ended the last run heads a release
    /// sequence this load reads from).
    private func haltSettled() -> Bool {
        var s = state.load(ordering: .acquiring)
        while true {
            let new: Int
            switch s & KernelContinuation.phaseMask {
            case KernelContinuation.idle:
                return true
            case KernelContinuation.running:
                if s & KernelContinuation.halting != 0 { return false }
                new = s | KernelContinuation.halting
            case KernelContinuation.rescheduled:
                new = KernelContinuation.running | KernelContinuation.halting | (s & KernelContinuation.queued)
            default: // pending
                new = KernelContinuation.idle | (s & KernelContinuation.queued)
            }
            let (ok, cur) = state.compareExchange(expected: s, desired: new, ordering: .sequentiallyConsistent)
            if ok { return false }   // look again (the next look may settle)
            s = cur
        }
    }
}
