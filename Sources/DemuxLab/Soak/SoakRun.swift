import FastDemux
import Glibc
import SMPPrimitives
import Synchronization

/// A long run of one ``Demux`` under synthetic and hostile traffic with
/// continuous socket churn, reporting memory, reclamation backlog and
/// conservation at every interval (`fastdemux soak`).
///
/// Threads:
/// - the input thread (QSBR) writes ``SoakTraffic`` frames into pool
///   buffers, parses them, opens per-flow sockets through a
///   ``FlowSocketTable`` (cap, idle expiry swept on this thread) and
///   delivers them in bursts of 32;
/// - the consumer drains every flow socket through a ``SocketReadySet`` and
///   removes expired sockets from it;
/// - the churn thread binds UDP, listens TCP and connects UDP sockets on the
///   ports the hostile traffic aims at, then closes them (half with
///   ``Socket/close()``, half with ``Socket/closeDeferred()`` followed by
///   ``Demux/barrier()``), round after round; their queued packets are
///   drained at close.
///
/// At each report the input thread pauses traffic and waits (offline, at
/// most ``SoakConfiguration/settleTimeout``) until every packet it offered
/// is accounted for: `offered == delivered + drops`, where drops are the
/// input's by reason plus the packets drained from sockets at close. Every
/// counter only grows and each packet moves once from "in flight" to one
/// of them, so equality can only be observed once nothing is in flight:
/// the check is exact, not a snapshot of moving counters.
///
/// Concurrency contract: ``run(onReport:)`` is synchronous; it starts and
/// joins its threads and calls `onReport` on the input thread.
public final class SoakRun {
    public let configuration: SoakConfiguration

    public init(_ configuration: SoakConfiguration) {
        self.configuration = configuration
    }

    /// Runs for ``SoakConfiguration/duration`` seconds and returns the
    /// reports and verdicts.
    public func run(onReport: @escaping @Sendable (SoakReport) -> Void) -> SoakSummary {
        // The heap in use before anything of the run exists, and again
        // once all of it is gone (threads joined, sockets closed, tables,
        // pool and demultiplexer freed, every call_rcu callback run): what
        // the run allocated and never freed (SoakSummary.heapResidual).
        let heapBefore = heapBytesInUse()
        let reports = runTraffic(onReport)
        QSBR.barrier()
        let heapAfter = heapBytesInUse()
        return Self.summarize(reports, configuration, heapResidual: heapAfter - heapBefore)
    }

    /// The run itself; everything it makes is released when it returns.
    private func runTraffic(_ onReport: @escaping @Sendable (SoakReport) -> Void) -> [SoakReport] {
        let state = SoakState(configuration)
        let consumer = PinnedThread(name: "soak-consumer") { state.consume() }
        let churn = PinnedThread(name: "soak-churn") { state.churn() }
        let input = PinnedThread(name: "soak-input") { state.generate(onReport) }
        let reports = input.join()
        state.stop.store(true, ordering: .releasing)
        state.readySet.wakeReader()
        churn.join()
        consumer.join()
        state.teardown()
        return reports
    }

    /// The verdicts. Resident memory is judged over the window that starts
    /// at the report nearest mid-run, or later, at the first report at
    /// which the working set had reached its final size: the peak of open
    /// flow sockets and the peak of the reclamation backlog no longer
    /// rose after it. A bounded structure reaching a new high-water mark
    /// (say the flow socket cap first reached late in the run, because the
    /// machine got faster and more flows were live at once) raises RSS in
    /// a step that glibc does not give back, and is not a leak; growth
    /// while the working set stays within its earlier peaks is. If the
    /// peaks rose in the last interval, RSS is not judged (said in the
    /// summary); the heap check below still is.
    ///
    /// The heap check: `heapResidual`, the bytes of heap in use after
    /// teardown (every socket closed, every grace period over, every
    /// thread joined) minus before the traffic started, must stay within
    /// ``SoakConfiguration/heapResidualLimit``. It is independent of how
    /// fast the machine ran: a leaked PCB node or socket per close shows
    /// there in full, whatever the working set did.
    static func summarize(_ reports: [SoakReport], _ c: SoakConfiguration, heapResidual: Int? = nil) -> SoakSummary {
        var failures: [String] = []
        for r in reports where !r.conserved {
            failures.append("conservation broken at report \(r.index) (\(Int(r.seconds.rounded())) s): offered \(r.offered) != "
                            + "delivered \(r.delivered) + dropped \(r.dropped)")
        }
        var secondHalf: Int?
        var growth: Int?
        var judgedFrom: Double?
        var limit = c.rssGrowthLimit
        if let last = reports.last, reports.count >= 2 {
            let half = last.seconds / 2
            let midIndex = reports.indices.dropLast().min {
                abs(reports[$0].seconds - half) < abs(reports[$1].seconds - half)
            }!
            let mid = reports[midIndex]
            secondHalf = last.residentBytes - mid.residentBytes
            // The first report from which the working-set peaks stay at
            // their final values.
            let settled = reports.indices.first {
                reports[$0].flowSockets.peakOpen == last.flowSockets.peakOpen
                    && reports[$0].reclamationPeak == last.reclamationPeak
            }!
            let from = reports[max(midIndex, settled)]
            limit = max(c.rssGrowthLimit, from.residentBytes / 20)
            if from.index < last.index {
                let g = last.residentBytes - from.residentBytes
                growth = g
                judgedFrom = from.seconds
                if g > limit {
                    failures.append("resident memory did not level off: +\(g >> 10) KiB from \(Int(from.seconds.rounded())) s to "
                                    + "\(Int(last.seconds.rounded())) s (limit \(limit >> 10) KiB)")
                }
            }
        }
        if let heapResidual, heapResidual > c.heapResidualLimit {
            failures.append("heap in use after teardown exceeds that before the traffic by \(heapResidual >> 10) KiB "
                            + "(limit \(c.heapResidualLimit >> 10) KiB): something allocated per packet or socket was not freed")
        }
        if reports.isEmpty { failures.append("no report") }
        return SoakSummary(reports: reports, secondHalfGrowth: secondHalf, growth: growth, growthJudgedFrom: judgedFrom,
                           growthLimit: limit, heapResidual: heapResidual, heapResidualLimit: c.heapResidualLimit,
                           failures: failures)
    }
}

