import ArgumentParser
import DemuxLab
import FastDemux
import Glibc
import Workloads

struct SoakCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Run synthetic and hostile traffic through one demultiplexer with continuous socket churn, and check that memory levels off and every packet is accounted for.",
        discussion: """
            An input thread generates traffic (steady UDP/TCP flows, short-lived flows whose sockets \
            expire when idle, a flood of distinct flows against the flow socket cap, and hostile frames: \
            truncated, fragments, bad versions, ICMP, bad lengths, ports that are bound and closed all \
            the time); a consumer drains every socket; a churn thread binds, listens, connects and closes \
            sockets round after round. Every --report-interval seconds traffic pauses until every packet \
            is accounted for, and one line (or, with --json, one JSON object) reports resident memory \
            (VmRSS), the RCU reclamation backlog of the PCB tables, packets offered / delivered / dropped \
            by reason, whether offered == delivered + dropped exactly, sockets open, and binds and closes \
            so far. Exits 1 if conservation failed at any report or resident memory grew over the second \
            half of the run by more than max(8 MiB, 5% of its mid-run value).
            """
    )

    @Option(help: ArgumentHelp("Seconds of traffic.", valueName: "seconds"))
    var duration: Double

    @Option(help: ArgumentHelp("Seconds between reports.", valueName: "seconds"))
    var reportInterval: Double = 60

    @Option(help: ArgumentHelp("Flow sockets open at once at most.", valueName: "n"))
    var maxFlowSockets: Int = 8192

    @Option(help: ArgumentHelp("Seconds without a packet after which a flow socket is closed.", valueName: "seconds"))
    var flowIdleTimeout: Double = 2

    @Flag(help: "Print one JSON object per report (one line each, with schemaVersion and version) and a summary object at the end.")
    var json = false

    func validate() throws {
        if !(duration > 0) { throw ValidationError("--duration must be positive") }
        if !(reportInterval > 0) { throw ValidationError("--report-interval must be positive") }
        if maxFlowSockets < 1 { throw ValidationError("--max-flow-sockets must be positive") }
        if !(flowIdleTimeout > 0) { throw ValidationError("--flow-idle-timeout must be positive") }
    }

    func run() throws {
        var c = SoakConfiguration(duration: duration, reportInterval: reportInterval)
        c.flowLimits = FlowSocketLimits(maxSockets: maxFlowSockets, idleTimeout: flowIdleTimeout)
        let summary = runSoak(c, json: json, emit: writeStdout)
        guard summary.passed else {
            for f in summary.failures { writeStderr("fastdemux soak: FAILED: \(f)") }
            throw ExitCode.failure
        }
    }
}

/// Runs a soak and hands every output line to `emit` (text, or with `json`
/// one JSON object per report and a summary object), as they happen:
/// `emit` is called on the soak's input thread for reports and on the
/// caller's thread before and after.
func runSoak(_ c: SoakConfiguration, json: Bool, emit: @escaping @Sendable (String) -> Void) -> SoakSummary {
    if !json {
        let limits = c.flowLimits
        emit("fastdemux soak: \(fixed(c.duration, 0)) s, a report every \(fixed(c.reportInterval, 0)) s, "
             + "flow socket cap \(limits.maxSockets), idle time \(fixed(limits.idleTimeout ?? 0, 1)) s")
    }
    let summary = SoakRun(c).run { r in
        emit(json ? ((try? JSONLine.encode(SoakReportJSON(r))) ?? "{}") : soakLine(r))
    }
    if json {
        emit((try? JSONLine.encode(SoakSummaryJSON(summary))) ?? "{}")
    } else {
        func mib(_ b: Int) -> String { "\(b >= 0 ? "+" : "")\(fixed(Double(b) / 1_048_576, 2)) MiB" }
        let window: String
        if let g = summary.growth, let from = summary.growthJudgedFrom {
            window = "\(mib(g)) from \(fixed(from, 0)) s (limit \(fixed(Double(summary.growthLimit) / 1_048_576, 2)) MiB)"
        } else {
            window = "not judged (the working set reached a new peak in the last interval)"
        }
        emit("resident memory: second half \(summary.secondHalfGrowth.map(mib) ?? "-"); after the working set settled \(window)")
        emit("heap in use after the run vs before it: \(summary.heapResidual.map(mib) ?? "-") "
             + "(limit \(fixed(Double(summary.heapResidualLimit) / 1_048_576, 2)) MiB); "
             + "conservation held at \(summary.reports.filter(\.conserved).count) of \(summary.reports.count) reports")
        emit("fastdemux soak: " + (summary.passed ? "OK" : "FAILED"))
    }
    return summary
}

/// Writes one line to standard output at once (unbuffered: a line per
/// report is visible as it happens, also through a pipe or into a file).
func writeStdout(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { buf in
        var off = 0
        while off < buf.count {
            let n = write(1, buf.baseAddress! + off, buf.count - off)
            if n <= 0 { return }
            off += n
        }
    }
}

