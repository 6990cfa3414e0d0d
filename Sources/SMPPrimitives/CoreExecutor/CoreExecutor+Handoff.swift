import Synchronization

// KernelContinuations scheduled from any thread reach their executor
// through an intrusive Treiber stack (the hand-off); the executor files
// them on its timer wheel and runs them when due (step 3 of the loop).

extension CoreExecutor {

    /// Pushes a continuation (whose `queued` bit the caller just set) onto
    /// the hand-off stack with a retain, then rings the doorbell.
    func handOff(_ c: KernelContinuation, delay: Int) {
        let raw = Unmanaged.passRetained(c).toOpaque()
        var head = handoffHead.load(ordering: .relaxed)
        while true {
            c.handoffNext = head
            // Release publishes handoffNext (and the state CAS before it) to
            // the owner's acquiring exchange; sequentially consistent so it
            // is also the store half of the doorbell protocol and of the
            // Dekker pairing with `closed` below.
            let (ok, cur) = handoffHead.compareExchange(expected: head, desired: raw,
                                                        ordering: .sequentiallyConsistent)
            if ok { break }
            head = cur
        }
        // An executor parked for at most one tick wakes by itself before a
        // continuation delayed by a tick or more is due (it files it then,
        // at most one tick late): no wake-up system call. Otherwise ring.
        // Dekker with collectLeftovers: it stores `closed` then empties the
        // stack; we push (sequentially consistent) then load `closed`. Either
        // it sees our node, or we see `closed` and empty the stack ourselves.
        if closed.load(ordering: .sequentiallyConsistent) {
            _ = releaseHandoffsAfterClose()
            return
        }
        if delay > 0 && tickParked.load(ordering: .sequentiallyConsistent) { return }
        doorbell.ring()
    }

    /// Takes the whole hand-off stack and cancels and releases each
    /// continuation on it. Only once the executor thread is gone. Concurrent
    /// callers are fine: the exchange gives each node to exactly one caller.
    /// - Returns: how many pending runs were cancelled.
    func releaseHandoffsAfterClose() -> Int {
        var cancelled = 0
        // Sequentially consistent, not only acquiring: this is the load
        // half of a Dekker pairing with handOff (push, then load `closed`;
        // collectLeftovers stores `closed`, then calls this). A pusher
        // that read `closed` false precedes that store in the single total
        // order S, and so does its push, which comes before its load; the
        // store precedes this exchange in S (sequenced before it). Two
        // sequentially consistent RMWs of one location are modification-
        // ordered as in S, so this exchange takes the node. An acquiring
        // exchange is outside S and could, in the model, precede the push
        // in the modification order (x86's locked exchange hides that).
        var p = handoffHead.exchange(nil, ordering: .sequentiallyConsistent)
        while let raw = p {
            let u = Unmanaged<KernelContinuation>.fromOpaque(raw)
            let c = u._withUnsafeGuaranteedRef { $0 }
            p = c.handoffNext
            c.handoffNext = nil
            // The executor thread has ended (joined before `closed` was
            // set): its fields are ours. It may still hold its reference
            // to a node it popped from the wheel but did not run because
            // this newer hand-off was on its way (see runIfPending).
            if c.ownerHoldsReference { dropOwnership(u) }
            // Cancel and clear `queued` in one step (nothing runs any more:
            // the phase is IDLE or PENDING), so that a later schedule
            // pushes, and is released, again rather than staying pending.
            // After the writes above: its release orders them before the
            // next pusher's CAS.
            let s = c.state.exchange(KernelContinuation.idle, ordering: .sequentiallyConsistent)
            if s & KernelContinuation.phaseMask != KernelContinuation.idle { cancelled += 1 }
            u.release()
        }
        return cancelled
    }

    // MARK: - filing and running (executor thread only)

    /// Files handed-off continuations, advances the wheel, runs due ones.
    /// Returns the pass's work: the bodies run, or 0 once a stop was
    /// requested (see below).
    func runContinuations() -> Int {
        let hasHandoff = handoffHead.load(ordering: .relaxed) != nil
        if !hasHandoff && wheel.count == 0 && !wheel.hasExpired { return 0 }
        // Advance first, so that hand-offs are filed relative to the
        // present tick (a popped node already on the expired list is
        // unlinked from it and filed again by its new delay).
        wheel.advance(to: TimerWheel.nowTick())
        if hasHandoff { takeHandoffs() }
        let ran = runExpired()
        // Once a stop is requested, runs no longer count as work: the loop
        // stops at the first pass that finds no messages or foreign jobs,
        // and `finish` runs (or cancels) once what is then pending. Else a
        // body that re-schedules itself (every pass runs it) would keep a
        // stopping executor from ever stopping. Relaxed: only a hint; the
        // loop's own load of `stopRequest` decides.
        if ran > 0 && stopRequest.load(ordering: .relaxed) != 0 { return 0 }
        return ran
    }

