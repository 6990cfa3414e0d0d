// stack-http and stack-tcp-stream (docs/BenchmarkWorkloads.md): the same
// kernel HTTP client load against the project's stack on a TUN device and
// against a Linux epoll HTTP server behind a veth pair (the same
// HTTPConnection code, so the same bytes), alternating in one run, on
// stack-udp-echo's topology.
//
// Files: this one (the run, the result lines), KernelHTTPServer.swift (the
// baseline), HTTPLoadClient.swift (the built-in load and its checks),
// WrkLoad.swift (wrk, when installed); shared with stack-udp-echo:
// EchoTopology.swift, LatencyHistogram.swift, StackBenchSupport.swift
// (rounds, CPU), StackSnapshot.
import Glibc
import NetStack
import PacketIO
import SMPPrimitives

/// The stack-http and stack-tcp-stream workloads: kernel TCP client
/// connections (keep-alive, one request outstanding on each) against (a)
/// the project's ``EndpointStack`` answering as an address on a
/// multi-queue TUN device, with the HTTP service of `fastdemux serve
/// --http` (``StackHTTPServer``'s handler on the public ``TCPSocket``
/// API), and (b) a Linux HTTP server (epoll, one thread per core, the same
/// ``HTTPConnection``) behind a veth pair. Rounds alternate a, b, a, b, …
///
/// - stack-http: `GET /` (the service's short page) over `connections`
///   connections; requests/s and latency (send of the request to the last
///   byte of the response). Load: wrk when installed (``Load/automatic``),
///   otherwise (or with ``Load/builtin``) the project's client, which
///   checks every response byte for byte.
/// - stack-tcp-stream: bulk transfer from the server to the client, one
///   direction: each connection downloads `GET /bytes/N` (N =
///   `responseBytes`, 256 MiB by default) again and again over keep-alive;
///   the rate is the body bytes received in the window (Gbit/s). Always the
///   built-in client (every body byte is checked).
///
/// Concurrency contract: ``run(stop:report:)`` is synchronous, from any
/// thread that is not one of the stack's executors; it makes and joins its
/// own threads and deletes everything it made (namespaces, devices,
/// sockets) before it returns or throws. Needs root.
public struct StackHTTPBenchmark: Sendable {
    /// The two workloads.
    public enum Kind: String, CaseIterable, Sendable {
        /// Requests per second of small responses.
        case http = "stack-http"
        /// Bulk transfer throughput.
        case tcpStream = "stack-tcp-stream"
    }

    /// The two servers (the `impl` field).
    public enum Implementation: String, CaseIterable, Sendable {
        /// The project's stack over the TUN device.
        case netstack
        /// The Linux epoll HTTP server.
        case kernel = "linux_http_epoll"
    }

    /// Who generates the load.
    public enum Load: String, CaseIterable, Sendable {
        /// wrk if installed (stack-http), the built-in client otherwise.
        case automatic = "auto"
        /// The project's client (checks bodies).
        case builtin
        /// wrk (stack-http only).
        case wrk
    }

    public struct Configuration: Sendable {
        public var kind: Kind
        /// Rounds; each runs every implementation once, in order.
        public var rounds = 3
        /// Which servers run (both by default; the ratio needs both).
        public var implementations = Implementation.allCases
        /// Keep-alive connections (64 for stack-http, 1 for stack-tcp-stream).
        public var connections: Int
        /// Client threads (wrk's `-t`).
        public var clientThreads = 1
        /// stack-tcp-stream: the body of each `GET /bytes/N`.
        public var responseBytes = 256 << 20
        /// Measured seconds per implementation per round.
        public var seconds = 2.0
        /// Load before the measured window (not counted in the rate).
        public var warmupSeconds = 0.5
        /// End the measured window after this many responses instead;
        /// `seconds` is then ignored and `capSeconds` bounds it (built-in
        /// client only).
        public var requests: Int?
        /// The longest a measured window may last.
        public var capSeconds = 30.0
        /// Stack cores = TUN queues = kernel server threads.
        public var queues = 1
        /// Pin the servers' thread k to CPU k and the client to the last CPU.
        public var pinned = true
        /// The stack executors' idle spin passes before parking.
        public var spinPasses = EndpointStack.Configuration(addresses: []).spinPasses
        public var load = Load.automatic
        /// Open the stack's TUN device with the virtio-net header, so that
        /// its TCP sends 64 KiB super-segments (`EndpointStack.Configuration.tcpSegmentationOffload`).
        public var segmentationOffload = true

