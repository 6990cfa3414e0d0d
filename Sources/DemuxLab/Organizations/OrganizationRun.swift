import FastDemux
import PacketIO
import Glibc
import Synchronization
import SMPPrimitives

/// One run of one organization on the comparison's synthetic workload: the
/// paper's axes (connections, groups, input threads) and the same checks
/// for every organization.
///
/// Workload: `connections` established TCP connections (plus `churnFlows`
/// connections that are connected and closed while traffic flows), steered
/// to input threads by flow (RSS-style: flow i enters through input
/// i mod N, so per-flow order is defined). Each input thread offers its
/// share of `packets` in bursts of 32, each packet a uniformly chosen flow
/// of its own, 64 payload bytes, PSH (so every in-sequence segment is ACKed
/// by the stack). A packet is one word, `(flow << 32 | n) + 1` for the n-th
/// segment of the flow; the shared decoder turns it into the flow's key and
/// TCP sequence number `64 n`. One reader thread (the application) drains
/// every socket through a ``SocketReadySet`` and checks per-flow order.
public struct OrganizationRunConfiguration: Sendable {
    public var kind: OrganizationKind
    public var connections: Int
    public var groups = 4
    public var inputThreads = 1
    public var coreThreads = onlineCPUCount
    public var packets = 1_000_000
    /// Count synchronization points (see ``OrganizationSetup/statistics``).
    public var statistics = true
    /// Extra connections connected and closed during the traffic.
    public var churnFlows = 0
    /// Socket receive-queue capacity.
    public var queueCapacity = 256
    /// Flow control (a TCP receive window in miniature): the traffic source
    /// does not offer segment n of a connection before the reader has
    /// taken segment n − window, with window = `queueCapacity`, so socket
    /// queues never overflow and every run measures delivered throughput
    /// instead of load shedding. Applied by the source, before the stack,
    /// identically for every organization. Off: open loop (queue-full drops
    /// when the reader falls behind). Churn connections are never
    /// flow-controlled (their packets may be dropped unseen).
    public var flowControl = true
    public var pinned = true
    public var seed: UInt64 = 0x0c0f_fee5

    public init(kind: OrganizationKind, connections: Int) {
        self.kind = kind
        self.connections = connections
    }
}

/// The outcome of ``runOrganization(_:)``.
public struct OrganizationRunResult: Sendable {
    public var configuration: OrganizationRunConfiguration
    /// Groups in effect (ConnP-L locks, ConnP-T owners, deferred workers).
    public var groupCount = 1
    public var coreThreadCount = 0
    /// Packets the input threads offered.
    public var offered = 0
    /// Packets the reader received.
    public var delivered = 0
    /// Packets still queued when their socket was torn down.
    public var drainedAtClose = 0
    /// From the start of traffic until the reader drained the last packet.
    public var seconds = 0.0
    /// From the start of traffic until the stack (input and core threads)
    /// finished processing every packet.
    public var stackSeconds = 0.0
    public var stats = OrganizationStats()
    public var orderErrors = 0
    public var misdelivered = 0
    /// Packets the reader received on churn connections (while attached).
    public var churnDelivered = 0
    /// Violations found by the checks (empty: checked).
    public var failures: [String] = []

    public var checked: Bool { failures.isEmpty }
    /// Delivered packets per second (to the reader), in millions.
    public var mpps: Double { seconds > 0 ? Double(delivered) / seconds / 1e6 : 0 }
    /// Offered packets per second through the stack, in millions
    /// (drops included: a stack that drops at full queues looks fast here).
    public var stackMpps: Double { stackSeconds > 0 ? Double(offered) / stackSeconds / 1e6 : 0 }
    /// CPU time of the stack's threads per offered packet.
    public var stackCPUNanosecondsPerPacket: Double {
        offered > 0 ? Double(stats.stackCPUNanoseconds) / Double(offered) : 0
    }
    /// `value / delivered`.
    public func perDelivered(_ value: Int) -> Double { DemuxStats.perDelivered(value, delivered: delivered) }
}