    func takeHandoffs() {
        // Acquire pairs with the pushers' release: their handoffNext writes
        // and state CASes are visible.
        var p = handoffHead.exchange(nil, ordering: .acquiring)
        // The stack is LIFO; reverse so that earlier schedules file first.
        var fifo: UnsafeMutableRawPointer? = nil
        while let raw = p {
            let c = Unmanaged<KernelContinuation>.fromOpaque(raw)
            p = c._withUnsafeGuaranteedRef { $0.handoffNext }
            c._withUnsafeGuaranteedRef { $0.handoffNext = fifo }
            fifo = raw
        }
        while let raw = fifo {
            let u = Unmanaged<KernelContinuation>.fromOpaque(raw)
            let c = u._withUnsafeGuaranteedRef { $0 }
            fifo = c.handoffNext
            c.handoffNext = nil
            // Clear `queued` and read the phase in one atomic step; from now
            // on a new schedule pushes again.
            let s = c.state.bitwiseAnd(~KernelContinuation.queued, ordering: .sequentiallyConsistent).newValue
            if c.ownerHoldsReference {
                u.release()   // the pusher's retain; ours is still held
            } else {
                c.ownerHoldsReference = true
            }
            wheel.remove(u)
            if s & KernelContinuation.phaseMask == KernelContinuation.pending {
                wheel.insert(u, expires: wheel.currentTick + (s >> KernelContinuation.delayShift))
            } else {
                // Cancelled before we got to it (IDLE). It cannot be RUNNING:
                // only this thread runs bodies, never with `queued` set.
                dropOwnership(u)
            }
        }
    }

    func dropOwnership(_ u: Unmanaged<KernelContinuation>) {
        u._withUnsafeGuaranteedRef { $0.ownerHoldsReference = false }
        u.release()
    }

    /// Runs the continuations that were due when the pass began, in expiry
    /// order. One that a body re-files (a re-schedule from inside a body,
    /// delay 0 included) goes to the back of the expired list and runs on
    /// a later pass: a pass is bounded, so between passes the loop drains
    /// its mailboxes and reports a quiescent state, however often a body
    /// re-arms itself.
    func runExpired() -> Int {
        var ran = 0
        // Pop at most the entries there now: popping takes the front,
        // re-filing appends at the back. (Nothing else unlinks from this
        // list while bodies run: a body reaches the wheel only through the
        // hand-off, filed on the next pass. Even if something did, the
        // count still bounds the pass.)
        var due = wheel.expiredCount
        while due > 0, let u = wheel.popExpired() {
            due -= 1
            if runIfPending(u) { ran += 1 }
        }
        if ran > 0 { statContinuations.store(statContinuations.load(ordering: .relaxed) &+ ran, ordering: .relaxed) }
        return ran
    }

    /// Runs an expired continuation if it is still PENDING and not queued;
    /// re-files it if it was rescheduled while running.
    private func runIfPending(_ u: Unmanaged<KernelContinuation>) -> Bool {
        let c = u._withUnsafeGuaranteedRef { $0 }
        var s = c.state.load(ordering: .acquiring)
        while true {
            if s & KernelContinuation.queued != 0 { return false }   // a hand-off will re-file it
            if s & KernelContinuation.phaseMask != KernelContinuation.pending {
                dropOwnership(u)   // cancelled
                return false
            }
            // Acquiring (sequentially consistent): every schedule of this
            // period was a release RMW of `state` (coalesced ones too, see
            // KernelContinuation.schedule) and all later writes are RMWs,
            // so this CAS reads from the release sequence each of them
            // heads: their callers' earlier writes happen before the body.
            let (ok, cur) = c.state.compareExchange(expected: s, desired: KernelContinuation.running,
                                                    ordering: .sequentiallyConsistent)
            if ok { break }
            s = cur
        }
        c.body()
        // After the body: IDLE, unless it was re-scheduled meanwhile
        // (RESCHED: back to PENDING and re-filed, behind this pass) and no
        // cancelAndWait is waiting for the run to end (`halting`: IDLE all
        // the same, withdrawing the re-schedule; the bit goes with it). A
        // failed CAS means a schedule, cancel or halt mark came in: decide
        // again. Releasing (sequentially consistent): the body's effects
        // happen before whatever acquires a later value of `state` (the
        // next scheduler's CAS, cancelAndWait's final load). A running
        // continuation is never `queued` (only IDLE -> PENDING pushes).
        s = KernelContinuation.running
        while true {
            assert(s & KernelContinuation.queued == 0, "a running continuation was queued")
            let refile = s & KernelContinuation.phaseMask == KernelContinuation.rescheduled
                && s & KernelContinuation.halting == 0
            let d = s >> KernelContinuation.delayShift
            let new = refile ? KernelContinuation.pending | (d << KernelContinuation.delayShift) : KernelContinuation.idle
            let (ok, cur) = c.state.compareExchange(expected: s, desired: new, ordering: .sequentiallyConsistent)
            if ok {
                if refile {
                    wheel.insert(u, expires: wheel.currentTick + d)
                } else {
                    dropOwnership(u)
                }
                return true
            }
            s = cur
        }
    }
}
