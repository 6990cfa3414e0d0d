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
            work += runPollers()
            QSBR.quiescentState()
            statLoops.store(statLoops.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            if work > 0 {
                idlePasses = 0
                continue
            }
            let stop = stopRequest.load(ordering: .acquiring)
            if stop != 0 {
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
                || wheel.hasExpired
        }
        tickParked.store(false, ordering: .relaxed)
        QSBR.threadOnline()
    }

    /// Waits (on the executor thread) until `done()`; handles only incoming
    /// mailboxes and foreign jobs meanwhile, parking when idle.
    func waitDraining(until done: () -> Bool) {
        var idle = 0
        while !done() {
            if drainIncoming(max: 64) + drainForeign() > 0 {
                idle = 0
                continue
            }
            idle += 1
            if idle < configuration.spinPasses {
                spinLoopHint()
                continue
            }
            idle = 0
            QSBR.threadOffline()
            mesh.park(core, timeout: nil) {
                done() || hasForeignJobs.load(ordering: .sequentiallyConsistent)
            }
            QSBR.threadOnline()
        }
    }

    /// Handles up to `max` incoming messages (reentrant, see `staged`).
    @discardableResult
    func drainIncoming(max: Int) -> Int {
        var handled = 0
        while handled < max {
            if stagedIndex < stagedCount {
                let m = staged[stagedIndex]
                stagedIndex += 1
                handle(m, from: stagedSender)
                handled += 1
                continue
            }
            // Refill from the next non-empty ring, round-robin over senders.
            var found = false
            for _ in 0..<mesh.cores {
                let s = drainSender
                drainSender = s + 1 == mesh.cores ? 0 : s + 1
                let n = mesh.receive(from: s, at: core, into: staged, max: CoreExecutor.stageCapacity)
                if n > 0 {
                    stagedIndex = 0
                    stagedCount = n
                    stagedSender = s
                    found = true
                    break
                }
            }
            if !found { break }
        }
        if handled > 0 {
            statMessages.store(statMessages.load(ordering: .relaxed) &+ handled, ordering: .relaxed)
        }
        return handled
    }

    private func handle(_ m: MailboxMessage, from sender: Int) {
        if let f = m.function {
            f(m.a, m.b)
        } else if let h = messageHandler {
            h(sender, m)
        }
    }
}
