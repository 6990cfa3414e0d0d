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

    /// After the thread ended: count (and release) what arrived too late.
    func collectLeftovers() -> CoreExecutorShutdownReport {
        var r = report.withLock { $0 }
        withUnsafeTemporaryAllocation(of: MailboxMessage.self, capacity: 64) { buf in
            for s in 0..<mesh.cores {
                while true {
                    let n = mesh.receive(from: s, at: core, into: buf.baseAddress!, max: 64)
                    if n == 0 { break }
                    for i in 0..<n {
                        r.messagesUndelivered += 1
                        releaseIfBoxed(buf[i])
                    }
                }
            }
        }
        r.messagesUndelivered += stagedCount - stagedIndex
        for i in stagedIndex..<stagedCount { releaseIfBoxed(staged[i]) }
        stagedIndex = stagedCount
        let jobs = foreignJobs.withLock { q -> [ForeignJob] in
            defer { q.removeAll() }
            return q
        }
        r.foreignJobsUndelivered += jobs.count
        closed.store(true, ordering: .sequentiallyConsistent)
        r.continuationsCancelled += releaseHandoffsAfterClose()
        report.withLock { $0 = r }
        return r
    }

    private func releaseIfBoxed(_ m: MailboxMessage) {
        guard let f = m.function else { return }
        if unsafeBitCast(f, to: UInt.self) == unsafeBitCast(runClosureMessage, to: UInt.self),
           let raw = UnsafeMutableRawPointer(bitPattern: m.a) {
            Unmanaged<ClosureBox>.fromOpaque(raw).release()
        }
    }
}

/// What a shutdown did with work that was still pending (summed over the
/// group's executors by ``CoreExecutorGroup/shutdown(runPending:)``). A value.
public struct CoreExecutorShutdownReport: Sendable, Equatable {
    /// Continuations that were pending and ran (early) during shutdown.
    public var continuationsRunAtShutdown = 0
    /// Continuations that were pending and were cancelled instead.
    public var continuationsCancelled = 0
    /// Mailbox messages that arrived after the executor stopped (not run).
    public var messagesUndelivered = 0
    /// Jobs from foreign threads that arrived after it stopped (not run).
    public var foreignJobsUndelivered = 0

    /// An empty report (all zero).
    public init() {}

    static func + (l: Self, r: Self) -> Self {
        var s = l
        s.continuationsRunAtShutdown += r.continuationsRunAtShutdown
        s.continuationsCancelled += r.continuationsCancelled
        s.messagesUndelivered += r.messagesUndelivered
        s.foreignJobsUndelivered += r.foreignJobsUndelivered
        return s
    }
}
