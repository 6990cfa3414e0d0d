import Synchronization

// Pollers: closures the loop runs once per pass (step 4), e.g. to look at a
// device or a queue that nobody rings for.

extension CoreExecutor {
    /// Registers a poller, run once per loop pass; it returns how much work
    /// it did (0 = idle, which lets the executor park). While pollers exist
    /// an idle executor parks at most `Configuration.pollerParkNanoseconds`.
    /// Any thread; takes effect at the next pass.
    public func addPoller(_ poller: @escaping @Sendable () -> Int) {
        pollers.withLock { $0.append(poller) }
        pollersVersion.add(1, ordering: .releasing)
        doorbell.ring()
    }

    func runPollers() -> Int {
        let v = pollersVersion.load(ordering: .acquiring)
        if v != localPollersVersion {
            localPollers = pollers.withLock { $0 }
            localPollersVersion = v
        }
        if localPollers.isEmpty { return 0 }
        var work = 0
        for p in localPollers { work += p() }
        if work > 0 { statPollerWork.store(statPollerWork.load(ordering: .relaxed) &+ work, ordering: .relaxed) }
        return work
    }

}