/// The shared state of one soak run.
// @unchecked Sendable: each mutable field has one owner thread (noted);
// cross-thread counters are atomics; the threads are joined before
// teardown.
final class SoakState: @unchecked Sendable {
    let config: SoakConfiguration
    let pool: PacketPool
    let demux: Demux<QSBR>
    let readySet: SocketReadySet
    let flowSockets: FlowSocketTable<QSBR>
    let stop = Atomic<Bool>(false)
    /// Written by the consumer only (load + store), read by the input thread.
    let delivered = Atomic<Int>(0)
    let binds = Atomic<Int>(0)
    let closes = Atomic<Int>(0)
    let churnOpen = Atomic<Int>(0)

    init(_ c: SoakConfiguration) {
        config = c
        pool = PacketPool(bufferCount: c.poolBuffers)
        demux = Demux<QSBR>(configuration: .init(queueCapacity: c.queueCapacity, pool: pool))
        readySet = SocketReadySet(capacity: c.flowLimits.maxSockets)
        flowSockets = FlowSocketTable(demux: demux, readySet: readySet, limits: c.flowLimits)
    }

    func teardown() {
        // Every thread has stopped: this thread is the ready set's reader now.
        flowSockets.closeAll()
        flowSockets.reap()
        demux.barrier()
    }

    // MARK: Input thread

    func generate(_ onReport: @Sendable (SoakReport) -> Void) -> [SoakReport] {
        QSBR.registerThread()
        defer { QSBR.unregisterThread() }
        let input = demux.makeInput()
        let parser = PacketParser()
        var cache = PacketPool.Cache(pool: pool)
        var traffic = SoakTraffic(steadyFlows: config.steadyFlows, seed: config.seed)
        var reports: [SoakReport] = []
        let t0 = monotonicSeconds()
        let end = t0 + config.duration
        var nextReport = t0 + config.reportInterval
        var now = t0
        var last = (seconds: 0.0, offered: 0)
        while true {
            var starved = false
            input.burst { b in
                for _ in 0..<32 {
                    guard let p = cache.allocate() else {
                        starved = true
                        return
                    }
                    let (length, admit) = traffic.next(into: pool.buffer(p))
                    pool.setLength(length, of: p)
                    switch parser.parse(pool.bytes(p), linkType: .ethernet) {
                    case .dropped(let reason):
                        b.drop(parseReason: reason)
                        cache.free(p)
                    case .packet(let parsed):
                        if admit { _ = flowSockets.admit(parsed.flow, now: now) }
                        if case .dropped = b.deliver(p, key: parsed.flow, tcp: parsed.tcp,
                                                     payloadLength: parsed.payloadLength) {
                            cache.free(p)
                        }
                    }
                }
            }
            input.quiescent()
            now = monotonicSeconds()
            flowSockets.sweepIfDue(now: now)
            if starved { QSBR.withThreadOffline { backoff() } }
            guard now >= nextReport || now >= end else { continue }
            var r = settle(input.stats, index: reports.count + 1, seconds: now - t0)
            r.packetsPerSecond = Double(r.offered - last.offered) / max(1e-9, r.seconds - last.seconds)
            last = (r.seconds, r.offered)
            reports.append(r)
            onReport(r)
            if now >= end { break }
            // The pause is not traffic time: the next interval starts now.
            now = monotonicSeconds()
            nextReport = now + config.reportInterval
        }
        return reports
    }

