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

/// The comparison's packets: flow keys and per-input packet words.
/// Immutable after init (any thread reads it).
final class OrganizationTraffic: @unchecked Sendable {
    // @unchecked Sendable: written in init only.
    static let payload = 64
    static let local = InetEndpoint(IPAddress(ipv4: 0x0a00_0001), 80)
    let flowCount: Int
    let keys: UnsafeMutablePointer<FlowKey>
    /// Per input thread: its packet words.
    let words: [UnsafeMutablePointer<PacketRef>]
    let counts: [Int]
    /// Segments generated per flow.
    let sent: [Int]

    init(flows: Int, inputs: Int, packets: Int, seed: UInt64) {
        flowCount = flows
        keys = .allocate(capacity: flows)
        for i in 0..<flows { (keys + i).initialize(to: Self.key(i)) }
        var r = Xoshiro256StarStar(seed: seed)
        var sent = [Int](repeating: 0, count: flows)
        var words: [UnsafeMutablePointer<PacketRef>] = []
        var counts: [Int] = []
        for t in 0..<inputs {
            let mine = Array(stride(from: t, to: flows, by: inputs))
            let n = mine.isEmpty ? 0 : packets / inputs
            let w = UnsafeMutablePointer<PacketRef>.allocate(capacity: max(1, n))
            for j in 0..<n {
                let f = mine[Int(r.below(UInt32(mine.count)))]
                w[j] = PacketRef(word: (UInt(f) << 32 | UInt(sent[f])) &+ 1)
                sent[f] += 1
            }
            words.append(w)
            counts.append(n)
        }
        self.words = words
        self.counts = counts
        self.sent = sent
    }

    deinit {
        keys.deallocate()
        for w in words { w.deallocate() }
    }

    static func remote(_ i: Int) -> InetEndpoint {
        InetEndpoint(IPAddress(ipv4: 0x6440_0000 &+ UInt32(i)), UInt16(1024 + i % 60_000))
    }

    static func key(_ i: Int) -> FlowKey { .connected(.tcp, local: local, remote: remote(i)) }

    @inline(__always)
    static func decode(_ w: PacketRef) -> (flow: Int, n: UInt32) {
        let v = w.word &- 1
        return (Int(v >> 32), UInt32(truncatingIfNeeded: v))
    }

    var decoder: PacketDecoder {
        return { [self] w in
            let (f, n) = Self.decode(w)
            return DemuxPacket(packet: w, key: self.keys[f],
                               tcp: TCPSegmentInfo(sequenceNumber: n &* UInt32(Self.payload), acknowledgmentNumber: 0,
                                                   flags: [.psh, .ack], window: 0xffff),
                               payloadLength: Self.payload)
        }
    }
}

