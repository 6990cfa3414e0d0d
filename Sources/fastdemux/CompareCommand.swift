import DemuxLab
import ArgumentParser
import FastDemux
import Glibc
import SMPPrimitives
import Workloads

/// `fastdemux compare`: one synthetic workload run under each parallel
/// organization (MsgP, ConnP-T, ConnP-L, the fast path direct and deferred)
/// across the paper's axes, with the hand-off and synchronization
/// statistics side by side.
struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Run one synthetic TCP workload under each parallel organization and compare throughput, hand-off and synchronization statistics.",
        discussion: """
            Organizations: \(OrganizationKind.allCases.map(\.rawValue).joined(separator: ", ")) \
            (docs/Organizations.md). ConnP-L runs once per --groups value. Exits non-zero if any run \
            fails its checks (conservation, per-flow order, TCP sequence, delivery to the right socket).

            With --json, one JSON object per run, one per line, with schemaVersion (\(JSONSchema.version); \
            raised when a field is removed or changes meaning) and version (the package version).
            """
    )

    @Option(help: ArgumentHelp("Organizations to run, comma-separated or repeated.", valueName: "name,..."))
    var organizations: [CommaList<OrganizationKind>] = [CommaList(OrganizationKind.allCases)]

    @Option(help: ArgumentHelp("Connection counts, comma-separated or repeated (the paper used 6, 192 and 16384).",
                               valueName: "n,..."))
    var connections: [CommaList<Int>] = [CommaList([6, 192, 16384])]

    @Option(help: ArgumentHelp("ConnP-L group counts, comma-separated or repeated (the paper used 4 and 128).",
                               valueName: "n,..."))
    var groups: [CommaList<Int>] = [CommaList([4, 128])]

    @Option(help: ArgumentHelp("Input threads (packets are steered to them by flow, RSS-style).", valueName: "n"))
    var inputThreads: Int = onlineCPUCount

    @Option(help: ArgumentHelp("Core threads of ConnP-T and workers of the deferred fast path.", valueName: "n"))
    var coreThreads: Int = onlineCPUCount

    @Option(help: ArgumentHelp("Packets offered per run.", valueName: "n"))
    var packets: Int = 1_000_000

    @Option(help: ArgumentHelp("Socket receive-queue capacity.", valueName: "n"))
    var queueCapacity: Int = 256

    @Option(help: ArgumentHelp("Runs per configuration; the run with the median throughput is reported (all must pass their checks).", valueName: "n"))
    var `repeat`: Int = 1

    @Flag(help: "Open loop: no per-connection window; socket queues overflow (queue_full drops) when the reader falls behind.")
    var openLoop = false

    @Flag(help: "Also run each configuration with statistics off and report the throughput overhead of counting.")
    var overhead = false

    @Flag(help: "Run with statistics counting off (throughput only).")
    var noStatistics = false

    @Flag(help: "Print one JSON object per run, one per line.")
    var json = false

    func validate() throws {
        if !connections.joined().allSatisfy({ $0 > 0 }) { throw ValidationError("--connections: counts must be positive") }
        if !groups.joined().allSatisfy({ $0 > 0 }) { throw ValidationError("--groups: counts must be positive") }
        if organizations.joined().isEmpty { throw ValidationError("--organizations: name at least one") }
        if connections.joined().isEmpty { throw ValidationError("--connections: give at least one count") }
        if groups.joined().isEmpty { throw ValidationError("--groups: give at least one count") }
        if inputThreads < 1 || inputThreads > 64 { throw ValidationError("--input-threads: 1...64") }
        if coreThreads < 1 || coreThreads > 64 { throw ValidationError("--core-threads: 1...64") }
        if `repeat` < 1 || `repeat` > 99 { throw ValidationError("--repeat: 1...99") }
        if packets < 1 { throw ValidationError("--packets must be positive") }
        if queueCapacity < 2 { throw ValidationError("--queue-capacity must be at least 2") }
    }

    func run() throws {
        let kinds: [OrganizationKind] = organizations.joined()
        let conns: [Int] = connections.joined()
        let groupList: [Int] = groups.joined()
        var rows: [(OrganizationRunResult, Double?)] = []
        var failed = false
        if !json {
            print(CompareTable.header(overhead: overhead))
        }
        for n in conns {
            for kind in kinds {
                for g in kind.usesGroups ? groupList : [groupList[0]] {
                    var c = OrganizationRunConfiguration(kind: kind, connections: n)
                    c.groups = g
                    c.inputThreads = inputThreads
                    c.coreThreads = coreThreads
                    c.packets = packets
                    c.queueCapacity = queueCapacity
                    c.statistics = !noStatistics
                    c.flowControl = !openLoop
                    // Interleaved (on, off, on, off, ...) so that drifts in
                    // machine load hit both alike; medians of each.
                    var on: [OrganizationRunResult] = []
                    var offRuns: [OrganizationRunResult] = []
                    for _ in 0..<`repeat` {
                        on.append(runOrganization(c))
                        if overhead {
                            var c2 = c
                            c2.statistics = false
                            offRuns.append(runOrganization(c2))
                        }
                    }
                    if on.contains(where: { !$0.checked }) || offRuns.contains(where: { !$0.checked }) { failed = true }
                    var r = median(on)
                    if let bad = on.first(where: { !$0.checked }) { r = bad }
                    let off = offRuns.isEmpty ? nil : median(offRuns).mpps
                    if json {
                        try printJSONLine(CompareRunJSON(r, statsOffMpps: off, runs: `repeat`))
                    } else {
                        print(CompareTable.row(r, statsOffMpps: off))
                        for f in r.failures { print("  FAILED: \(f)") }
                    }
                    fflush(nil)
                    rows.append((r, off))
                }
            }
        }
        if !json && overhead {
            let pairs = rows.compactMap { r, off in off.map { (r.mpps, $0) } }
            if !pairs.isEmpty {
                let mean = pairs.map { ($0.1 - $0.0) / $0.1 * 100 }.reduce(0, +) / Double(pairs.count)
                print("statistics overhead: mean \(CompareTable.f(mean, 1))% of stats-off throughput over \(pairs.count) runs")
            }
        }
        if failed { throw ExitCode(1) }
    }
}