/// One report as a text line.
func soakLine(_ r: SoakReport) -> String {
    let drops = r.drops.filter { $0.count > 0 }.map { "\($0.reason) \($0.count)" }.joined(separator: ", ")
    let f = r.flowSockets
    return padLeft(fixed(r.seconds, 1), 7) + " s  rss \(fixed(Double(r.residentBytes) / 1_048_576, 1)) MiB  "
        + "reclaim backlog \(r.reclamationPending) (peak \(r.reclamationPeak))  "
        + "offered \(r.offered) delivered \(r.delivered) dropped \(r.dropped) [\(drops)]  "
        + "conserved \(r.conserved ? "yes" : "NO")  sockets open \(r.socketsOpen) "
        + "(flow: \(f.opened) opened, \(f.expired) expired, \(FlowSocketCounters.capReasonName) \(f.refusedCap))  "
        + "binds \(r.binds) closes \(r.closes)  \(fixed(r.packetsPerSecond / 1e6, 3)) Mpps"
}

/// One `soak --json` report line.
struct SoakReportJSON: Encodable {
    let schemaVersion = JSONSchema.version
    let version = packageVersion
    let command = "soak"
    let kind = "report"
    var index: Int
    var seconds: JSONDouble
    var rssBytes: Int
    var reclamationPending: Int
    var reclamationPeak: Int
    var offered: Int
    var delivered: Int
    var dropped: Int
    var drops: [String: Int]
    var parseDrops: [String: Int]
    var conserved: Bool
    var socketsOpen: Int
    var connectedEntries: Int
    var boundEntries: Int
    var flowSockets: FlowSocketsJSON
    var binds: Int
    var closes: Int
    var packetsPerSecond: JSONDouble

    enum CodingKeys: String, CodingKey {
        case schemaVersion, version, command, kind, index, seconds, rssBytes = "rss_bytes"
        case reclamationPending = "reclamation_pending", reclamationPeak = "reclamation_peak"
        case offered, delivered, dropped, drops, parseDrops = "parse_drops", conserved
        case socketsOpen = "sockets_open", connectedEntries = "connected_entries", boundEntries = "bound_entries"
        case flowSockets = "flow_sockets", binds, closes, packetsPerSecond = "packets_per_second"
    }

    init(_ r: SoakReport) {
        index = r.index
        seconds = JSONDouble(r.seconds)
        rssBytes = r.residentBytes
        reclamationPending = r.reclamationPending
        reclamationPeak = r.reclamationPeak
        offered = r.offered
        delivered = r.delivered
        dropped = r.dropped
        drops = Dictionary(uniqueKeysWithValues: r.drops.map { ($0.reason, $0.count) })
        parseDrops = Dictionary(uniqueKeysWithValues: r.parseDrops.map { ($0.reason, $0.count) })
        conserved = r.conserved
        socketsOpen = r.socketsOpen
        connectedEntries = r.connectedEntries
        boundEntries = r.boundEntries
        flowSockets = FlowSocketsJSON(r.flowSockets, drainedAtClose: r.drainedAtClose)
        binds = r.binds
        closes = r.closes
        packetsPerSecond = JSONDouble(r.packetsPerSecond, decimals: 0)
    }
}

/// The last `soak --json` line: the verdicts.
struct SoakSummaryJSON: Encodable {
    let schemaVersion = JSONSchema.version
    let version = packageVersion
    let command = "soak"
    let kind = "summary"
    var reports: Int
    var passed: Bool
    var conservedReports: Int
    var rssSecondHalfGrowthBytes: Int?
    var rssGrowthBytes: Int?
    var rssJudgedFromSeconds: Double?
    var rssGrowthLimitBytes: Int
    var heapResidualBytes: Int?
    var heapResidualLimitBytes: Int
    var failures: [String]

    enum CodingKeys: String, CodingKey {
        case schemaVersion, version, command, kind, reports, passed, conservedReports = "conserved_reports"
        case rssSecondHalfGrowthBytes = "rss_second_half_growth_bytes", rssGrowthLimitBytes = "rss_growth_limit_bytes"
        case rssGrowthBytes = "rss_growth_bytes", rssJudgedFromSeconds = "rss_judged_from_seconds"
        case heapResidualBytes = "heap_residual_bytes", heapResidualLimitBytes = "heap_residual_limit_bytes"
        case failures
    }

    init(_ s: SoakSummary) {
        reports = s.reports.count
        passed = s.passed
        conservedReports = s.reports.filter(\.conserved).count
        rssSecondHalfGrowthBytes = s.secondHalfGrowth
        rssGrowthLimitBytes = s.growthLimit
        rssGrowthBytes = s.growth
        rssJudgedFromSeconds = s.growthJudgedFrom
        heapResidualBytes = s.heapResidual
        heapResidualLimitBytes = s.heapResidualLimit
        failures = s.failures
    }
}
