import FastDemux
import PacketIO
import Glibc
import Synchronization
import SMPPrimitives

/// The lock-free fast path (the NetBSD "Fast protocol and port
/// demultiplexing" proposal) as an organization: ``Demux`` with its RCU PCB
/// tables and PCQ socket queues.
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
    /// Where each worker last ran (noted per drain), for the inputs'
    /// cross-core hand-off count.
    let workerCPUs: ObservedCPUs
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
        workerCPUs = ObservedCPUs(count: workers)
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
                workerThread(k)
            })
        }
        lifecycle.started.wait()
    }

    func attach(_ socket: Socket, key: FlowKey) {}

    func close(_ socket: Socket, key: FlowKey) { socket.close() }

    func makeInput(index: Int) -> any OrganizationInput {
        deferred ? DeferredInput(org: self) : DirectInput(org: self)
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
    private func workerThread(_ k: Int) {
        QSBR.registerThread()
        defer { QSBR.unregisterThread() }
        let counting = setup.statistics
        let ctx = setup.demux.makeInput()
        let queue = queues[k]
        let decode = setup.decode
        let batch = UnsafeMutablePointer<DemuxPacket>.allocate(capacity: Self.workerBatch)
        defer { batch.deallocate() }
        var stats = OrganizationStats()
        let switches = ThreadContextSwitches.now()
        if counting { workerCPUs.noteCurrentCPU(k) }
        lifecycle.started.wait()
        let cpu0 = threadCPUNanoseconds()
        stats.parks = pollUntilFinished(spinning: 64, {
            let stopping = lifecycle.stop.load(ordering: .acquiring)
            if counting { workerCPUs.noteCurrentCPU(k) }
            var m = 0
            let n = queue.drain(max: Self.workerBatch) { w in
                batch[m] = decode(w)
                m &+= 1
            }
            guard n > 0 else { return stopping ? .finished : .idle }
            ctx.burst { b in b.deliver(batch: UnsafeBufferPointer(start: batch, count: m)) { _, _ in } }
            ctx.quiescent()
            if counting {
                stats.coreQueueConsumer.queueOps &+= 1
                stats.coreQueueConsumer.batchSizes.record(n)   // (the drain publishes with a store: no RMW)
            }
            return .progress
        }, park: {
            QSBR.threadOffline()
            doorbells[k].park(timeout: .milliseconds(1)) {
                queue.approximateCount == 0 && !lifecycle.stop.load(ordering: .sequentiallyConsistent)
            }
            QSBR.threadOnline()
        })
        if counting { ThreadContextSwitches.record(since: switches, into: &stats) }
        stats.stack.merge(ctx.stats)
        stats.stackCPUNanoseconds += threadCPUNanoseconds() - cpu0
        results[k] = stats
    }

    /// Direct dispatch: the input thread runs the fast path.
    final class DirectInput: OrganizationInput {
        let org: FastPathOrganization
        let ctx: DemuxInput<QSBR>
        var switches = ThreadContextSwitches()

        init(org: FastPathOrganization) {
            self.org = org
            ctx = org.setup.demux.makeInput()
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
            var s = OrganizationStats(stack: ctx.stats)
            if org.setup.statistics { ThreadContextSwitches.record(since: switches, into: &s) }
            return s
        }
    }

    /// Deferred dispatch: the input thread only steers words to workers.
    final class DeferredInput: OrganizationInput {
        let org: FastPathOrganization
        var handoff: CoreHandoff
        var switches = ThreadContextSwitches()

        init(org: FastPathOrganization) {
            self.org = org
            handoff = CoreHandoff(setup: org.setup, coreCPUs: org.workerCPUs)
        }

        func begin() { if handoff.counting { switches = .now() } }

        func deliver(_ burst: UnsafeBufferPointer<DemuxPacket>) {
            let counting = handoff.counting
            handoff.beginBurst()
            for p in burst {
                let k = org.worker(of: p.key)
                let q = org.queues[k]
                if !put(p.packet, on: q, counting: counting) {
                    // Full: wake the worker and wait for room (back-pressure).
                    handoff.stats.coreQueueFullWaits &+= 1
                    retryUntilSuccess {
                        handoff.ring(org.doorbells[k])
                        return put(p.packet, on: q, counting: counting)
                    }
                }
                handoff.didPost(to: k) { q.approximateCount }
            }
            ringPosted()
        }

        /// One put, its RMWs (failed attempts included) counted by the queue.
        @inline(__always)
        private func put(_ packet: PacketRef, on q: PCQ<PacketRef>, counting: Bool) -> Bool {
            guard counting else { return q.put(packet) }
            var puts = PCQPutCounts()
            let ok = q.put(packet, counting: &puts)
            handoff.stats.stack.sync.add(puts)
            return ok
        }

        func ringPosted() { handoff.ringPosted { org.doorbells[$0] } }

        func quiescent() {}

        func end() -> OrganizationStats {
            ringPosted()
            if handoff.counting { ThreadContextSwitches.record(since: switches, into: &handoff.stats) }
            return handoff.stats
        }
    }
}
