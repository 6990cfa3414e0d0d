// Text and JSON rendering of a DemuxSessionReport, shared by `replay`,
// `live` and `demo`.
import DemuxLab
import FastDemux
import Glibc
import Workloads

/// Writes `text` (plus a newline) to standard error, unbuffered.
func writeStderr(_ text: String, newline: Bool = true) {
    var line = newline ? text + "\n" : text
    line.withUTF8 { buf in _ = write(2, buf.baseAddress, buf.count) }
}

/// True if standard error is a terminal (progress lines go there).
var stderrIsTerminal: Bool { isatty(2) != 0 }

/// Prints a `\r`-rewritten progress line on standard error.
struct ProgressPrinter: Sendable {
    let label: String

    func update(_ p: SessionProgress) {
        let rate = p.seconds > 0 ? Double(p.frames) / p.seconds : 0
        writeStderr("\r\(label): \(p.frames) frames, \(fixed(Double(p.bytes) / 1e6, 1)) MB, "
                    + "\(fixed(rate / 1e6, 3)) Mframes/s, \(fixed(p.seconds, 1)) s   ", newline: false)
    }

    func finish() { writeStderr("") }
}

/// `v` with `digits` decimals, no Foundation.
func fixed(_ v: Double, _ digits: Int) -> String {
    guard v.isFinite else { return "-" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let r = (abs(v) * scale).rounded()
    let whole = Int(r / scale)
    var frac = String(Int(r) - whole * Int(scale))
    while frac.count < digits { frac = "0" + frac }
    return (v < 0 && r != 0 ? "-" : "") + String(whole) + (digits > 0 ? "." + frac : "")
}

func padLeft(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
}

func padRight(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}

extension FlowKey {
    /// `tcp 127.0.0.1:41234 <> 127.0.0.1:80` for a canonical key.
    var canonicalText: String {
        func ep(_ a: IPAddress, _ p: UInt16) -> String { a.family == .ipv6 ? "[\(a)]:\(p)" : "\(a):\(p)" }
        return "\(transport) \(ep(source, sourcePort)) <> \(ep(destination, destinationPort))"
    }
}

/// What a report is about, for the header line and JSON.
struct ReportContext {
    var command: String
    var source: String
    var linkType: String?
    var sockets: SessionSockets
}

func socketsText(_ s: SessionSockets) -> String {
    switch s {
    case .perFlow: return "a socket per flow direction"
    case .listen(let specs): return "listening on " + specs.map(\.description).joined(separator: ",")
    }
}

/// The conservation line of `demo` (and the check behind `conserved`).
func conservationLine(_ r: DemuxSessionReport) -> String {
    (r.packetsDrainedAtClose == 0
        ? "in = delivered + dropped: \(r.framesIn) = \(r.delivered) + \(r.dropped): "
        : "in = delivered + dropped + drained at close: \(r.framesIn) = \(r.delivered) + \(r.dropped) + \(r.packetsDrainedAtClose): ")
        + (r.isConserved ? "OK" : "FAILED (offered \(r.input.offered), enqueued \(r.input.enqueued), order violations \(r.orderViolations))")
}

/// Human-readable report: header, per-flow table, drop table, hand-off statistics.
func renderText(_ r: DemuxSessionReport, _ ctx: ReportContext) -> String {
    var out: [String] = []
    let threads = r.workers == 1 ? "1 input thread (the reader)" : "\(r.workers) input threads fed by the reader (steered by flow)"
    out.append("\(ctx.command) \(ctx.source): \(r.framesIn) frames, \(r.bytesIn) bytes in \(fixed(r.seconds, 3)) s; "
               + "\(threads); \(socketsText(ctx.sockets)) (\(r.socketsOpened) sockets)")
    if let lt = ctx.linkType { out.append("link type: \(lt)") }

    out.append("")
    out.append("Flows (canonical 5-tuple, both directions): \(r.flows.count)")
    let rows = r.flows.map { f in
        (f.key.canonicalText, String(f.packets), String(f.bytes), String(f.deliveredPackets))
    }
    let w0 = max(40, rows.map(\.0.count).max() ?? 0)
    out.append("  " + padRight("flow", w0) + padLeft("packets", 10) + padLeft("bytes", 12) + padLeft("delivered", 11))
    for row in rows {
        out.append("  " + padRight(row.0, w0) + padLeft(row.1, 10) + padLeft(row.2, 12) + padLeft(row.3, 11))
    }

    out.append("")
    out.append("Drops by reason: \(r.dropped) of \(r.framesIn)")
    var any = false
    for (reason, n) in r.parseDrops {
        out.append("  " + padRight(reason.name, 28) + padLeft(String(n), 10) + "  (parser: \(DemuxDropReason(reason)); \(reason.summary))")
        any = true
    }
    for reason in [DemuxDropReason.noSocket, .queueFull, .socketClosed] where r.input.drops[reason] > 0 {
        out.append("  " + padRight(reason.description, 28) + padLeft(String(r.input.drops[reason]), 10) + "  (demux)")
        any = true
    }
    if !any { out.append("  (none)") }
    if r.socketLimitHits > 0 { out.append("  note: \(r.socketLimitHits) flow directions got no socket (socket limit)") }
    let fs = r.flowSockets
    if fs.expired > 0 || fs.refusedCap > 0 {
        out.append("  flow sockets: \(fs.opened) opened, \(fs.expired) expired (idle), "
                   + "\(FlowSocketCounters.capReasonName): \(fs.refusedCap), peak open \(fs.peakOpen)")
    }

    let s = r.input
    let d = r.delivered
    func per(_ v: Int) -> String { fixed(DemuxStats.perDelivered(v, delivered: d), 3) }
    out.append("")
    out.append("Hand-off statistics (\(d) packets delivered)")
    out.append("  socket receive queues: \(s.socketQueue.queueOps) puts, depth high water \(s.socketQueue.highWater) (sampled), "
               + "mean run per socket per burst \(fixed(meanOf(s.socketQueue.batchSizes), 2))")
    out.append("  per delivered packet: \(per(s.sync.atomicRMWs)) atomic RMWs counted "
               + "(+\(per(s.sync.modelledAtomicRMWs)) modelled), \(per(s.sync.lockAcquisitions)) lock acquisitions, "
               + "\(per(s.sync.contendedAcquisitions)) contended, \(per(s.sync.wakeups)) wake-ups, "
               + "\(per(s.sync.threadWakeups)) thread wake-ups, \(per(s.sync.crossCoreHandoffs)) cross-core hand-offs "
               + "(\(s.sync.unclassifiedHandoffs) unclassified)")
    out.append("  read sections (bursts): \(s.readSections), TCP: \(s.immediateACKs) immediate ACKs, "
               + "\(s.deferredACKs) deferred, \(s.outOfSequence) out of sequence")
    if !r.steering.isEmpty {
        for (k, q) in r.steering.enumerated() {
            out.append("  steering queue reader -> input \(k): \(q.puts) puts, \(q.failedPuts) full, high water \(q.highWater)")
        }
    }
    out.append("  consumer: \(r.consumerDrains) socket drains (\(fixed(d > 0 && r.consumerDrains > 0 ? Double(d) / Double(r.consumerDrains) : 0, 2)) packets each), "
               + "\(r.consumerSweeps) ready-set sweeps, parked \(r.consumerParks) times")
    if r.orderViolations > 0 { out.append("  ORDER VIOLATIONS: \(r.orderViolations)") }
    return out.joined(separator: "\n")
}

/// Mean of a power-of-two histogram, using each bucket's lower bound.
func meanOf(_ h: Log2Histogram) -> Double {
    var n = 0, sum = 0
    for (lower, count) in h.nonEmptyBuckets {
        n += count
        sum += max(lower, 0) * count
    }
    return n > 0 ? Double(sum) / Double(n) : 0
}

/// The `--json` object of `replay`, `live` and `demo`: everything in the
/// report, one line (``JSONLine``), with `schemaVersion` and `version`.
struct SessionReportJSON: Encodable {
    let schemaVersion = JSONSchema.version
    let version = packageVersion
    var command: String
    var source: String
    var linkType: String?
    var workers: Int
    var sockets: String
    var socketsOpened: Int
    var frames: Int
    var bytes: Int
    var delivered: Int
    var dropped: Int
    var seconds: JSONDouble
    var flows: [Flow]
    /// Drops by reason: the parser's reasons that occurred, and the
    /// demultiplexer's always.
    var drops: [String: Int]
    var handoff: Handoff
    var orderViolations: Int
    var conserved: Bool
    var error: String?
    /// Per-flow mode: the flow socket table's counters.
    var flowSockets: FlowSocketsJSON

    enum CodingKeys: String, CodingKey {
        case schemaVersion, version, command, source, linkType = "link_type", workers, sockets
        case socketsOpened = "sockets_opened", frames, bytes, delivered, dropped, seconds, flows, drops
        case handoff, orderViolations = "order_violations", conserved, error
        case flowSockets = "flow_sockets"
    }

    /// One flow, by its canonical key (both directions).
    struct Flow: Encodable {
        var proto: String
        var a: String
        var aPort: Int
        var b: String
        var bPort: Int
        var key: String
        var packets: Int
        var bytes: Int
        var delivered: Int
        var deliveredBytes: Int

        enum CodingKeys: String, CodingKey {
            case proto, a, aPort = "a_port", b, bPort = "b_port", key, packets, bytes, delivered
            case deliveredBytes = "delivered_bytes"
        }
    }

    /// Hand-off and synchronization statistics of the input side and the consumer.
    struct Handoff: Encodable {
        var queuePuts: Int
        var queueDepthHighWater: Int
        var atomicRMWs: Int
        var modelledAtomicRMWs: Int
        var lockAcquisitions: Int
        var contendedAcquisitions: Int
        var wakeups: Int
        var threadWakeups: Int
        var crossCoreHandoffs: Int
        var unclassifiedHandoffs: Int
        var wakeupsPerDelivered: JSONDouble
        var atomicRMWsPerDelivered: JSONDouble
        var readSections: Int
        var immediateACKs: Int
        var deferredACKs: Int
        var outOfSequence: Int
        var consumerDrains: Int
        var consumerSweeps: Int
        var consumerParks: Int
        /// Reader → input thread queues (with more than one input thread).
        var steering: [Steering]?

        enum CodingKeys: String, CodingKey {
            case queuePuts = "queue_puts", queueDepthHighWater = "queue_depth_high_water"
            case atomicRMWs = "atomic_rmws", modelledAtomicRMWs = "atomic_rmws_modelled"
            case lockAcquisitions = "lock_acquisitions"
            case contendedAcquisitions = "contended_acquisitions", wakeups, threadWakeups = "thread_wakeups"
            case crossCoreHandoffs = "cross_core_handoffs", unclassifiedHandoffs = "unclassified_handoffs"
            case wakeupsPerDelivered = "wakeups_per_delivered"
            case atomicRMWsPerDelivered = "atomic_rmws_per_delivered", readSections = "read_sections"
            case immediateACKs = "immediate_acks", deferredACKs = "deferred_acks", outOfSequence = "out_of_sequence"
            case consumerDrains = "consumer_drains", consumerSweeps = "consumer_sweeps"
            case consumerParks = "consumer_parks", steering
        }
    }

    struct Steering: Encodable {
        var puts: Int
        var full: Int
        var highWater: Int

        enum CodingKeys: String, CodingKey { case puts, full, highWater = "high_water" }
    }

    init(_ r: DemuxSessionReport, _ ctx: ReportContext) {
        command = ctx.command
        source = ctx.source
        linkType = ctx.linkType
        workers = r.workers
        sockets = socketsText(ctx.sockets)
        socketsOpened = r.socketsOpened
        frames = r.framesIn
        bytes = r.bytesIn
        delivered = r.delivered
        dropped = r.dropped
        seconds = JSONDouble(r.seconds)
        flows = r.flows.map { f in
            Flow(proto: f.key.transport.description,
                 a: f.key.source.description, aPort: Int(f.key.sourcePort),
                 b: f.key.destination.description, bPort: Int(f.key.destinationPort),
                 key: f.key.canonicalDescription, packets: f.packets, bytes: f.bytes,
                 delivered: f.deliveredPackets, deliveredBytes: f.deliveredBytes)
        }
        var drops: [String: Int] = [:]
        for (reason, n) in r.parseDrops { drops[reason.name, default: 0] += n }
        for reason in [DemuxDropReason.noSocket, .queueFull, .socketClosed] {
            drops[reason.description, default: 0] += r.input.drops[reason]
        }
        self.drops = drops
        let s = r.input
        handoff = Handoff(
            queuePuts: s.socketQueue.queueOps, queueDepthHighWater: s.socketQueue.highWater,
            atomicRMWs: s.sync.atomicRMWs, modelledAtomicRMWs: s.sync.modelledAtomicRMWs,
            lockAcquisitions: s.sync.lockAcquisitions,
            contendedAcquisitions: s.sync.contendedAcquisitions, wakeups: s.sync.wakeups,
            threadWakeups: s.sync.threadWakeups, crossCoreHandoffs: s.sync.crossCoreHandoffs,
            unclassifiedHandoffs: s.sync.unclassifiedHandoffs,
            wakeupsPerDelivered: JSONDouble(DemuxStats.perDelivered(s.sync.wakeups, delivered: r.delivered)),
            atomicRMWsPerDelivered: JSONDouble(DemuxStats.perDelivered(s.sync.atomicRMWs, delivered: r.delivered)),
            readSections: s.readSections, immediateACKs: s.immediateACKs, deferredACKs: s.deferredACKs,
            outOfSequence: s.outOfSequence, consumerDrains: r.consumerDrains, consumerSweeps: r.consumerSweeps,
            consumerParks: r.consumerParks,
            steering: r.steering.isEmpty ? nil : r.steering.map {
                Steering(puts: $0.puts, full: $0.failedPuts, highWater: $0.highWater)
            })
        orderViolations = r.orderViolations
        conserved = r.isConserved
        error = r.sourceError.map { "\($0)" }
        flowSockets = FlowSocketsJSON(r.flowSockets, drainedAtClose: r.packetsDrainedAtClose)
    }
}

/// A ``FlowSocketCounters`` in JSON (`replay`/`live`/`demo` and `soak`):
/// refusals by reason name.
struct FlowSocketsJSON: Encodable {
    var opened: Int
    var expired: Int
    var open: Int
    var peakOpen: Int
    var refused: [String: Int]
    var drainedAtClose: Int

    enum CodingKeys: String, CodingKey {
        case opened, expired, open, peakOpen = "peak_open", refused, drainedAtClose = "drained_at_close"
    }

    init(_ c: FlowSocketCounters, drainedAtClose: Int) {
        opened = c.opened
        expired = c.expired
        open = c.open
        peakOpen = c.peakOpen
        refused = [FlowSocketCounters.capReasonKey: c.refusedCap, "connect_refused": c.refusedConnect]
        self.drainedAtClose = drainedAtClose
    }
}