/// Runs `configuration` once and checks it: every offered packet delivered
/// or counted as dropped (exactly once), per-flow order kept at the reader
/// and in the TCP receive state, every packet at its own socket.
///
/// Synchronous: starts the organization's threads, an input thread per
/// ``OrganizationRunConfiguration/inputThreads``, the reader and (with
/// churn) a control thread, and joins them all before returning.
public func runOrganization(_ configuration: OrganizationRunConfiguration) -> OrganizationRunResult {
    let c = configuration
    let inputs = max(1, c.inputThreads)
    let flows = c.connections + c.churnFlows
    let traffic = OrganizationTraffic(flows: flows, inputs: inputs, packets: c.packets, seed: c.seed)
    let demux = Demux<QSBR>(configuration: .init(queueCapacity: c.queueCapacity,
                                                 expectedConnections: max(64, flows)))
    let setup = OrganizationSetup(demux: demux, decode: traffic.decoder, groups: c.groups,
                                  coreThreads: c.coreThreads, inputThreads: inputs,
                                  maxConnections: flows + 1, statistics: c.statistics, pinned: c.pinned)
    let org = makeOrganization(c.kind, setup: setup)
    var result = OrganizationRunResult(configuration: c)
    result.groupCount = org.groupCount
    result.coreThreadCount = org.coreThreadCount

    // Sockets: one per flow, all in one ready set; kept alive by `sockets`
    // until the end (the organizations hold them unretained).
    let cpus = onlineCPUCount
    let readerCPU = c.pinned ? cpus - 1 : -1
    let readySet = SocketReadySet(capacity: flows)
    var sockets: [Socket] = []
    var slotFlow = [Int](repeating: -1, count: flows)
    for f in 0..<flows {
        let s = demux.makeSocket(.tcp)
        slotFlow[readySet.add(s)!] = f
        sockets.append(s)
    }
    for f in 0..<c.connections {
        try! sockets[f].connect(to: OrganizationTraffic.remote(f), from: OrganizationTraffic.local,
                                initialReceiveSequence: 0)
        org.attach(sockets[f], key: traffic.keys[f])
    }
    let socketRefs = sockets.map(SocketReference.init(unretained:))
    org.start()

    let parties = inputs + 1 + 1 + (c.churnFlows > 0 ? 1 : 0)
    let barrier = SpinBarrier(parties: parties)
    let done = RunFlag()
    let reader = ReaderReport()
    // Per flow: segments the reader has taken (reader stores, sources load).
    let window = FlowWindow(flows: flows)
    let readerThread = PinnedThread(cpu: readerCPU >= 0 ? readerCPU : nil, name: "org-reader") { [slotFlow] in
        readAll(readySet: readySet, sockets: socketRefs, slotFlow: slotFlow, flows: flows,
                capacity: c.queueCapacity, barrier: barrier, done: done, window: window, report: reader)
    }
    let inputReports = (0..<inputs).map { _ in InputReport() }
    var inputThreads: [PinnedThread<Void>] = []
    for t in 0..<inputs {
        let cpu = c.pinned ? t % cpus : -1
        let input = org.makeInput(index: t)
        let rep = inputReports[t]
        // The input context moves to its thread (a `sending` closure).
        inputThreads.append(PinnedThread(cpu: cpu >= 0 ? cpu : nil, name: "org-input-\(t)") { [input] in
            barrier.wait()
            let cpu0 = threadCPUNanoseconds()
            rep.stats = offerTraffic(traffic, thread: t, through: input, window: window,
                                     limit: c.flowControl ? c.queueCapacity : Int.max,
                                     controlledFlows: c.connections)
            rep.stats.stackCPUNanoseconds += threadCPUNanoseconds() - cpu0
            rep.offered = traffic.counts[t]
        })
    }
    var churnThread: PinnedThread<Void>?
    if c.churnFlows > 0 {
        let churnSockets = Array(sockets[c.connections...])
        let keys = (c.connections..<flows).map { traffic.keys[$0] }
        let first = c.connections
        let box = OrganizationBox(org)
        churnThread = PinnedThread(name: "org-churn") {
            barrier.wait()
            churn(churnSockets, keys: keys, firstFlow: first, through: box.org)
        }
    }
    barrier.wait()
    let t0 = monotonicNanoseconds()
    for t in inputThreads { t.join() }
    churnThread?.join()
    var stats = org.finish()
    let tStack = monotonicNanoseconds()
    // Release: every enqueue and readiness bit happens-before the reader's
    // acquiring load that ends its loop after one more (empty) scan.
    done.value.store(true, ordering: .releasing)
    readySet.wakeReader()
    readerThread.join()
    result.seconds = Double(reader.endNanos - t0) / 1e9
    result.stackSeconds = Double(tStack - t0) / 1e9

    for r in inputReports {
        stats.merge(r.stats)
        result.offered += r.offered
    }
    stats.merge(reader.stats)
    var queueFull = [Int](repeating: 0, count: flows)
    var outOfSequence = 0
    for f in 0..<flows {
        let k = sockets[f].counters
        queueFull[f] = k.droppedQueueFull
        outOfSequence += k.outOfSequence
    }
    demux.table.close(sockets)
    result.drainedAtClose = demux.table.packetsDrainedAtTeardown
    result.delivered = reader.delivered.reduce(0, +)
    result.churnDelivered = reader.delivered[c.connections...].reduce(0, +)
    result.orderErrors = reader.orderErrors
    result.misdelivered = reader.misdelivered
    result.stats = stats
    result.failures = checkRun(result, traffic: traffic, readerDelivered: reader.delivered, queueFull: queueFull,
                               outOfSequence: outOfSequence)
    withExtendedLifetime((traffic, org, readySet)) {}
    return result
}