/// The run with the median delivered throughput.
func median(_ runs: [OrganizationRunResult]) -> OrganizationRunResult {
    runs.sorted { $0.mpps < $1.mpps }[runs.count / 2]
}

/// Rendering of compare results.
enum CompareTable {
    static func header(overhead: Bool) -> String {
        pad("organization", 18) + pad("grp", 5) + pad("conns", 7) + pad(overhead ? "Mpps on/off" : "Mpps", overhead ? 12 : 7)
            + pad("stack", 7) + pad("cpu ns/p", 9) + rest
    }

    static let rest = ""
        + pad("rmw/p", 7) + pad("rmw~/p", 7) + pad("lock/p", 7) + pad("cont/p", 8) + pad("cont%", 7) + pad("wake/p", 8)
        + pad("csw/p", 8) + pad("xcore/p", 8) + pad("coreQ hw", 9) + pad("coreQ bat", 10) + pad("sockQ bat", 10)
        + pad("drops", 7) + "checked"

    static func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count)
    }

    /// Fixed-point text with `digits` decimals (no Foundation).
    static func f(_ v: Double, _ digits: Int = 3) -> String {
        guard v.isFinite else { return "-" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let n = Int((abs(v) * scale).rounded())
        let whole = n / Int(scale), frac = n % Int(scale)
        var fs = String(frac)
        while fs.count < digits { fs = "0" + fs }
        return (v < 0 && n != 0 ? "-" : "") + String(whole) + (digits > 0 ? "." + fs : "")
    }

    static func name(_ r: OrganizationRunResult) -> String { r.configuration.kind.rawValue }

    static func row(_ r: OrganizationRunResult, statsOffMpps: Double?) -> String {
        let s = r.stats, y = s.stack.sync
        let cont = y.lockAcquisitions > 0 ? Double(y.contendedAcquisitions) / Double(y.lockAcquisitions) * 100 : 0
        let coreBatch = s.coreQueueConsumer.queueOps > 0 ? Double(s.stack.offered) / Double(s.coreQueueConsumer.queueOps) : 0
        let sockBatch = s.socketQueueConsumer.queueOps > 0 ? Double(r.delivered) / Double(s.socketQueueConsumer.queueOps) : 0
        var mpps = f(r.mpps, 2)
        if let off = statsOffMpps { mpps += "/" + f(off, 2) }
        return pad(name(r), 18) + pad(String(r.groupCount), 5) + pad(String(r.configuration.connections), 7)
            + pad(mpps, statsOffMpps == nil ? 7 : 12) + pad(f(r.stackMpps, 2), 7)
            + pad(f(r.stackCPUNanosecondsPerPacket, 0), 9)
            + pad(f(r.perDelivered(y.atomicRMWs), 2), 7) + pad(f(r.perDelivered(y.modelledAtomicRMWs), 2), 7)
            + pad(f(r.perDelivered(y.lockAcquisitions), 2), 7)
            + pad(f(r.perDelivered(y.contendedAcquisitions), 4), 8) + pad(f(cont, 1), 7)
            + pad(f(r.perDelivered(y.wakeups), 4), 8) + pad(f(r.perDelivered(s.contextSwitches), 4), 8)
            + pad(f(r.perDelivered(y.crossCoreHandoffs), 2), 8)
            + pad(s.coreQueue.highWater == 0 && r.coreThreadCount == 0 ? "-" : String(s.coreQueue.highWater), 9)
            + pad(r.coreThreadCount == 0 ? "-" : f(coreBatch, 1), 10) + pad(f(sockBatch, 1), 10)
            + pad(String(s.stack.drops.total), 7) + (r.checked ? "true" : "FALSE")
    }
}

