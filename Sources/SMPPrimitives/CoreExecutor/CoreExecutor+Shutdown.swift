import Synchronization

// Stopping an executor: the group asks it to stop, its thread runs or
// cancels what is pending and ends, and what arrived too late is counted.

extension CoreExecutor {
    /// Asks the loop to stop once it finds nothing to do (the group's
    /// shutdown; any thread).
    func requestStop(runPending: Bool) {
        stopRequest.store(runPending ? 1 : 2, ordering: .sequentiallyConsistent)
        doorbell.ring()
    }

    /// Waits for the thread to end; returns what its final pass recorded.
    func join() -> CoreExecutorShutdownReport {
        let t = thread.withLock { t -> PinnedThread<Void>? in
            defer { t = nil }
            return t
        }
        t?.join()
        return report.withLock { $0 }
    }

    /// Final pass on the executor thread: run (once) or cancel every
    /// continuation still filed, then record what is left.
    func finish(runPending: Bool) {
        var r = CoreExecutorShutdownReport()
        // Everything filed becomes due now.
        takeHandoffs()
        wheel.expireAll()
        if runPending {
            r.continuationsRunAtShutdown = runExpired()
        }
        // Whatever is still pending (rescheduled by a body just run, or all
        // of them with the cancel policy) is cancelled and reported.
        wheel.expireAll()
        while let u = wheel.popExpired() {
            let c = u._withUnsafeGuaranteedRef { $0 }
            if c.cancel() { r.continuationsCancelled += 1 }
            dropOwnership(u)
        }
        report.withLock { $0 = r }
    }

    /// After the thread ended (the group joined it): counts and disposes
    /// of what arrived too late — messages left in the rings and the
    /// backlog, foreign jobs — and closes the executor so that later
    /// hand-offs and foreign jobs are disposed of by their submitters.
    func collectLeftovers() -> CoreExecutorShutdownReport {
        for s in 0..<mesh.cores {
            while backlog.receive(from: mesh, sender: s, receiver: core, max: CoreExecutor.batchSize) > 0 {}
        }
        while let e = backlog.popFirst() { disposeLate(e.message) }
        closed.store(true, ordering: .sequentiallyConsistent)
        disposeLateJobs()
        // Release the pollers: they will never run again, and a poller
        // that captures its own executor (the natural way to call wake())
        // would otherwise keep the executor alive in a cycle. The loop's
        // copy is the thread's; the join ordered its last use before this.
        // `addPoller` after `closed` drops the poller itself.
        pollers.withLock { $0.removeAll() }
        localPollers = []
        let cancelled = releaseHandoffsAfterClose()
        return report.withLock { r in
            r.continuationsCancelled += cancelled
            r.messagesUndelivered = statLateMessages.load(ordering: .relaxed)
            r.foreignJobsUndelivered = statLateJobs.load(ordering: .relaxed)
            r.taskJobsRedirected = statTaskJobsRedirected.load(ordering: .relaxed)
            return r
        }
    }

    /// A message that will never be handled here: a Swift task job is
    /// handed to the global concurrent executor (a task must never be left
    /// suspended forever); anything else is counted as undelivered and its
    /// closure box, if any, released. Any thread (a sender that found this
    /// executor gone, or the group after the join).
    func disposeLate(_ m: MailboxMessage) {
        guard let f = m.function else {
            statLateMessages.add(1, ordering: .relaxed)
            return
        }
        let fn = unsafeBitCast(f, to: UInt.self)
        if fn == unsafeBitCast(runTaskJobMessage, to: UInt.self) {
            redirect(unsafeBitCast(m.a, to: UnownedJob.self))
            return
        }
        statLateMessages.add(1, ordering: .relaxed)
        if fn == unsafeBitCast(runClosureMessage, to: UInt.self),
           let raw = UnsafeMutableRawPointer(bitPattern: m.a) {
            Unmanaged<ClosureBox>.fromOpaque(raw).release()
        }
    }

    /// Disposes of every queued foreign job (after the thread is gone):
    /// closures are counted and dropped, task jobs redirected.
    func disposeLateJobs() {
        let jobs = foreignJobs.withLock { q -> [ForeignJob] in
            defer { q.removeAll() }
            return q
        }
        for job in jobs {
            switch job {
            case .closure: statLateJobs.add(1, ordering: .relaxed)
            case .task(let j): redirect(j)
            }
        }
    }

    /// Runs a task job that reached this executor after it stopped on the
    /// global concurrent executor instead (counted): the task resumes
    /// off-core rather than never. Its later jobs, still preferring this
    /// executor, come back here and are redirected again.
    func redirect(_ job: UnownedJob) {
        statTaskJobsRedirected.add(1, ordering: .relaxed)
        globalConcurrentExecutor.enqueue(ExecutorJob(job))
    }
}

/// What a shutdown did with work that was still pending (summed over the
/// group's executors by ``CoreExecutorGroup/shutdown(runPending:)``). A value.
public struct CoreExecutorShutdownReport: Sendable, Equatable {
    /// Continuations that were pending and ran (early) during shutdown.
    public var continuationsRunAtShutdown = 0
    /// Continuations that were pending and were cancelled instead.
    public var continuationsCancelled = 0
    /// Mailbox messages that arrived after the executor stopped (not run;
    /// boxed closures released).
    public var messagesUndelivered = 0
    /// Jobs from foreign threads that arrived after it stopped (not run).
    public var foreignJobsUndelivered = 0
    /// Swift task jobs that arrived after it stopped: never dropped, they
    /// were handed to the global concurrent executor (the task resumed
    /// off-core).
    public var taskJobsRedirected = 0

    /// An empty report (all zero).
    public init() {}

    static func + (l: Self, r: Self) -> Self {
        var s = l
        s.continuationsRunAtShutdown += r.continuationsRunAtShutdown
        s.continuationsCancelled += r.continuationsCancelled
        s.messagesUndelivered += r.messagesUndelivered
        s.foreignJobsUndelivered += r.foreignJobsUndelivered
        s.taskJobsRedirected += r.taskJobsRedirected
        return s
    }
}