/// The checks of a run: what is wrong with `r` (empty: nothing).
private func checkRun(_ r: OrganizationRunResult, traffic: OrganizationTraffic, readerDelivered: [Int],
                      queueFull: [Int], outOfSequence: Int) -> [String] {
    let c = r.configuration
    var failures: [String] = []
    let s = r.stats.stack
    if s.offered != r.offered { failures.append("stack saw \(s.offered) of \(r.offered) offered packets") }
    let accounted = r.delivered + s.drops.total + r.drainedAtClose
    if accounted != r.offered {
        failures.append("conservation: delivered \(r.delivered) + dropped \(s.drops.total) + drained \(r.drainedAtClose) != offered \(r.offered)")
    }
    if s.enqueued != r.delivered + r.drainedAtClose {
        failures.append("enqueued \(s.enqueued) != delivered + drained \(r.delivered + r.drainedAtClose)")
    }
    if queueFull.reduce(0, +) != s.drops[.queueFull] { failures.append("queue_full per socket != stack count") }
    for f in 0..<c.connections where readerDelivered[f] + queueFull[f] != traffic.sent[f] {
        failures.append("flow \(f): delivered \(readerDelivered[f]) + queue_full \(queueFull[f]) != sent \(traffic.sent[f])")
        break
    }
    if c.churnFlows == 0 && s.drops.total != s.drops[.queueFull] {
        failures.append("unexpected drops \(s.drops.byReason)")
    }
    if c.flowControl && s.drops[.queueFull] > 0 {
        failures.append("flow control on, yet \(s.drops[.queueFull]) queue_full drops")
    }
    if r.orderErrors > 0 { failures.append("\(r.orderErrors) per-flow order errors at the reader") }
    if r.misdelivered > 0 { failures.append("\(r.misdelivered) packets at the wrong socket") }
    if s.drops[.queueFull] == 0 && outOfSequence > 0 { failures.append("\(outOfSequence) TCP segments out of sequence") }
    return failures
}