/// The `--json` object of one `compare` run (one line, ``JSONLine``).
/// Per-delivered figures have four decimals, other rates three.
struct CompareRunJSON: Encodable {
    let schemaVersion = JSONSchema.version
    let version = packageVersion
    var organization: String
    var connections: Int
    var groups: Int
    var inputThreads: Int
    var coreThreads: Int
    var packets: Int
    var seconds: JSONDouble
    var mpps: JSONDouble
    var stackSeconds: JSONDouble
    var stackMpps: JSONDouble
    var checked: Bool
    var flowControl: Bool
    var stackCPUNsPerPacket: JSONDouble
    var readerCPUNsPerDelivered: JSONDouble
    var statistics: Bool
    var runs: Int
    var delivered: Int
    var dropped: [String: Int]
    var drainedAtClose: Int
    var acks: Int
    var perDelivered: PerDelivered
    var totals: Totals
    var handoffs: Handoffs
    /// With --overhead: the same configuration with statistics off.
    var statsOffMpps: JSONDouble?
    var statsOverheadPercent: JSONDouble?
    /// The checks that failed (absent when none did).
    var failures: [String]?

    enum CodingKeys: String, CodingKey {
        case schemaVersion, version, organization, connections, groups, inputThreads = "input_threads"
        case coreThreads = "core_threads", packets, seconds, mpps, stackSeconds = "stack_seconds"
        case stackMpps = "stack_mpps", checked, flowControl = "flow_control"
        case stackCPUNsPerPacket = "stack_cpu_ns_per_packet", readerCPUNsPerDelivered = "reader_cpu_ns_per_delivered"
        case statistics, runs, delivered, dropped, drainedAtClose = "drained_at_close", acks
        case perDelivered = "per_delivered", totals, handoffs, statsOffMpps = "stats_off_mpps"
        case statsOverheadPercent = "stats_overhead_percent", failures
    }

    /// Synchronization events per delivered packet.
    struct PerDelivered: Encodable {
        var atomicRMWs, modelledAtomicRMWs, lockAcquisitions, contendedAcquisitions, wakeups, threadWakeups: JSONDouble
        var contextSwitches, crossCoreHandoffs, queueOps: JSONDouble

        enum CodingKeys: String, CodingKey {
            case atomicRMWs = "atomic_rmws", modelledAtomicRMWs = "atomic_rmws_modelled"
            case lockAcquisitions = "lock_acquisitions"
            case contendedAcquisitions = "contended_acquisitions", wakeups, threadWakeups = "thread_wakeups"
            case contextSwitches = "context_switches", crossCoreHandoffs = "cross_core_handoffs"
            case queueOps = "queue_ops"
        }
    }

    /// The same events as counts over the run.
    struct Totals: Encodable {
        var atomicRMWs, modelledAtomicRMWs, lockAcquisitions, contendedAcquisitions: Int
        var contendedFraction: JSONDouble
        var wakeups, threadWakeups, voluntaryContextSwitches, involuntaryContextSwitches: Int
        var parks, crossCoreHandoffs, unclassifiedHandoffs, coreQueueFullWaits: Int

        enum CodingKeys: String, CodingKey {
            case atomicRMWs = "atomic_rmws", modelledAtomicRMWs = "atomic_rmws_modelled"
            case lockAcquisitions = "lock_acquisitions"
            case contendedAcquisitions = "contended_acquisitions", contendedFraction = "contended_fraction"
            case wakeups, threadWakeups = "thread_wakeups"
            case voluntaryContextSwitches = "voluntary_context_switches"
            case involuntaryContextSwitches = "involuntary_context_switches", parks
            case crossCoreHandoffs = "cross_core_handoffs", unclassifiedHandoffs = "unclassified_handoffs"
            case coreQueueFullWaits = "core_queue_full_waits"
        }
    }

    struct Handoffs: Encodable {
        var coreQueue: HandoffPoint
        var socketQueue: HandoffPoint

        enum CodingKeys: String, CodingKey { case coreQueue = "core_queue", socketQueue = "socket_queue" }
    }

