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
        s.mailbox = mesh.statistics(of: core)
        return s
    }
}

/// Counters of one executor (racy snapshot).
public struct CoreExecutorStatistics: Sendable {
    public var messagesHandled = 0
    public var foreignJobsRun = 0
    public var continuationsRun = 0
    public var pollerWork = 0
    public var parks = 0
    public var loopPasses = 0
    /// Counters of the rings into this executor.
    public var mailbox = MailboxStatistics()
}