/// The churn thread: connects and attaches each churn socket in turn,
/// keeping at most 4 open, closing the oldest (after its first delivered
/// packet, or 20 ms) as the next opens; closes the rest at the end.
private func churn(_ sockets: [Socket], keys: [FlowKey], firstFlow first: Int, through org: any DemuxOrganization) {
    var open: [Int] = []
    for j in 0..<sockets.count {
        try! sockets[j].connect(to: OrganizationTraffic.remote(first + j), from: OrganizationTraffic.local)
        org.attach(sockets[j], key: keys[j])
        open.append(j)
        usleep(200)
        if open.count > 3 {
            let k = open.removeFirst()
            // Give the oldest connection a chance to see traffic before it
            // closes (a deferred organization delivers a little later):
            // wait for its first delivered packet, at most 20 ms. A relaxed
            // load: a progress hint only.
            let deadline = monotonicNanoseconds() + 20_000_000
            while sockets[k].readerSide.pointee.delivered.load(ordering: .relaxed) == 0
                    && monotonicNanoseconds() < deadline {
                usleep(100)
            }
            org.close(sockets[k], key: keys[k])
        }
    }
    for k in open { org.close(sockets[k], key: keys[k]) }
}

/// The driver's "traffic is over" flag for the reader.
private final class RunFlag: Sendable {
    let value = Atomic<Bool>(false)
}

/// Hands the organization to the churn thread.
private final class OrganizationBox: Sendable {
    let org: any DemuxOrganization
    init(_ org: any DemuxOrganization) { self.org = org }
}

/// Written by one thread before it is joined, read by the driver after.
private final class InputReport: @unchecked Sendable {
    // @unchecked Sendable: single writer, read after join.
    var stats = OrganizationStats()
    var offered = 0
}

/// The reader's results: written by the reader before it is joined.
private final class ReaderReport: @unchecked Sendable {
    // @unchecked Sendable: single writer (the reader), read after join.
    var stats = OrganizationStats()
    var delivered: [Int] = []
    var orderErrors = 0, misdelivered = 0
    var endNanos = 0
}

/// The application: takes ready sockets, drains each (one receive call per
/// ready socket), checks flow and per-flow order; parks after a spell of
/// empty scans.
private func readAll(readySet: SocketReadySet, sockets: [SocketReference], slotFlow: [Int], flows: Int,
                     capacity: Int, barrier: SpinBarrier, done: RunFlag, window: FlowWindow,
                     report: ReaderReport) {
    var delivered = [Int](repeating: 0, count: flows)
    var last = [Int](repeating: -1, count: flows)
    var stats = OrganizationStats()
    var orderErrors = 0, misdelivered = 0
    barrier.wait()
    let switches = ThreadContextSwitches.now()
    let cpu0 = threadCPUNanoseconds()
    stats.parks = pollUntilFinished(spinning: 256, {
        let finished = done.value.load(ordering: .acquiring)
        var found = 0
        _ = readySet.takeReady { slot in
            let f = slotFlow[slot]
            var l = last[f]
            let got = sockets[f].withSocket { s in
                s.receive(upTo: capacity) { w in
                    let (pf, n) = OrganizationTraffic.decode(w)
                    if pf != f { misdelivered &+= 1 }
                    if Int(n) <= l { orderErrors &+= 1 }
                    l = Int(n)
                }
            }
            last[f] = l
            if got > 0 { window.didTake(flow: f, upTo: l) }
            delivered[f] &+= got
            found &+= got
            stats.socketQueueConsumer.queueOps &+= 1
            stats.socketQueueConsumer.batchSizes.record(got)
        }
        if found > 0 { return .progress }
        // `finished` was read before this empty scan: nothing is left.
        return finished ? .finished : .idle
    }, park: {
        readySet.parkUntilReady(extraCheck: { done.value.load(ordering: .acquiring) })
    })
    report.endNanos = monotonicNanoseconds()
    ThreadContextSwitches.record(since: switches, into: &stats)
    stats.readerCPUNanoseconds = threadCPUNanoseconds() - cpu0
    report.stats = stats
    report.delivered = delivered
    report.orderErrors = orderErrors
    report.misdelivered = misdelivered
}
