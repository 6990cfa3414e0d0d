import CSMPLinux
import Synchronization

// The executor thread's loop (see the type's documentation and the
// ExecutorModel article of SMPPrimitives.docc): drain mailboxes, run foreign
// jobs, continuations and pollers, report a quiescent state, spin, then
// park. Everything here runs on the executor thread only.

extension CoreExecutor {
    /// The thread's body: the loop, until a stop request finds it idle.
    func threadMain() {
        smp_set_current_executor(Unmanaged.passUnretained(self).toOpaque())
        QSBR.registerThread()
        var idlePasses = 0
        while true {
            var work = drainIncoming(max: 1024)
            work += drainForeign()
            work += runContinuations()
            let polled = runPollers()
            // Once a stop is requested, only mailboxes and foreign jobs keep
            // the executor looping: a poller that always finds input (like
            // a continuation that re-arms itself, see runContinuations)
            // must not keep it from stopping.
            if stopRequest.load(ordering: .relaxed) == 0 { work += polled }
            QSBR.quiescentState()
            statLoops.store(statLoops.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            if work > 0 {
                idlePasses = 0
                continue
            }
            let stop = stopRequest.load(ordering: .acquiring)
            if stop != 0 {
                // Work queued before the stop request must run. Our drains
                // above may have come before such a job's enqueue, while
                // this load saw the request: the acquire load reads the
                // requester's seq_cst (so also releasing) store, so
                // everything that happened before `requestStop` — the
                // job's append and flag, or a peer's post — happens before
                // what follows. One more drain therefore finds it; only a
                // pass that finds nothing at all ends the loop.
                if drainIncoming(max: 1024) + drainForeign() > 0 { continue }
                finish(runPending: stop == 1)
                break
            }
            idlePasses += 1
            if idlePasses < configuration.spinPasses {
                spinLoopHint()
                continue
            }
            idlePasses = 0
            parkIdle()
        }
        // Release: a sender or caller that reads `true` (acquire) also sees
        // everything this thread did, in particular a reply completed in
        // the final pass (see `call`, which checks the reply first). What
        // senders post after this store stays in the rings and is counted
        // by `collectLeftovers` once the thread is joined.
        leftLoop.store(true, ordering: .releasing)
        QSBR.unregisterThread()
        smp_set_current_executor(nil)
        finished.store(true, ordering: .releasing)
    }

    private func parkIdle() {
        var timeout: Int? = nil
        var tickPark = false
        if let next = wheel.nextEventTick() {
            // Timers pending: sleep at most one tick, so that schedulers with
            // a delay of at least one tick need not ring (see handOff).
            let untilNext = max(0, next &* 1_000_000 &- monotonicNanoseconds())
            timeout = min(untilNext, 1_000_000)
            tickPark = true
        }
        if !localPollers.isEmpty {
            timeout = min(timeout ?? Int.max, configuration.pollerParkTimeout.nanosecondsRoundedUp)
        }
        if timeout == 0 { return }
        statParks.store(statParks.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        QSBR.threadOffline()
        // Sequentially consistent, before the doorbell's parked store: a
        // scheduler that reads `true` here (and skips ringing) is ordered
        // before the re-check below, which then sees its hand-off.
        tickParked.store(tickPark, ordering: .sequentiallyConsistent)
        mesh.park(core, timeout: timeout.map { .nanoseconds($0) }) {
            // The load half of the doorbell protocol: sequentially
            // consistent loads of every source a ringer publishes to.
            handoffHead.load(ordering: .sequentiallyConsistent) != nil
                || hasForeignJobs.load(ordering: .sequentiallyConsistent)
                || stopRequest.load(ordering: .sequentiallyConsistent) != 0
                || pollersVersion.load(ordering: .sequentiallyConsistent) != localPollersVersion
                || wakeRequested.load(ordering: .sequentiallyConsistent)
                || wheel.hasExpired
        }
        tickParked.store(false, ordering: .relaxed)
        QSBR.threadOnline()
    }

    /// Waits (on the executor thread) until `done()`, handling incoming
    /// mailboxes and foreign jobs meanwhile (never timers or pollers) —
    /// what a synchronous `call(_:)` between executors does.
    ///
    /// A blocking wait is a quiescent point (see the ExecutorModel article):
    /// it reports a QSBR quiescent state on every idle pass and goes
    /// offline while parked, so a target that waits for a grace period
    /// cannot deadlock with this caller; a pointer the caller looked up
    /// before the wait must be looked up again after it. The park is
    /// bounded (1 ms), so conditions that nobody rings for (a continuation
    /// body ending, see ``KernelContinuation/cancelAndWait()``) are seen
    /// without a doorbell.
    ///
    /// `done()` is also the park's re-check: it must read what the
    /// completer publishes with a sequentially consistent load.
    func waitDraining(until done: () -> Bool) {
        var idle = 0
        while !done() {
            if drainIncoming(max: CoreExecutor.batchSize) + drainForeign() > 0 {
                idle = 0
                continue
            }
            QSBR.quiescentState()
            idle += 1
            if idle < configuration.spinPasses {
                spinLoopHint()
                continue
            }
            idle = 0
            QSBR.threadOffline()
            mesh.park(core, timeout: .milliseconds(1)) {
                !done() && !hasForeignJobs.load(ordering: .sequentiallyConsistent)
            }
            QSBR.threadOnline()
        }
    }

    /// Handles up to `max` incoming messages: first the backlog, then the
    /// rings, round-robin over senders, a batch at a time (the batch goes
    /// through the backlog). Reentrant: a handler that waits in a
    /// synchronous `call` drains on from the next message, so every
    /// message is handled once and in per-sender order.
    @discardableResult
    func drainIncoming(max: Int) -> Int {
        var handled = 0
        while handled < max {
            if let e = backlog.popFirst() {
                handle(e.message, from: e.sender)
                handled += 1
                continue
            }
            if !refillBacklog() { break }
        }
        if handled > 0 {
            statMessages.store(statMessages.load(ordering: .relaxed) &+ handled, ordering: .relaxed)
        }
        return handled
    }

    /// Moves one batch from the next non-empty ring (round-robin over
    /// senders) into the empty backlog. Returns false if every ring is empty.
    private func refillBacklog() -> Bool {
        for _ in 0..<mesh.cores {
            let s = drainSender
            drainSender = s + 1 == mesh.cores ? 0 : s + 1
            if backlog.receive(from: mesh, sender: s, receiver: core, max: CoreExecutor.batchSize) > 0 {
                return true
            }
        }
        return false
    }

    /// While a send waits for room: moves everything waiting in this
    /// executor's incoming rings to its backlog without running it (see
    /// ``MessageBacklog``), so peers blocked on those rings can go on.
    /// Traps once the backlog reaches `Configuration.mailboxBacklogLimit`.
    func absorbIncoming() {
        var moved = 0
        for s in 0..<mesh.cores {
            while true {
                let n = backlog.receive(from: mesh, sender: s, receiver: core, max: CoreExecutor.batchSize)
                if n == 0 { break }
                moved += n
                if backlog.count >= configuration.mailboxBacklogLimit {
                    fatalError("""
                        CoreExecutor \(core): \(backlog.count) incoming messages absorbed while a send waited \
                        for a full ring (Configuration.mailboxBacklogLimit): executors are flooding each \
                        other from handlers that never return; use trySend or larger rings
                        """)
                }
            }
        }
        if moved > 0 {
            statAbsorbed.store(statAbsorbed.load(ordering: .relaxed) &+ moved, ordering: .relaxed)
        }
    }

    private func handle(_ m: MailboxMessage, from sender: Int) {
        if let f = m.function {
            f(m.a, m.b)
        } else if let h = messageHandler {
            h(sender, m)
        }
    }
}