        public init(kind: Kind) {
            self.kind = kind
            connections = kind == .http ? 64 : 1
        }
    }

    /// Why the workload cannot run here (not root, no TUN, no `ip`), or nil.
    public static var unavailableReason: String? { EchoTopology.unavailableReason }

    /// Whether wrk is installed (``Load/automatic`` then uses it for stack-http).
    public static var wrkInstalled: Bool { WrkLoad.path != nil }

    public let configuration: Configuration

    public init(_ configuration: Configuration) {
        precondition(configuration.rounds >= 1 && configuration.connections >= 1 && configuration.clientThreads >= 1)
        precondition(configuration.queues >= 1 && configuration.queues <= TUNDevice.maximumQueues)
        precondition(configuration.responseBytes >= 0 && configuration.responseBytes <= HTTPService.maximumBytes)
        precondition(configuration.load != .wrk || configuration.kind == .http, "wrk drives stack-http only")
        self.configuration = configuration
    }

    static let port: UInt16 = 80

    /// The load this run uses.
    var usesWrk: Bool {
        switch configuration.load {
        case .wrk: return true
        case .builtin: return false
        case .automatic: return configuration.kind == .http && Self.wrkInstalled && configuration.requests == nil
        }
    }

    var route: HTTPRoute { configuration.kind == .http ? .page : .bytes(configuration.responseBytes) }

    /// Sets up, runs every round and tears down. `report` gets each round's
    /// lines as soon as the round is over (both implementations, with the
    /// ratio); the lines are also returned. Stops early once `stop` is set.
    /// - Throws: ``EchoSetupError`` (as `any Error`) if the namespaces, the
    ///   devices or a server could not be set up; nothing is left behind.
    public func run(stop: EchoStopFlag = EchoStopFlag(),
                    report: (BenchResult) -> Void = { _ in }) throws -> [BenchResult] {
        if let reason = Self.unavailableReason { throw EchoSetupError(description: reason) }
        let c = configuration
        if usesWrk && !Self.wrkInstalled { throw EchoSetupError(description: "--load wrk: wrk is not installed") }
        let topology = try EchoTopology(queues: c.queues, virtioHeader: c.segmentationOffload)
        defer { topology.destroy() }
        return try alternatingRounds(c.rounds, c.implementations, stack: .netstack, kernel: .kernel, stop: stop,
                                     report: report) { impl, round in
            try runOne(impl, round: round, topology: topology, stop: stop)
        }
    }

    /// What one window measured, whichever client ran it.
    private struct Measured {
        var responses = 0, seconds = 0.0, bodyBytes = 0, bytes = 0
        var median = 0, p99 = 0, maximum = 0
        var problems: [String] = []
        var client: [(String, JSONValue)] = []
        var sent = 0, answered = 0, unanswered = 0
        var cpuAtStart = ProcessCPU(), cpuAtEnd = ProcessCPU()
    }

