import Synchronization
import SMPPrimitives

// The readiness pass of the delivery step: once per batch, after the
// batch's PCQ puts, tell each touched socket's consumers that there is
// something to read.
extension SocketDelivery {
    /// Publishes readiness for the sockets touched since the last call.
    ///
    /// One full fence per batch orders every PCQ put of the batch (stores)
    /// before the loads of ready-set bits, worker flags and reader "armed"
    /// flags below (StoreLoad). It pairs with the consumers' side of the
    /// "flag, re-check, sleep" handshake (`ThreadParker`): a reader's
    /// seq_cst "armed" store followed by its re-check of the queue, a
    /// worker's seq_cst clear of `workerScheduled` followed by its drain.
    /// Either the consumer's re-check sees our put or our load sees its flag.
    /// Then per touched socket: its ready-set bit (an RMW only on a 0→1
    /// transition), its worker's schedule (coalesced by `workerScheduled`),
    /// its parked reader's wake-up; and each ready set's reader is rung once
    /// per run of its sockets.
    @inlinable
    mutating func publishReadiness(counting: Bool) {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        var lastSet: Unmanaged<SocketReadySet>?
        for i in 0..<touchedCount {
            if counting { stats.socketQueue.batchSizes.record(touchedRuns[i]) }
            touched[i].withSocket { s in
                if let set = s.readySet {
                    // Ring a set's reader once per run of sockets of that set.
                    if let last = lastSet, last.toOpaque() != set.toOpaque() { ringReader(of: last, counting: counting) }
                    lastSet = set
                    let mark = set._withUnsafeGuaranteedRef { $0.markReadyReporting(slot: s.readySlot) }
                    if counting {
                        // The OR is counted when issued, also when another
                        // input set the bit first (then no notification).
                        if mark.issuedRMW { stats.sync.atomicRMWs &+= 1 }
                        if mark.newlyReady { stats.sync.wakeups &+= 1 }
                    }
                }
                if let worker = s.worker, !s.workerScheduled.load(ordering: .relaxed) {
                    scheduleWorker(worker, of: s, counting: counting)
                }
                if s.readerWakeup.isArmed {
                    let woke = s.readerWakeup.ring()
                    if woke { s.wakeupCount.add(1, ordering: .relaxed) }
                    if counting {
                        stats.sync.recordParkerRing(woke: woke)
                        if woke {
                            stats.sync.atomicRMWs &+= 1    // the wake-up counter's add
                            stats.sync.wakeups &+= 1
                        }
                    }
                }
            }
        }
        if let lastSet { ringReader(of: lastSet, counting: counting) }
        touchedCount = 0
    }

    /// NetBSD's `kcont_schedule` with a small delay, coalesced by the
    /// socket's `workerScheduled` flag (checked after the batch's fence; the
    /// worker clears it before it looks for work). No delay when the fast
    /// path left an ACK to the worker.
    @inlinable
    mutating func scheduleWorker(_ worker: Unmanaged<KernelContinuation>, of s: Socket, counting: Bool) {
        s.workerScheduled.store(true, ordering: .relaxed)
        let delay: Duration = s.ackOwed.load(ordering: .relaxed) || s.tcpLock.backlogged > 0 ? .zero : s.workerDelay
        let scheduled = worker._withUnsafeGuaranteedRef { $0.schedule(after: delay) }
        if scheduled && counting { stats.sync.modelledAtomicRMWs &+= ModelledRMWs.continuationSchedule }
        stats.workerSchedules &+= 1
    }

    /// Wakes a ready set's reader if it parked.
    @inlinable
    mutating func ringReader(of set: Unmanaged<SocketReadySet>, counting: Bool) {
        set._withUnsafeGuaranteedRef { set in
            guard set.wakeup.isArmed else { return }
            let woke = set.wakeup.ring()
            if counting { stats.sync.recordParkerRing(woke: woke) }
        }
    }
}