/// Runs `configuration` once and checks it: every offered packet delivered
/// or counted as dropped (exactly once), per-flow order kept at the reader
/// and in the TCP receive state, every packet at its own socket.
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
        s.readerCPU = readerCPU
        slotFlow[readySet.add(s)!] = f
        sockets.append(s)
    }
    for f in 0..<c.connections {
        try! sockets[f].connect(to: OrganizationTraffic.remote(f), from: OrganizationTraffic.local,
                                initialReceiveSequence: 0)
        org.attach(sockets[f], key: traffic.keys[f])
    }
    let socketRefs = sockets.map { Unmanaged.passUnretained($0) }
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
        let ctx = org.makeInput(index: t, cpu: cpu)
        let count = traffic.counts[t]
        let decode = traffic.decoder
        let rep = inputReports[t]
        // The context moves to its thread (a `sending` closure).
        inputThreads.append(PinnedThread(cpu: cpu >= 0 ? cpu : nil, name: "org-input-\(t)") { [ctx] in
            let burst = UnsafeMutablePointer<DemuxPacket>.allocate(capacity: 32)
            defer { burst.deallocate() }
            let words = traffic.words[t]
            let limit = c.flowControl ? c.queueCapacity : Int.max
            let controlled = c.connections
            barrier.wait()
            let cpu0 = threadCPUNanoseconds()
            ctx.begin()
            var i = 0, bursts = 0
            while i < count {
                var m = 0
                let end = min(count, i + 32)
                while i < end {
                    let w = words[i]
                    if limit != Int.max {
                        let (f, seq) = OrganizationTraffic.decode(w)
                        if f < controlled && !window.hasRoom(flow: f, segment: Int(seq), window: limit) {
                            // Hand over what is built so far (the reader may
                            // be waiting for it), then wait for the window.
                            if m > 0 { ctx.deliver(UnsafeBufferPointer(start: burst, count: m)) }
                            m = 0
                            ctx.quiescent()
                            window.waitForRoom(flow: f, segment: Int(seq), window: limit)
                        }
                    }
                    burst[m] = decode(w)
                    m += 1
                    i += 1
                }
                if m > 0 { ctx.deliver(UnsafeBufferPointer(start: burst, count: m)) }
                bursts &+= 1
                if bursts & 7 == 0 { ctx.quiescent() }
            }
            rep.stats = ctx.end()
            rep.stats.stackCPUNanoseconds += threadCPUNanoseconds() - cpu0
            rep.offered = count
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
            let org = box.org
            var open: [Int] = []
            for j in 0..<churnSockets.count {
                try! churnSockets[j].connect(to: OrganizationTraffic.remote(first + j), from: OrganizationTraffic.local)
                org.attach(churnSockets[j], key: keys[j])
                open.append(j)
                usleep(200)
                if open.count > 3 {
                    let k = open.removeFirst()
                    // Give the oldest connection a chance to see traffic
                    // before it closes (a deferred organization delivers a
                    // little later): wait for its first delivered packet, at
                    // most 20 ms. A relaxed load: a progress hint only.
                    let deadline = monotonicNanoseconds() + 20_000_000
                    while churnSockets[k].readerSide.pointee.delivered.load(ordering: .relaxed) == 0
                            && monotonicNanoseconds() < deadline {
                        usleep(100)
                    }
                    org.close(churnSockets[k], key: keys[k])
                }
            }
            for k in open { org.close(churnSockets[k], key: keys[k]) }
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

    // The checks.
    var failures: [String] = []
    let s = stats.stack
    if s.offered != result.offered { failures.append("stack saw \(s.offered) of \(result.offered) offered packets") }
    let accounted = result.delivered + s.drops.total + result.drainedAtClose
    if accounted != result.offered {
        failures.append("conservation: delivered \(result.delivered) + dropped \(s.drops.total) + drained \(result.drainedAtClose) != offered \(result.offered)")
    }
    if s.enqueued != result.delivered + result.drainedAtClose {
        failures.append("enqueued \(s.enqueued) != delivered + drained \(result.delivered + result.drainedAtClose)")
    }
    if queueFull.reduce(0, +) != s.drops[.queueFull] { failures.append("queue_full per socket != stack count") }
    for f in 0..<c.connections where reader.delivered[f] + queueFull[f] != traffic.sent[f] {
        failures.append("flow \(f): delivered \(reader.delivered[f]) + queue_full \(queueFull[f]) != sent \(traffic.sent[f])")
        break
    }
    if c.churnFlows == 0 && s.drops.total != s.drops[.queueFull] {
        failures.append("unexpected drops \(s.drops.byReason)")
    }
    if c.flowControl && s.drops[.queueFull] > 0 {
        failures.append("flow control on, yet \(s.drops[.queueFull]) queue_full drops")
    }
    if result.orderErrors > 0 { failures.append("\(result.orderErrors) per-flow order errors at the reader") }
    if result.misdelivered > 0 { failures.append("\(result.misdelivered) packets at the wrong socket") }
    if s.drops[.queueFull] == 0 && outOfSequence > 0 { failures.append("\(outOfSequence) TCP segments out of sequence") }
    result.failures = failures
    withExtendedLifetime((traffic, org, readySet)) {}
    return result
}

/// The flow-control state: per flow, the number of segments the reader
/// has taken.
private final class FlowWindow: @unchecked Sendable {
    // @unchecked Sendable: raw memory of atomics.
    let taken: UnsafeMutablePointer<Atomic<Int>>
    let count: Int

    init(flows: Int) {
        count = flows
        taken = .allocate(capacity: flows)
        for i in 0..<flows { (taken + i).initialize(to: Atomic(0)) }
    }

    deinit {
        taken.deinitialize(count: count)
        taken.deallocate()
    }

    /// Source side: whether segment `segment` of `flow` fits in the window.
    @inline(__always)
    func hasRoom(flow: Int, segment: Int, window: Int) -> Bool {
        // Relaxed: only a pacing decision; no data is read on its strength.
        segment - taken[flow].load(ordering: .relaxed) < window
    }

    /// Source side: waits (spinning, then yielding) until it fits.
    func waitForRoom(flow: Int, segment: Int, window: Int) {
        var spins = 0
        while segment - taken[flow].load(ordering: .relaxed) >= window {
            spins &+= 1
            if spins & 15 == 0 { sched_yield() } else { spinLoopHint() }
        }
    }
}

private final class RunFlag: Sendable {
    let value = Atomic<Bool>(false)
}

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
private func readAll(readySet: SocketReadySet, sockets: [Unmanaged<Socket>], slotFlow: [Int], flows: Int,
                     capacity: Int, barrier: SpinBarrier, done: RunFlag, window: FlowWindow,
                     report: ReaderReport) {
    var delivered = [Int](repeating: 0, count: flows)
    var last = [Int](repeating: -1, count: flows)
    var stats = OrganizationStats()
    var orderErrors = 0, misdelivered = 0
    barrier.wait()
    let switches = ThreadContextSwitches.now()
    let cpu0 = threadCPUNanoseconds()
    var idle = 0
    while true {
        let finished = done.value.load(ordering: .acquiring)
        var found = 0
        _ = readySet.takeReady { slot in
            let f = slotFlow[slot]
            var l = last[f]
            let got = sockets[f]._withUnsafeGuaranteedRef { s in
                s.receive(upTo: capacity) { w in
                    let (pf, n) = OrganizationTraffic.decode(w)
                    if pf != f { misdelivered &+= 1 }
                    if Int(n) <= l { orderErrors &+= 1 }
                    l = Int(n)
                }
            }
            last[f] = l
            if got > 0 { window.taken[f].store(l + 1, ordering: .relaxed) }
            delivered[f] &+= got
            found &+= got
            stats.socketQueueConsumer.queueOps &+= 1
            stats.socketQueueConsumer.batchSizes.record(got)
        }
        if found > 0 {
            idle = 0
            continue
        }
        // `finished` was read before this empty scan: nothing is left.
        if finished { break }
        idle &+= 1
        if idle < 256 {
            spinLoopHint()
            continue
        }
        stats.parks &+= 1
        readySet.parkUntilReady(extraCheck: { done.value.load(ordering: .acquiring) })
        idle = 0
    }
    report.endNanos = monotonicNanoseconds()
    ThreadContextSwitches.record(since: switches, into: &stats)
    stats.readerCPUNanoseconds = threadCPUNanoseconds() - cpu0
    report.stats = stats
    report.delivered = delivered
    report.orderErrors = orderErrors
    report.misdelivered = misdelivered
}
