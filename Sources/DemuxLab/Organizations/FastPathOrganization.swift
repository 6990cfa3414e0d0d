import FastDemux
import PacketIO
import Glibc
import Synchronization
import SMPPrimitives

/// The lock-free fast path (the NetBSD proposal, seeds/004) as an
/// organization: ``Demux`` with its RCU PCB tables and PCQ socket queues.
///
/// - direct: each input thread runs ``DemuxInput/deliver(batch:onDrop:)``
///   itself (lookup without a lock, TCP via try-lock).
/// - deferred (netisr-style): input threads hash each packet to a per-core
///   worker and put its word on that worker's PCQ (MPSC); the worker drains
///   in batches, decodes again and runs the same fast path. Direct and
///   deferred dispatch can be compared on the same input.
///
/// Sockets are found through the PCB tables their `connect` filled:
/// ``attach(_:key:)`` has nothing to do, ``close(_:key:)`` is
/// ``Socket/close()`` (one grace period).
final class FastPathOrganization: DemuxOrganization, @unchecked Sendable {
    // @unchecked Sendable: the demux and the worker queues are thread-safe;
    // `threads` and `results` are written by start/finish on the driver
    // thread (and `results[k]` by worker k before it is joined).
    let kind: OrganizationKind
    var groupCount: Int { deferred ? setup.coreThreads : 1 }
    var coreThreadCount: Int { deferred ? setup.coreThreads : 0 }
    let setup: OrganizationSetup
    let deferred: Bool
    let queues: [PCQ<PacketRef>]
    let doorbells: [Doorbell]
    let lifecycle: CoreThreadsControl
    nonisolated(unsafe) var threads: [PinnedThread<Void>] = []
    /// Slot k is written by core thread k before it is joined (distinct
    /// memory per thread: no access to a shared array variable).
    let results: UnsafeMutablePointer<OrganizationStats>
    let resultCount: Int
    static let workerBatch = 64

    init(setup: OrganizationSetup, deferred: Bool) {
        self.setup = setup
        self.deferred = deferred
        kind = deferred ? .fastpathDeferred : .fastpath
        let workers = deferred ? setup.coreThreads : 0
        queues = (0..<workers).map { _ in PCQ(capacity: 4096) }
        doorbells = (0..<workers).map { _ in Doorbell() }
        lifecycle = CoreThreadsControl(threads: workers)
        resultCount = workers
        results = .allocate(capacity: max(1, workers))
        results.initialize(repeating: OrganizationStats(), count: workers)
    }

    deinit {
        results.deinitialize(count: resultCount)
        results.deallocate()
    }

    @inline(__always)
    func worker(of key: FlowKey) -> Int { organizationHash(key) % setup.coreThreads }

    func start() {
        guard deferred else { return }
        for k in 0..<setup.coreThreads {
            let cpu = coreThreadCPU(k, pinned: setup.pinned)
            threads.append(PinnedThread(cpu: cpu >= 0 ? cpu : nil, name: "netisr-\(k)") { [self] in
                workerThread(k, cpu: cpu)
            })
        }
        lifecycle.started.wait()
    }

    func attach(_ socket: Socket, key: FlowKey) {}

    func close(_ socket: Socket, key: FlowKey) { socket.close() }

    func makeInput(index: Int, cpu: Int) -> any OrganizationInput {
        deferred ? DeferredInput(org: self, cpu: cpu) : DirectInput(org: self, cpu: cpu)
    }

    func finish() -> OrganizationStats {
        guard deferred else { return OrganizationStats() }
        // Release: every input's puts happen-before a worker's acquiring
        // load of `stop`, so its final drain finds them.
        lifecycle.stop.store(true, ordering: .releasing)
        for d in doorbells { d.ring() }
        for t in threads { t.join() }
        var total = OrganizationStats()
        for k in 0..<resultCount { total.merge(results[k]) }
        return total
    }

