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
            Organizations: \(OrganizationKind.allCases.map(\.rawValue).joined(separator: ", ")). \
            ConnP-L runs once per --groups value. Exits non-zero if any run fails its checks \
            (conservation, per-flow order, TCP sequence, delivery to the right socket).
            """
    )

    @Option(help: "Comma-separated organizations (default: all).")
    var organizations: String = OrganizationKind.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Comma-separated connection counts (the paper used 6, 192 and 16384).")
    var connections: String = "6,192,16384"

    @Option(help: "Comma-separated ConnP-L group counts (the paper used 4 and 128).")
    var groups: String = "4,128"

    @Option(help: "Input threads (flows are steered to them by flow, RSS-style).")
    var inputThreads: Int = onlineCPUCount

    @Option(help: "Core threads of ConnP-T and workers of the deferred fast path.")
    var coreThreads: Int = onlineCPUCount

    @Option(help: "Packets offered per run.")
    var packets: Int = 1_000_000

    @Option(help: "Socket receive-queue capacity.")
    var queueCapacity: Int = 256

    @Option(help: "Runs per configuration; the run with the median throughput is reported (all must pass their checks).")
    var `repeat`: Int = 1

    @Flag(help: "Open loop: no per-connection window; socket queues overflow (queue_full drops) when the reader falls behind.")
    var openLoop = false

    @Flag(help: "Also run each configuration with statistics off and report the throughput overhead of counting.")
    var overhead = false

    @Flag(help: "Run with statistics counting off (throughput only).")
    var noStatistics = false

    @Flag(help: "Print one JSON object per run, one per line.")
    var json = false

    func parsedList(_ s: String, name: String) throws -> [Int] {
        let v = s.split(separator: ",").compactMap { Int($0.filter { $0 != " " }) }
        guard !v.isEmpty, v.allSatisfy({ $0 > 0 }) else { throw ValidationError("--\(name): positive integers, comma-separated") }
        return v
    }

    func kinds() throws -> [OrganizationKind] {
        try organizations.split(separator: ",").map { name in
            guard let k = OrganizationKind(rawValue: String(name.filter { $0 != " " })) else {
                throw ValidationError("unknown organization '\(name)'; known: \(OrganizationKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return k
        }
    }

    func validate() throws {
        _ = try kinds()
        _ = try parsedList(connections, name: "connections")
        _ = try parsedList(groups, name: "groups")
        if inputThreads < 1 || inputThreads > 64 { throw ValidationError("--input-threads: 1...64") }
        if coreThreads < 1 || coreThreads > 64 { throw ValidationError("--core-threads: 1...64") }
        if `repeat` < 1 || `repeat` > 99 { throw ValidationError("--repeat: 1...99") }
        if packets < 1 { throw ValidationError("--packets must be positive") }
        if queueCapacity < 2 { throw ValidationError("--queue-capacity must be at least 2") }
    }

    func run() throws {
        let kinds = try kinds()
        let conns = try parsedList(connections, name: "connections")
        let groupList = try parsedList(groups, name: "groups")
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
                        print(CompareTable.json(r, statsOffMpps: off, runs: `repeat`).rendered)
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
        + pad("rmw/p", 7) + pad("lock/p", 7) + pad("cont/p", 8) + pad("cont%", 7) + pad("wake/p", 8)
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
            + pad(f(r.perDelivered(y.atomicRMWs), 2), 7) + pad(f(r.perDelivered(y.lockAcquisitions), 2), 7)
            + pad(f(r.perDelivered(y.contendedAcquisitions), 4), 8) + pad(f(cont, 1), 7)
            + pad(f(r.perDelivered(y.wakeups), 4), 8) + pad(f(r.perDelivered(s.contextSwitches), 4), 8)
            + pad(f(r.perDelivered(y.crossCoreHandoffs), 2), 8)
            + pad(s.coreQueue.highWater == 0 && r.coreThreadCount == 0 ? "-" : String(s.coreQueue.highWater), 9)
            + pad(r.coreThreadCount == 0 ? "-" : f(coreBatch, 1), 10) + pad(f(sockBatch, 1), 10)
            + pad(String(s.stack.drops.total), 7) + (r.checked ? "true" : "FALSE")
    }

    static func histogram(_ h: Log2Histogram) -> JSONValue {
        .object(h.nonEmptyBuckets.map { (String($0.lowerBound), .int($0.count)) })
    }

    static func handoff(_ h: HandoffPointStats, consumer: HandoffPointStats, items: Int) -> JSONValue {
        .object([
            ("queue_ops", .int(h.queueOps)),
            ("depth_high_water", .int(h.highWater)),
            ("depth_histogram", histogram(h.depth)),
            ("producer_run_lengths", histogram(h.batchSizes)),
            ("consumer_ops", .int(consumer.queueOps)),
            ("consumer_batch_mean", .double(consumer.queueOps > 0 ? Double(items) / Double(consumer.queueOps) : 0)),
            ("consumer_batch_histogram", histogram(consumer.batchSizes)),
        ])
    }

    static func json(_ r: OrganizationRunResult, statsOffMpps: Double?, runs: Int = 1) -> JSONValue {
        let s = r.stats, y = s.stack.sync
        func per(_ v: Int) -> JSONValue { .double((r.perDelivered(v) * 10_000).rounded() / 10_000) }
        var o: [(String, JSONValue)] = [
            ("organization", .string(name(r))),
            ("connections", .int(r.configuration.connections)),
            ("groups", .int(r.groupCount)),
            ("input_threads", .int(r.configuration.inputThreads)),
            ("core_threads", .int(r.coreThreadCount)),
            ("packets", .int(r.offered)),
            ("seconds", .double(r.seconds)),
            ("mpps", .double(r.mpps)),
            ("stack_seconds", .double(r.stackSeconds)),
            ("stack_mpps", .double(r.stackMpps)),
            ("checked", .bool(r.checked)),
            ("flow_control", .bool(r.configuration.flowControl)),
            ("stack_cpu_ns_per_packet", .double(r.stackCPUNanosecondsPerPacket)),
            ("reader_cpu_ns_per_delivered", .double(r.perDelivered(s.readerCPUNanoseconds))),
            ("statistics", .bool(r.configuration.statistics)),
            ("runs", .int(runs)),
            ("delivered", .int(r.delivered)),
            ("dropped", .object(s.stack.drops.byReason.map { ($0.0, .int($0.1)) })),
            ("drained_at_close", .int(r.drainedAtClose)),
            ("acks", .int(s.acks)),
            ("per_delivered", .object([
                ("atomic_rmws", per(y.atomicRMWs)),
                ("lock_acquisitions", per(y.lockAcquisitions)),
                ("contended_acquisitions", per(y.contendedAcquisitions)),
                ("wakeups", per(y.wakeups)),
                ("thread_wakeups", per(y.threadWakeups)),
                ("context_switches", per(s.contextSwitches)),
                ("cross_core_handoffs", per(y.crossCoreHandoffs)),
                ("queue_ops", per(s.stack.socketQueue.queueOps + s.coreQueue.queueOps
                                  + s.coreQueueConsumer.queueOps + s.socketQueueConsumer.queueOps)),
            ])),
            ("totals", .object([
                ("atomic_rmws", .int(y.atomicRMWs)),
                ("lock_acquisitions", .int(y.lockAcquisitions)),
                ("contended_acquisitions", .int(y.contendedAcquisitions)),
                ("contended_fraction", .double(y.lockAcquisitions > 0
                    ? (Double(y.contendedAcquisitions) / Double(y.lockAcquisitions) * 10_000).rounded() / 10_000 : 0)),
                ("wakeups", .int(y.wakeups)),
                ("thread_wakeups", .int(y.threadWakeups)),
                ("voluntary_context_switches", .int(s.voluntaryContextSwitches)),
                ("involuntary_context_switches", .int(s.involuntaryContextSwitches)),
                ("parks", .int(s.parks)),
                ("cross_core_handoffs", .int(y.crossCoreHandoffs)),
                ("core_queue_full_waits", .int(s.coreQueueFullWaits)),
            ])),
            ("handoffs", .object([
                ("core_queue", handoff(s.coreQueue, consumer: s.coreQueueConsumer, items: s.stack.offered)),
                ("socket_queue", handoff(s.stack.socketQueue, consumer: s.socketQueueConsumer, items: r.delivered)),
            ])),
        ]
        if let off = statsOffMpps {
            o.append(("stats_off_mpps", .double(off)))
            o.append(("stats_overhead_percent", .double((off - r.mpps) / off * 100)))
        }
        if !r.failures.isEmpty { o.append(("failures", .array(r.failures.map { .string($0) }))) }
        return .object(o)
    }
}
