import FastDemux
import PacketIO
import Glibc
import Synchronization
import SMPPrimitives

/// Connection-parallel with threads (ConnP-T, in Willmann, Rixner and
/// Cox's evaluation): connections are hashed to connection groups, one per
/// core thread, and only the owning thread ever touches a connection (its
/// lookup table, TCP state, enqueue).
/// An input thread hands each packet (one word) to the owner through the
/// IPI-like ``MailboxMesh`` (an SPSC ring per input → core pair, a doorbell
/// per core rung once per burst); there is no lock in the stack.
///
/// Per packet: a ring slot write and a release store on the input side, a
/// batched drain on the owner side, a second hand-off (owner → reader).
///
/// Socket attach/detach are messages to the owner too (a control PCQ per
/// core thread), applied between batches.
final class ConnPTOrganization: DemuxOrganization, @unchecked Sendable {
    // @unchecked Sendable: each core thread's FlowMap is touched only by that
    // thread; the mesh, control queues and flags are thread-safe; `threads`
    // and `results` are written by start/finish on the driver thread (and
    // `results[k]` by core thread k before it is joined).
    let kind = OrganizationKind.connpT
    var groupCount: Int { setup.coreThreads }
    var coreThreadCount: Int { setup.coreThreads }
    let setup: OrganizationSetup
    let mesh: MailboxMesh
    let controls: [PCQ<UInt>]
    /// Where each core thread last ran (noted per poll), for the inputs'
    /// cross-core hand-off count.
    let coreCPUs: ObservedCPUs
    let lifecycle: CoreThreadsControl
    nonisolated(unsafe) var threads: [PinnedThread<Void>] = []
    /// Slot k is written by core thread k before it is joined (distinct
    /// memory per thread: no access to a shared array variable).
    let results: UnsafeMutablePointer<OrganizationStats>
    let resultCount: Int
    /// Attachments made before ``start()``, per core thread: applied by the
    /// core thread when it starts (the thread start orders them).
    nonisolated(unsafe) var pending: [[(FlowKey, SocketReference)]]

    init(setup: OrganizationSetup) {
        self.setup = setup
        mesh = MailboxMesh(cores: setup.inputThreads + setup.coreThreads, capacity: 1024)
        controls = (0..<setup.coreThreads).map { _ in PCQ(capacity: 256) }
        coreCPUs = ObservedCPUs(count: setup.coreThreads)
        lifecycle = CoreThreadsControl(threads: setup.coreThreads)
        resultCount = setup.coreThreads
        results = .allocate(capacity: resultCount)
        results.initialize(repeating: OrganizationStats(), count: resultCount)
        pending = Array(repeating: [], count: setup.coreThreads)
    }

    deinit {
        results.deinitialize(count: resultCount)
        results.deallocate()
    }

    @inline(__always)
    func owner(of key: FlowKey) -> Int { organizationHash(key) % setup.coreThreads }

    @inline(__always)
    func role(ofCore k: Int) -> Int { setup.inputThreads + k }

    func start() {
        for k in 0..<setup.coreThreads {
            let cpu = coreThreadCPU(k, pinned: setup.pinned)
            threads.append(PinnedThread(cpu: cpu >= 0 ? cpu : nil, name: "connp-t-\(k)") { [self] in
                coreThread(k)
            })
        }
        lifecycle.started.wait()
    }

    func attach(_ socket: Socket, key: FlowKey) {
        request(.attach, socket, key)
    }

    func close(_ socket: Socket, key: FlowKey) {
        request(.detach, socket, key)
        socket.close()
    }

    private func request(_ op: OwnerControlRequest.Operation, _ socket: Socket, _ key: FlowKey) {
        let k = owner(of: key)
        let r = OwnerControlRequest(op, key: key, socket: SocketReference(unretained: socket))
        if threads.isEmpty {
            // Not started yet (setup before traffic, on the driver thread).
            if op == .attach { pending[k].append((key, r.socket)) } else { pending[k].removeAll { $0.0 == key } }
            return
        }
        r.submit(to: controls[k]) { mesh.doorbell(of: role(ofCore: k)).ring() }
    }

    func makeInput(index: Int) -> any OrganizationInput { Input(org: self, index: index) }

