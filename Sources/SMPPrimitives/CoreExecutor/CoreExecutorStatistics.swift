extension CoreExecutor {
    /// A snapshot of this executor's counters. Any thread.
    public var statistics: CoreExecutorStatistics {
        var s = CoreExecutorStatistics()
        s.messagesHandled = statMessages.load(ordering: .relaxed)
        s.foreignJobsRun = statForeign.load(ordering: .relaxed)
        s.continuationsRun = statContinuations.load(ordering: .relaxed)
        s.pollerWork = statPollerWork.load(ordering: .relaxed)
        s.parks = statParks.load(ordering: .relaxed)
        s.loopPasses = statLoops.load(ordering: .relaxed)
        s.messagesAbsorbed = statAbsorbed.load(ordering: .relaxed)
        s.lateMessages = statLateMessages.load(ordering: .relaxed)
        s.lateForeignJobs = statLateJobs.load(ordering: .relaxed)
        s.taskJobsRedirected = statTaskJobsRedirected.load(ordering: .relaxed)
        s.mailbox = mesh.statistics(of: core)
        return s
    }
}

/// Counters of one executor: a value, read by ``CoreExecutor/statistics``
/// from any thread as a racy snapshot (each counter has one writer, the
/// executor thread; the counters are not read at one instant).
public struct CoreExecutorStatistics: Sendable {
    /// Mailbox messages handled (jobs from other executors included).
    public var messagesHandled = 0
    /// Jobs run from the foreign (non-executor) queue.
    public var foreignJobsRun = 0
    /// Continuation bodies run.
    public var continuationsRun = 0
    /// The sum of what the pollers reported doing.
    public var pollerWork = 0
    /// Times the executor parked on its doorbell.
    public var parks = 0
    /// Loop passes.
    public var loopPasses = 0
    /// Incoming messages moved to the backlog (not run) while one of this
    /// executor's sends waited for room in a full ring.
    public var messagesAbsorbed = 0
    /// Messages that reached the executor after it left its loop (not run).
    public var lateMessages = 0
    /// Foreign closure jobs that reached it after it left its loop (not run).
    public var lateForeignJobs = 0
    /// Swift task jobs that reached it after it left its loop, handed to
    /// the global concurrent executor.
    public var taskJobsRedirected = 0
    /// Counters of the rings into this executor.
    public var mailbox = MailboxStatistics()
}