    private func runOne(_ impl: Implementation, round: Int, topology: EchoTopology,
                        stop: EchoStopFlag) throws -> RoundWindow {
        let c = configuration
        var stack: EndpointStack?
        var listener: TCPListenerSocket?
        var kernel: KernelHTTPServer?
        let totals = StackTCPTotals(cores: c.queues)
        defer {
            listener?.close()
            stack?.shutdown()
            kernel?.stop()
        }
        if impl == .netstack {
            do {
                stack = try EndpointStack.start(on: topology.tun, configuration: .init(
                    addresses: [IPAddress(EchoTopology.stackAddress)!], cores: c.queues, pinned: c.pinned,
                    spinPasses: c.spinPasses))
            } catch {
                throw EchoSetupError(description: "stack: \(error)")
            }
            do {
                listener = try stack!.makeTCPListener(.ipv6, port: Self.port, backlog: 1024) { [totals] s in
                    StackHTTPServer.serve(s)
                    if s.state == .closed { totals.add(s) }
                }
            } catch {
                throw EchoSetupError(description: "stack listen: \(error)")
            }
        } else {
            kernel = try KernelHTTPServer(in: topology.server, address: EchoTopology.serverAddress, port: Self.port,
                                          threads: c.queues, pinned: c.pinned)
        }
        let address = impl == .netstack ? EchoTopology.stackAddress : EchoTopology.serverAddress
        let clientCPU = c.pinned ? onlineCPUCount - 1 : nil

        let clientNS0 = NamespaceCounters.read(in: topology.client)
        let serverNS0 = NamespaceCounters.read(in: topology.server)
        let load0 = CPULoadSample()
        var m = Measured()
        if usesWrk {
            m.cpuAtStart = ProcessCPU()
            defer { m.cpuAtEnd = ProcessCPU() }
            let w = try WrkLoad.run(in: topology.client, url: "http://\(address)/", connections: c.connections,
                                    threads: c.clientThreads, seconds: c.seconds, cpu: clientCPU)
            m.responses = w.requests
            m.seconds = w.seconds
            m.median = w.medianNanoseconds
            m.p99 = w.p99Nanoseconds
            m.maximum = w.maxNanoseconds
            m.answered = w.requests
            if w.socketErrors > 0 { m.problems.append("wrk: \(w.socketErrors) socket errors") }
            if w.badResponses > 0 { m.problems.append("wrk: \(w.badResponses) non-2xx/3xx responses") }
            m.client = [("socket_errors", .int(w.socketErrors)), ("bad_responses", .int(w.badResponses))]
        } else {
            let lc = HTTPLoadConfiguration(
                connections: c.connections, threads: c.clientThreads, route: route, warmupSeconds: c.warmupSeconds,
                seconds: c.seconds, requests: c.requests, capSeconds: c.capSeconds,
                // Small responses: wait for the last ones (every request
                // answered is checked); a bulk body: close at once.
                drainSeconds: c.kind == .http ? 0.5 : 0, cpu: clientCPU)
            let target = ipv4SocketAddress(address, port: Self.port)
            let r = try topology.client.inside(thread: "http-client-0", cpu: clientCPU) { [target] in
                runHTTPLoad(lc, target: target, host: address, stop: stop)
            }
            m.responses = r.measuredResponses
            m.seconds = r.measuredSeconds
            m.bodyBytes = r.measuredBodyBytes
            m.bytes = r.measuredBytes
            m.median = r.latency.quantile(0.5)
            m.p99 = r.latency.quantile(0.99)
            m.maximum = r.latency.maximum
            m.sent = r.sent
            m.answered = r.responses
            m.unanswered = r.unanswered
            m.cpuAtStart = r.cpuAtStart
            m.cpuAtEnd = r.cpuAtEnd
            if let e = r.fatalError { m.problems.append("client: \(e)") }
            if r.mismatches > 0 { m.problems.append("\(r.mismatches) responses differ from the service's") }
            if r.connectionErrors > 0 { m.problems.append("\(r.connectionErrors) connections failed") }
            // Every request the client sent is answered or still in flight
            // when it stopped; with a drain (stack-http) none may be.
            if r.sent != r.responses + r.unanswered + r.abandoned {
                m.problems.append("requests not conserved: \(r.sent) sent, \(r.responses) answered, "
                                  + "\(r.unanswered) in flight, \(r.abandoned) on failed connections")
            }
            if c.kind == .http && r.unanswered > 0 && !stop.isSet {
                m.problems.append("\(r.unanswered) requests unanswered after the drain")
            }
            let perResponse = { (n: Int) -> JSONValue in .double(r.responses > 0 ? Double(n) / Double(r.responses) : 0) }
            m.client = [
                ("mismatches", .int(r.mismatches)), ("connection_errors", .int(r.connectionErrors)),
                ("epoll_waits_per_response", perResponse(r.epollWaits)),
                ("recv_calls_per_response", perResponse(r.recvCalls)),
            ]
        }
        let otherLoad = CPULoadSample.otherLoadField(since: load0)

        // The stack's connections close after the client's (its FIN or
        // RST): their handlers add their TCP counters as they do. Wait for
        // them, bounded, before the stack stops.
        var stackDelta = StackSnapshot()
        var tcp = TCPTotals()
        if let s = stack {
            let deadline = monotonicSeconds() + 2
            while s.gauges.tcpConnections > 0 && monotonicSeconds() < deadline { usleep(10_000) }
            listener?.close()
            listener = nil
            s.shutdown()
            stackDelta = StackSnapshot(s)
            tcp = totals.sum
        }
        kernel?.stop()
        let kernelDelta = kernel?.snapshot() ?? KernelHTTPSnapshot()
        let clientDrops = NamespaceCounters.read(in: topology.client).dropsSince(clientNS0)
        let serverDrops = NamespaceCounters.read(in: topology.server).dropsSince(serverNS0)

        if m.responses == 0 && m.bodyBytes == 0 && !stop.isSet { m.problems.append("no response in the measured window") }
        if impl == .netstack && !stackDelta.conserved { m.problems.append("stack accounting not conserved") }
        // The server answered at least what the client counted (responses
        // of connections the stack's handler saw closing; all of them when
        // every connection was counted).
        let serverResponses = impl == .netstack ? tcp.responses : kernelDelta.responses
        let allCounted = impl == .kernel || tcp.connections == stackDelta.tcpConnectionsAccepted
        if allCounted && serverResponses < m.answered {
            m.problems.append("the server counted \(serverResponses) responses, the client \(m.answered)")
        }
        let complete = !stop.isSet && (c.requests.map { m.responses >= $0 } ?? true)

        let rps = m.seconds > 0 ? Double(m.responses) / m.seconds : 0
        let bodyRate = m.seconds > 0 ? Double(m.bodyBytes) / m.seconds : 0
        let units = c.kind == .http ? Double(m.responses) : Double(m.bodyBytes) / 1_048_576
        let serverThreads = impl == .netstack ? ["smp-core-", "tun-waker"] : ["http-kserver-"]
        let cpu = cpuField(from: m.cpuAtStart, to: m.cpuAtEnd, client: usesWrk ? [] : ["http-client-"],
                           server: serverThreads, window: m.seconds, units: units,
                           unit: c.kind == .http ? "request" : "mib")

        var reasons: [(String, JSONValue)] = [
            ("client_device_drops", .int(clientDrops.device)),
        ]
        let server: JSONValue
        if impl == .netstack {
            let s = stackDelta
            let segments = s.delivered
            let perSegment = { (n: Int) -> JSONValue in .double(segments > 0 ? Double(n) / Double(segments) : 0) }
            let perResponse = { (n: Int) -> JSONValue in
                .double(tcp.responses > 0 ? Double(n) / Double(tcp.responses) : 0)
            }
            reasons += [("stack_drops", .int(s.dropped)), ("tun_write_errors", .int(s.writeErrors)),
                        ("tcp_drops", .int(tcp.drops)), ("retransmissions", .int(tcp.retransmissions))]
            // Hand-off statistics, as the stack counts them: pure ACKs sent
            // from the input path (the NetBSD fast path's immediate ACK,
            // under the socket lock) and by the continuations (deferred),
            // try-lock failures, and the socket queue's depth when the
            // input path took it (segments per input-path run).
            server = .object([
                ("packets_in", .int(s.packetsIn)), ("packets_out", .int(s.packetsOut)),
                ("connections_accepted", .int(s.tcpConnectionsAccepted)),
                ("connections_counted", .int(tcp.connections)),
                ("responses", .int(tcp.responses)),
                ("handoff", .object([
                    ("immediate_acks", .int(s.tcpImmediateAcks)),
                    ("deferred_acks", .int(s.tcpDeferredAcks)),
                    ("try_lock_failures", .int(s.tcpTryLockFailures)),
                    ("input_path_runs", .int(s.tcpInputPathRuns)),
                    ("queue_depth_at_handoff",
                     .double(s.tcpInputPathRuns > 0 ? Double(s.tcpInputPathSegments) / Double(s.tcpInputPathRuns) : 0)),
                    ("delayed_acks_by_timer", .int(tcp.delayedAcksSent)),
                    ("segments_delivered", .int(segments)),
                    ("segments_received_by_engines", .int(tcp.segmentsReceived)),
                    ("segments_sent", .int(s.tcpSegmentsSent)),
                    ("tcp_gso_segments", .int(s.tcpSuperSegmentsSent)),
                    ("socket_worker_runs", .int(s.socketWorkerRuns)),
                    ("segments_per_worker_run",
                     .double(s.socketWorkerRuns > 0 ? Double(segments) / Double(s.socketWorkerRuns) : 0)),
                    ("worker_runs_per_segment", perSegment(s.socketWorkerRuns)),
                    ("waker_wakeups_per_segment", perSegment(s.wakeups)),
                    ("parks_per_segment", perSegment(s.parks)),
                    ("loop_passes_per_segment", perSegment(s.loopPasses)),
                    ("segments_in_per_response", perResponse(segments)),
                    ("segments_out_per_response", perResponse(s.tcpSegmentsSent)),
                    ("acks_per_response", perResponse(tcp.pureAcksSent)),
                    ("handed_off", .int(s.handedOff)), ("writes_handed_off", .int(s.writesHandedOff)),
                    ("mailbox_messages", .int(s.mailboxMessages)),
                ])),
                ("packets_per_read_batch", .double(s.readBatches > 0 ? Double(s.packetsRead) / Double(s.readBatches) : 0)),
                ("write_syscalls_per_packet",
                 .double(s.packetsOut > 0 ? Double(s.writeSystemCalls) / Double(s.packetsOut) : 0)),
                ("retransmissions", .int(tcp.retransmissions)), ("fast_retransmits", .int(tcp.fastRetransmits)),
                ("timeouts", .int(tcp.timeouts)), ("duplicate_acks_received", .int(tcp.duplicateAcksReceived)),
                ("out_of_order_segments", .int(tcp.outOfOrderSegments)), ("resets_sent", .int(tcp.resetsSent)),
                ("bytes_sent", .int(tcp.bytesSent)),
            ])
        } else {
            let k = kernelDelta
            let perResponse = { (n: Int) -> JSONValue in .double(k.responses > 0 ? Double(n) / Double(k.responses) : 0) }
            reasons += [("server_device_drops", .int(serverDrops.device))]
            server = .object([
                ("accepted", .int(k.accepted)), ("closed", .int(k.closed)), ("responses", .int(k.responses)),
                ("connection_errors", .int(k.errors)),
                ("epoll_waits_per_response", perResponse(k.epollWaits)),
                ("events_per_response", perResponse(k.events)),
                ("recv_calls_per_response", perResponse(k.recvCalls)),
                ("send_calls_per_response", perResponse(k.sendCalls)),
                ("sends_blocked", .int(k.sendBlocked)),
            ])
        }

        var extra: [(String, JSONValue)] = [("round", .int(round)), ("rounds", .int(c.rounds))]
        if c.kind == .http {
            extra += [("rps", .double(rps))]
        } else {
            extra += [("gbit_per_s", .double(bodyRate * 8 / 1e9)), ("mib_per_s", .double(bodyRate / 1_048_576)),
                      ("transfers", .int(m.responses)), ("response_bytes", .int(c.responseBytes))]
        }
        extra += [
            ("median_us", .double(Double(m.median) / 1e3)), ("p99_us", .double(Double(m.p99) / 1e3)),
            ("max_us", .double(Double(m.maximum) / 1e3)),
            ("load", .string(usesWrk ? "wrk" : "builtin")), ("path", .string(routeTarget(route))),
            ("connections", .int(c.connections)), ("client_threads", .int(c.clientThreads)),
            ("queues", .int(c.queues)), ("spin_passes", .int(c.spinPasses)), ("pinned", .bool(c.pinned)),
            ("responses", .int(m.answered)),
        ]
        // (wrk reports neither.)
        if !usesWrk { extra += [("sent", .int(m.sent)), ("unanswered", .int(m.unanswered))] }
        extra += [
            ("loss_reasons", .object(reasons)),
            ("cpu", cpu), ("client", .object(m.client)), ("server", server),
            ("complete", .bool(complete)),
            ("gso", .bool(c.segmentationOffload)),
        ]
        if let otherLoad { extra.append(otherLoad) }
        var note = impl == .netstack
            ? "EndpointStack on a \(c.queues)-queue TUN device"
                + (c.segmentationOffload ? " with the virtio-net header (TCP GSO)" : " without GSO")
                + ", the HTTP service on the public TCPSocket API"
            : "Linux TCP, \(c.queues) epoll thread(s) with SO_REUSEPORT listeners, the same HTTPConnection, behind a veth pair"
        if c.pinned { note += "; server thread k on CPU k, client on CPU \(onlineCPUCount - 1)" }
        note += "; client: " + (usesWrk ? "wrk" : "built-in") + ", \(c.clientThreads) thread(s), \(c.connections) keep-alive "
            + "connection(s), one request outstanding each, GET \(routeTarget(route)); "
        note += c.kind == .http
            ? "mops = responses in the window / window / 1e6"
                + (usesWrk ? "; wrk checks statuses, not bodies" : "; every response checked byte for byte")
            : "ops = body bytes in the window, mops = MB/s; every body byte checked"
        if !complete { note += "; window cut short" }
        if !m.problems.isEmpty { note = "CHECK FAILED: " + m.problems.joined(separator: "; ") + "; " + note }
        let ops = c.kind == .http ? m.responses : m.bodyBytes
        let line = BenchResult.throughput(workload: c.kind.rawValue, impl: impl.rawValue, ops: ops, seconds: m.seconds,
                                          checked: m.problems.isEmpty, note: note, extra: extra)
        return RoundWindow(line: line, rate: c.kind == .http ? rps : bodyRate,
                           latency: c.kind == .http ? Double(m.median) : 0)
    }
}