    func finish() -> OrganizationStats {
        // Release: every input's posts happen-before a core thread's
        // acquiring load of `stop`, so its final drain finds them.
        lifecycle.stop.store(true, ordering: .releasing)
        for k in 0..<setup.coreThreads { mesh.doorbell(of: role(ofCore: k)).ring() }
        for t in threads { t.join() }
        var total = OrganizationStats()
        for k in 0..<resultCount { total.merge(results[k]) }
        // (The inputs count their doorbell rings themselves, see CoreHandoff.)
        if setup.statistics {
            total.coreQueue.highWater = max(total.coreQueue.highWater, mesh.totalStatistics.highWater)
        }
        return total
    }

    /// The loop of core thread `k`: apply control requests, drain the
    /// mailboxes in batches, deliver, publish readiness; park when idle.
    private func coreThread(_ k: Int) {
        let roleK = role(ofCore: k)
        let counting = setup.statistics
        var delivery = setup.makeDelivery()
        var stats = OrganizationStats()
        var table = FlowMap<SocketReference>(capacity: max(16, setup.maxConnections / setup.coreThreads * 2))
        defer { table.deallocate() }
        for (key, socket) in pending[k] { _ = table.insert(key, socket) }
        let control = controls[k]
        let decode = setup.decode
        let switches = ThreadContextSwitches.now()
        if counting { coreCPUs.noteCurrentCPU(k) }
        lifecycle.started.wait()
        let cpu0 = threadCPUNanoseconds()
        stats.parks = pollUntilFinished(spinning: 64, {
            OwnerControlRequest.applyAll(from: control, to: &table)
            if counting { coreCPUs.noteCurrentCPU(k) }
            let stopping = lifecycle.stop.load(ordering: .acquiring)
            // Only this thread touches its connections: the ownership
            // serializes the TCP state, no lock is taken.
            let n = mesh.receive(at: roleK, max: 256) { _, m in
                let p = decode(PacketRef(word: m.a))
                delivery.deliver(p, to: table.lookup(p.key), tcp: .caller, counting: counting)
            }
            guard n > 0 else { return stopping ? .finished : .idle }
            delivery.flush(counting: counting)
            if counting {
                stats.coreQueueConsumer.queueOps &+= 1
                stats.coreQueueConsumer.batchSizes.record(n)
            }
            return .progress
        }, park: {
            mesh.park(roleK, timeout: .milliseconds(1)) {
                control.approximateCount > 0 || lifecycle.stop.load(ordering: .sequentiallyConsistent)
            }
        })
        stats.stack = delivery.stats
        if counting { ThreadContextSwitches.record(since: switches, into: &stats) }
        stats.stackCPUNanoseconds += threadCPUNanoseconds() - cpu0
        results[k] = stats
    }

    final class Input: OrganizationInput {
        let org: ConnPTOrganization
        let index: Int
        var handoff: CoreHandoff
        var switches = ThreadContextSwitches()

        init(org: ConnPTOrganization, index: Int) {
            self.org = org
            self.index = index
            handoff = CoreHandoff(setup: org.setup, coreCPUs: org.coreCPUs)
        }

        func begin() { if handoff.counting { switches = .now() } }

        func deliver(_ burst: UnsafeBufferPointer<DemuxPacket>) {
            let mesh = org.mesh
            handoff.beginBurst()
            for p in burst {
                let k = org.owner(of: p.key)
                let to = org.role(ofCore: k)
                let message = MailboxMessage(p.packet.word)
                if !mesh.post(message, from: index, to: to) {
                    // Full: wake the owner and wait for room (back-pressure).
                    handoff.stats.coreQueueFullWaits &+= 1
                    retryUntilSuccess {
                        handoff.ring(mesh.doorbell(of: to))
                        return mesh.post(message, from: index, to: to)
                    }
                }
                handoff.didPost(to: k) {
                    let s = mesh.statistics(from: index, to: to)
                    return s.sent &- s.received
                }
            }
            ringPosted()
        }

        /// One doorbell check per core thread per burst (a fence and a load;
        /// a futex wake only if the owner parked).
        func ringPosted() {
            handoff.ringPosted { k in org.mesh.doorbell(of: org.role(ofCore: k)) }
        }

        func quiescent() {}

        func end() -> OrganizationStats {
            ringPosted()
            if handoff.counting { ThreadContextSwitches.record(since: switches, into: &handoff.stats) }
            return handoff.stats
        }
    }
}