    /// One hand-off point: its producer side, its consumer side.
    struct HandoffPoint: Encodable {
        var queueOps: Int
        var depthHighWater: Int
        /// Log2 buckets: lower bound (as a key) to count.
        var depthHistogram: [String: Int]
        var producerRunLengths: [String: Int]
        var consumerOps: Int
        var consumerBatchMean: JSONDouble
        var consumerBatchHistogram: [String: Int]

        enum CodingKeys: String, CodingKey {
            case queueOps = "queue_ops", depthHighWater = "depth_high_water", depthHistogram = "depth_histogram"
            case producerRunLengths = "producer_run_lengths", consumerOps = "consumer_ops"
            case consumerBatchMean = "consumer_batch_mean", consumerBatchHistogram = "consumer_batch_histogram"
        }

        init(_ h: HandoffPointStats, consumer: HandoffPointStats, items: Int) {
            func buckets(_ h: Log2Histogram) -> [String: Int] {
                Dictionary(h.nonEmptyBuckets.map { (String($0.lowerBound), $0.count) }, uniquingKeysWith: +)
            }
            queueOps = h.queueOps
            depthHighWater = h.highWater
            depthHistogram = buckets(h.depth)
            producerRunLengths = buckets(h.batchSizes)
            consumerOps = consumer.queueOps
            consumerBatchMean = JSONDouble(consumer.queueOps > 0 ? Double(items) / Double(consumer.queueOps) : 0)
            consumerBatchHistogram = buckets(consumer.batchSizes)
        }
    }

    init(_ r: OrganizationRunResult, statsOffMpps: Double?, runs: Int = 1) {
        let s = r.stats, y = s.stack.sync
        func per(_ v: Int) -> JSONDouble { JSONDouble(r.perDelivered(v), decimals: 4) }
        organization = r.configuration.kind.rawValue
        connections = r.configuration.connections
        groups = r.groupCount
        inputThreads = r.configuration.inputThreads
        coreThreads = r.coreThreadCount
        packets = r.offered
        seconds = JSONDouble(r.seconds)
        mpps = JSONDouble(r.mpps)
        stackSeconds = JSONDouble(r.stackSeconds)
        stackMpps = JSONDouble(r.stackMpps)
        checked = r.checked
        flowControl = r.configuration.flowControl
        stackCPUNsPerPacket = JSONDouble(r.stackCPUNanosecondsPerPacket)
        readerCPUNsPerDelivered = JSONDouble(r.perDelivered(s.readerCPUNanoseconds))
        statistics = r.configuration.statistics
        self.runs = runs
        delivered = r.delivered
        dropped = Dictionary(s.stack.drops.byReason.map { ($0.0, $0.1) }, uniquingKeysWith: +)
        drainedAtClose = r.drainedAtClose
        acks = s.acks
        perDelivered = PerDelivered(
            atomicRMWs: per(y.atomicRMWs), modelledAtomicRMWs: per(y.modelledAtomicRMWs),
            lockAcquisitions: per(y.lockAcquisitions),
            contendedAcquisitions: per(y.contendedAcquisitions), wakeups: per(y.wakeups),
            threadWakeups: per(y.threadWakeups), contextSwitches: per(s.contextSwitches),
            crossCoreHandoffs: per(y.crossCoreHandoffs),
            queueOps: per(s.stack.socketQueue.queueOps + s.coreQueue.queueOps
                          + s.coreQueueConsumer.queueOps + s.socketQueueConsumer.queueOps))
        totals = Totals(
            atomicRMWs: y.atomicRMWs, modelledAtomicRMWs: y.modelledAtomicRMWs, lockAcquisitions: y.lockAcquisitions,
            contendedAcquisitions: y.contendedAcquisitions,
            contendedFraction: JSONDouble(y.lockAcquisitions > 0
                ? Double(y.contendedAcquisitions) / Double(y.lockAcquisitions) : 0, decimals: 4),
            wakeups: y.wakeups, threadWakeups: y.threadWakeups,
            voluntaryContextSwitches: s.voluntaryContextSwitches,
            involuntaryContextSwitches: s.involuntaryContextSwitches, parks: s.parks,
            crossCoreHandoffs: y.crossCoreHandoffs, unclassifiedHandoffs: y.unclassifiedHandoffs,
            coreQueueFullWaits: s.coreQueueFullWaits)
        handoffs = Handoffs(
            coreQueue: HandoffPoint(s.coreQueue, consumer: s.coreQueueConsumer, items: s.stack.offered),
            socketQueue: HandoffPoint(s.stack.socketQueue, consumer: s.socketQueueConsumer, items: r.delivered))
        if let off = statsOffMpps {
            self.statsOffMpps = JSONDouble(off)
            statsOverheadPercent = JSONDouble((off - r.mpps) / off * 100)
        }
        failures = r.failures.isEmpty ? nil : r.failures
    }
}