    /// Input thread, traffic paused: waits until every offered packet is
    /// accounted for (or the settle timeout), then takes the report.
    func settle(_ stats: DemuxStats, index: Int, seconds: Double) -> SoakReport {
        let deadline = monotonicSeconds() + config.settleTimeout
        var conserved = false
        var drained = 0, took = 0
        while true {
            // Each counter only grows and a packet is counted once, so the
            // sum can equal `offered` only when nothing is in flight (a
            // stale read can only make the sum smaller); the drained count
            // is a relaxed load for that reason, `delivered` acquires the
            // consumer's frees.
            took = delivered.load(ordering: .acquiring)
            drained = demux.table.packetsDrainedAtTeardown
            let accounted = took + stats.drops.total + drained
            if accounted == stats.offered { conserved = true; break }
            if accounted > stats.offered || monotonicSeconds() > deadline { break }
            // Offline: the churn thread's closes and the sweeps wait for
            // grace periods, which must not wait for this pause.
            QSBR.withThreadOffline { _ = usleep(1000) }
        }
        var drops: [(String, Int)] = []
        for reason in DemuxDropReason.allCases {
            drops.append((reason.description, stats.drops[reason] + (reason == .socketClosed ? drained : 0)))
        }
        var parseDrops: [(String, Int)] = []
        for reason in DropReason.allCases where stats.parseDrops[Int(reason.rawValue)] > 0 {
            parseDrops.append((reason.name, stats.parseDrops[Int(reason.rawValue)]))
        }
        let backlog = demux.table.reclamationBacklog
        return SoakReport(
            index: index, seconds: seconds, residentBytes: residentMemoryBytes(),
            reclamationPending: backlog.pending, reclamationPeak: backlog.peak,
            offered: stats.offered, delivered: took, drops: drops, parseDrops: parseDrops, drainedAtClose: drained,
            conserved: conserved,
            socketsOpen: flowSockets.counters.open + churnOpen.load(ordering: .relaxed),
            connectedEntries: demux.table.connectedCount, boundEntries: demux.table.boundCount,
            flowSockets: flowSockets.counters,
            binds: binds.load(ordering: .relaxed), closes: closes.load(ordering: .relaxed),
            packetsPerSecond: 0)
    }

    // MARK: Consumer

    func consume() {
        var cache = PacketPool.Cache(pool: pool)
        let taken = UnsafeMutablePointer<PacketRef>.allocate(capacity: 64)
        defer { taken.deallocate() }
        var count = 0
        func drain(_ s: Socket) {
            s.drainBatches(into: taken) { batch in
                for p in batch { cache.free(p) }
                count += batch.count
                // Releasing: the frees above happen before the input thread
                // sees the count (it may then reuse the buffers' memory
                // through the pool, which has its own lock anyway).
                delivered.store(count, ordering: .releasing)
            }
        }
        while true {
            // Acquire: pairs with run()'s release after the input thread
            // joined: every readiness bit set before is visible below.
            let done = stop.load(ordering: .acquiring)
            flowSockets.reap()
            let ready = readySet.takeReady { slot in
                if let s = readySet.socket(at: slot) { drain(s) }
            }
            if ready > 0 { continue }
            if done { break }
            readySet.parkUntilReady(extraCheck: { stop.load(ordering: .acquiring) })
        }
    }

    // MARK: Churn

    func churn() {
        var round = 0
        let n = min(config.churnBatch, 64)
        var open: [Socket] = []
        open.reserveCapacity(n)
        while !stop.load(ordering: .relaxed) {
            round += 1
            for j in 0..<n {
                let kind = (j + round) % 4
                let s = demux.makeSocket(kind == 2 ? .tcp : .udp)
                let any = IPAddress(ipv4: 0)
                let local = IPAddress(ipv4: 0x0a00_0009)
                do {
                    switch kind {
                    case 0, 1: try s.bind(InetEndpoint(kind == 0 ? any : local, SoakTraffic.churnUDPBase + UInt16(j)))
                    case 2:
                        try s.bind(InetEndpoint(any, SoakTraffic.churnTCPBase + UInt16(j)))
                        try s.listen()
                    default:
                        try s.connect(to: InetEndpoint(IPAddress(ipv4: 0xc000_0200 | UInt32(j)), 40000),
                                      from: InetEndpoint(local, SoakTraffic.churnUDPBase + 64 + UInt16(j)))
                    }
                    binds.add(1, ordering: .relaxed)
                } catch {
                    // Not expected (every port is free again by the end of a
                    // round); the socket is closed with the others, uncounted.
                }
                open.append(s)
                churnOpen.add(1, ordering: .relaxed)
            }
            // Half closed one by one (a grace period each), half deferred
            // and then waited for with a barrier: the barrier is the
            // back-pressure that keeps deferred teardowns (and the RCU
            // callbacks behind them) from piling up.
            for (i, s) in open.enumerated() {
                if i % 2 == 0 { s.close() } else { s.closeDeferred() }
            }
            demux.barrier()
            closes.add(open.count, ordering: .relaxed)
            churnOpen.subtract(open.count, ordering: .relaxed)
            open.removeAll(keepingCapacity: true)
        }
    }
}