/// The TCP counters of a window's stack connections that matter here,
/// summed.
struct TCPTotals {
    var connections = 0, responses = 0
    var segmentsReceived = 0, segmentsSent = 0, bytesSent = 0, bytesReceived = 0
    var retransmissions = 0, fastRetransmits = 0, timeouts = 0
    var pureAcksSent = 0, delayedAcksSent = 0, duplicateAcksReceived = 0
    var outOfOrderSegments = 0, resetsSent = 0, drops = 0

    /// One connection's.
    init(_ c: TCPCounters, responses r: Int) {
        connections = 1
        responses = r
        segmentsReceived = c.segmentsReceived
        segmentsSent = c.segmentsSent
        bytesSent = c.bytesSent
        bytesReceived = c.bytesReceived
        retransmissions = c.retransmissions
        fastRetransmits = c.fastRetransmits
        timeouts = c.timeouts
        pureAcksSent = c.pureAcksSent
        delayedAcksSent = c.delayedAcksSent
        duplicateAcksReceived = c.duplicateAcksReceived
        outOfOrderSegments = c.outOfOrderSegments
        resetsSent = c.resetsSent
        drops = c.totalDrops
    }

    init() {}

    mutating func add(_ o: TCPTotals) {
        connections += o.connections
        responses += o.responses
        segmentsReceived += o.segmentsReceived
        segmentsSent += o.segmentsSent
        bytesSent += o.bytesSent
        bytesReceived += o.bytesReceived
        retransmissions += o.retransmissions
        fastRetransmits += o.fastRetransmits
        timeouts += o.timeouts
        pureAcksSent += o.pureAcksSent
        delayedAcksSent += o.delayedAcksSent
        duplicateAcksReceived += o.duplicateAcksReceived
        outOfOrderSegments += o.outOfOrderSegments
        resetsSent += o.resetsSent
        drops += o.drops
    }
}

/// Per stack core, the ``TCPTotals`` of the connections that closed there:
/// a connection's handler adds its counters (and its HTTPConnection's
/// responses) in its last run, state `.closed`.
final class StackTCPTotals: @unchecked Sendable {
    // @unchecked Sendable: slot k is written only on the stack's executor
    // k (the handlers of the connections on core k run there, one at a
    // time) and read by the bench only after the stack's shutdown, which
    // joins the executors: everything they wrote happens before the read.
    private let slots: UnsafeMutablePointer<TCPTotals>
    private let cores: Int

    init(cores: Int) {
        self.cores = cores
        slots = .allocate(capacity: cores)
        slots.initialize(repeating: TCPTotals(), count: cores)
    }

    deinit {
        slots.deinitialize(count: cores)
        slots.deallocate()
    }

    /// From `s`'s handler, on its executor.
    func add(_ s: TCPSocket) {
        let responses = s.context.map { unsafeDowncast($0, to: HTTPConnection.self).responses } ?? 0
        slots[s.core].add(TCPTotals(s.counters, responses: responses))
    }

    /// The sum (after the stack's shutdown).
    var sum: TCPTotals {
        var t = TCPTotals()
        for k in 0..<cores { t.add(slots[k]) }
        return t
    }
}