    /// Worker k: drain its PCQ in batches, run the fast path on each batch
    /// (one read section), report a quiescent state; offline while parked.
    private func workerThread(_ k: Int, cpu: Int) {
        QSBR.registerThread()
        defer { QSBR.unregisterThread() }
        let counting = setup.statistics
        let ctx = setup.demux.makeInput(cpu: cpu)
        let queue = queues[k]
        let decode = setup.decode
        let batch = UnsafeMutablePointer<DemuxPacket>.allocate(capacity: Self.workerBatch)
        defer { batch.deallocate() }
        var stats = OrganizationStats()
        let switches = ThreadContextSwitches.now()
        lifecycle.started.wait()
        let cpu0 = threadCPUNanoseconds()
        var idle = 0
        while true {
            let stopping = lifecycle.stop.load(ordering: .acquiring)
            var m = 0
            let n = queue.drain(max: Self.workerBatch) { w in
                batch[m] = decode(w)
                m &+= 1
            }
            if n > 0 {
                ctx.burst { b in b.deliver(batch: UnsafeBufferPointer(start: batch, count: m)) { _, _ in } }
                ctx.quiescent()
                if counting {
                    stats.coreQueueConsumer.queueOps &+= 1
                    stats.coreQueueConsumer.batchSizes.record(n)   // (the drain publishes with a store: no RMW)
                }
                idle = 0
                continue
            }
            if stopping { break }
            idle &+= 1
            if idle < 64 {
                spinLoopHint()
                continue
            }
            stats.parks &+= 1
            QSBR.threadOffline()
            doorbells[k].park(timeout: .milliseconds(1)) {
                queue.approximateCount == 0 && !lifecycle.stop.load(ordering: .sequentiallyConsistent)
            }
            QSBR.threadOnline()
            idle = 0
        }
        if counting { ThreadContextSwitches.record(since: switches, into: &stats) }
        stats.stack.merge(ctx.stats)
        stats.acks += ctx.stats.immediateACKs
        stats.stackCPUNanoseconds += threadCPUNanoseconds() - cpu0
        results[k] = stats
    }

    /// Direct dispatch: the input thread runs the fast path.
    final class DirectInput: OrganizationInput {
        let org: FastPathOrganization
        let ctx: DemuxInput<QSBR>
        var switches = ThreadContextSwitches()

        init(org: FastPathOrganization, cpu: Int) {
            self.org = org
            ctx = org.setup.demux.makeInput(cpu: cpu)
        }

        func begin() {
            QSBR.registerThread()
            if org.setup.statistics { switches = .now() }
        }

        func deliver(_ burst: UnsafeBufferPointer<DemuxPacket>) {
            ctx.burst { b in b.deliver(batch: burst) { _, _ in } }
        }

        func quiescent() { ctx.quiescent() }

        func end() -> OrganizationStats {
            QSBR.unregisterThread()
            var s = OrganizationStats()
            s.stack = ctx.stats
            s.acks = ctx.stats.immediateACKs
            if org.setup.statistics { ThreadContextSwitches.record(since: switches, into: &s) }
            return s
        }
    }

    /// Deferred dispatch: the input thread only steers words to workers.
    final class DeferredInput: OrganizationInput {
        let org: FastPathOrganization
        let cpu: Int
        let counting: Bool
        var stats = OrganizationStats()
        var switches = ThreadContextSwitches()
        var untilDepthSample = 64
        var posted: UInt64 = 0

        init(org: FastPathOrganization, cpu: Int) {
            self.org = org
            self.cpu = cpu
            counting = org.setup.statistics
        }

        func begin() { if counting { switches = .now() } }

        func deliver(_ burst: UnsafeBufferPointer<DemuxPacket>) {
            for p in burst {
                let k = org.worker(of: p.key)
                let q = org.queues[k]
                if !q.put(p.packet) {
                    stats.coreQueueFullWaits &+= 1
                    var spins = 0
                    repeat {
                        org.doorbells[k].ring()
                        spins &+= 1
                        if spins & 15 == 0 { sched_yield() } else { spinLoopHint() }
                        if counting { stats.stack.sync.atomicRMWs &+= 1 }
                    } while !q.put(p.packet)
                }
                posted |= 1 << UInt64(k & 63)
                if counting {
                    stats.coreQueue.queueOps &+= 1
                    stats.stack.sync.atomicRMWs &+= 1   // the PCQ put's reservation
                    if coreThreadCPU(k, pinned: org.setup.pinned) != cpu { stats.stack.sync.crossCoreHandoffs &+= 1 }
                    untilDepthSample &-= 1
                    if untilDepthSample == 0 {
                        untilDepthSample = 64
                        stats.coreQueue.recordDepth(q.approximateCount)
                    }
                }
            }
            ringPosted()
        }

        func ringPosted() {
            while posted != 0 {
                let k = posted.trailingZeroBitCount
                posted &= posted &- 1
                if org.doorbells[k].ring() && counting {
                    stats.stack.sync.atomicRMWs &+= 1
                    stats.stack.sync.wakeups &+= 1
                    stats.stack.sync.threadWakeups &+= 1
                }
            }
        }

        func quiescent() {}

        func end() -> OrganizationStats {
            ringPosted()
            if counting { ThreadContextSwitches.record(since: switches, into: &stats) }
            return stats
        }
    }
}
