import Synchronization

// Pollers: closures the loop runs once per pass (step 4), e.g. to look at a
// device or a queue that nobody rings for.

extension CoreExecutor {
    /// Registers a poller, run once per loop pass; it returns how much work
    /// it did (0 = idle, which lets the executor park). While pollers exist
    /// an idle executor parks at most `Configuration.pollerParkTimeout`
    /// (call ``wake()`` when a poller's source gets input, to end the park
    /// early). Any thread; takes effect at the next pass.
    ///
    /// The executor holds the poller until its group shuts down, then
    /// releases it, so a poller may capture its own executor. A poller
    /// added after shutdown is released at once and never runs.
    public func addPoller(_ poller: @escaping @Sendable () -> Int) {
        // The shutdown sets `closed` and then empties the list under this
        // lock: an add that takes the lock first is emptied with the rest;
        // one that takes it after is ordered after the store and sees it.
        let added = pollers.withLock { list -> Bool in
            if closed.load(ordering: .sequentiallyConsistent) { return false }
            list.append(poller)
            return true
        }
        guard added else { return }
        pollersVersion.add(1, ordering: .releasing)
        doorbell.ring()
    }

    func runPollers() -> Int {
        // Consume a pending wake() before polling: the acquiring exchange
        // synchronizes with the waker's releasing store, so the polls below
        // see the input it published; a wake() after the exchange sets the
        // flag again, which the park's re-check sees (no lost wake-up). The
        // relaxed load keeps the common case (no wake pending) write-free:
        // a stale `false` only leaves the flag set, so the park returns at
        // once and the next pass consumes it. (Consumed even without
        // pollers, or the park would never sleep.)
        if wakeRequested.load(ordering: .relaxed) {
            _ = wakeRequested.exchange(false, ordering: .acquiring)
        }
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
