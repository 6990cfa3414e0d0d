// stack-udp-echo (specified in docs/BenchmarkWorkloads.md): the same kernel
// client load against the project's stack on a TUN device and against a
// Linux epoll + recvmmsg/sendmmsg echo server behind a veth pair,
// alternating in one run.
//
// Files: this one (the run, the rounds, the result lines),
// EchoTopology.swift (namespaces, devices, per-namespace counters),
// EchoClient.swift (the load and the check), KernelEchoServer.swift (the
// baseline), StackEchoService.swift (the stack's echo, shared with
// `fastdemux serve`), LatencyHistogram.swift.
import Glibc
import NetStack
import PacketIO
import SMPPrimitives

/// The stack-udp-echo workload: N kernel UDP client sockets, each keeping
/// K requests in flight, against (a) the project's ``EndpointStack``
/// answering as an address on a multi-queue TUN device, with the echo
/// service written on its public ``UDPSocket`` API, and (b) a Linux UDP
/// echo server (epoll + `recvmmsg`/`sendmmsg`) in a namespace of its own
/// behind a veth pair. Rounds alternate a, b, a, b, … in one run, on one
/// set of namespaces made for the run (the topology is in
/// EchoTopology.swift and docs/BenchmarkWorkloads.md).
///
/// Every reply is checked byte for byte against the request it names;
/// requests without a reply are counted lost, with the drop counters of
/// every place that could have dropped them.
///
/// Concurrency contract: ``run(stop:report:)`` is synchronous, from any
/// thread that is not one of the stack's executors; it makes and joins its
/// own threads and deletes everything it made (namespaces, devices,
/// sockets) before it returns or throws. Needs root.
public struct StackUDPEchoBenchmark: Sendable {
    /// The `workload` field of the lines.
    public static let workload = "stack-udp-echo"

    /// The two servers (the `impl` field).
    public enum Implementation: String, CaseIterable, Sendable {
        /// The project's stack over the TUN device.
        case netstack
        /// The Linux UDP echo server.
        case kernel = "linux_udp_epoll"
    }

    public struct Configuration: Sendable {
        /// Rounds; each runs every implementation once, in order.
        public var rounds = 3
        /// Which servers run (both by default; the ratio needs both).
        public var implementations = Implementation.allCases
        /// Client sockets (N), each its own flow.
        public var sockets = 8
        /// Requests in flight per socket (K).
        public var inflight = 16
        /// UDP payload bytes per request (16...1472: no fragmentation).
        public var payloadBytes = 64
        /// Measured seconds per implementation per round.
        public var seconds = 3.0
        /// Load before the measured window (not counted in the rate).
        public var warmupSeconds = 0.5
        /// End the measured window after this many replies instead (the
        /// workload's N); `seconds` is then ignored and `capSeconds` bounds it.
        public var requests: Int?
        /// The longest a measured window may last.
        public var capSeconds = 30.0
        /// Stack cores = TUN queues = kernel server threads.
        public var queues = 1
        /// Pin the servers' threads (stack executor k, kernel server thread
        /// k) to CPU k and the client to the last CPU. Unpinned, Linux's
        /// wake-affine placement tends to wake the client on the CPU of the
        /// thread that woke it, the server, where a spinning executor then
        /// shares the CPU with it (measured in docs/Benchmarks.md).
        public var pinned = true
        /// The stack executors' idle spin passes before parking.
        public var spinPasses = EndpointStack.Configuration(addresses: []).spinPasses
        /// Requests lost (never answered) above this fraction of those sent
        /// fail the check.
        public var lossBound = 0.001

        public init() {}
    }

    /// Why the workload cannot run here (not root, no TUN, no `ip`), or nil.
    public static var unavailableReason: String? { EchoTopology.unavailableReason }

    public let configuration: Configuration

    public init(_ configuration: Configuration) {
        precondition(configuration.rounds >= 1 && configuration.sockets >= 1 && configuration.inflight >= 1)
        precondition((EchoPayload.headerBytes...1472).contains(configuration.payloadBytes))
        precondition(configuration.queues >= 1 && configuration.queues <= TUNDevice.maximumQueues)
        self.configuration = configuration
    }

    static let port: UInt16 = 7

    /// Sets up, runs every round and tears down. `report` gets each round's
    /// lines as soon as the round is over (both implementations, with the
    /// ratio); the lines are also returned. Stops early (lines so far,
    /// `complete: false` on a cut window) once `stop` is set.
    /// - Throws: ``EchoSetupError`` (as `any Error`) if the namespaces, the
    ///   devices or a server could not be set up; nothing is left behind.
    public func run(stop: EchoStopFlag = EchoStopFlag(),
                    report: (BenchResult) -> Void = { _ in }) throws -> [BenchResult] {
        if let reason = Self.unavailableReason { throw EchoSetupError(description: reason) }
        let c = configuration
        let topology = try EchoTopology(queues: c.queues)
        defer { topology.destroy() }
        return try alternatingRounds(c.rounds, c.implementations, stack: .netstack, kernel: .kernel, stop: stop,
                                     report: report) { impl, round in
            let (line, rps, median) = try runOne(impl, round: round, topology: topology, stop: stop)
            return RoundWindow(line: line, rate: rps, latency: Double(median))
        }
    }

    /// One implementation's window of one round: the line, its requests/s
    /// and its median round trip (ns).
    ///
    /// Each window starts its own server and stops it afterwards, so that
    /// the other one costs nothing meanwhile (an idle stack's executors
    /// still wake every `pollerParkTimeout` and spin `spinPasses` passes).
    private func runOne(_ impl: Implementation, round: Int, topology: EchoTopology,
                        stop: EchoStopFlag) throws -> (BenchResult, Double, Int) {
        let c = configuration
        var stack: EndpointStack?
        var echo: UDPSocket?
        var kernel: KernelEchoServer?
        defer {
            echo?.close()
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
                echo = try StackUDPEcho.start(on: stack!, port: Self.port)
            } catch {
                throw EchoSetupError(description: "stack echo bind: \(error)")
            }
        } else {
            kernel = try KernelEchoServer(in: topology.server, address: EchoTopology.serverAddress, port: Self.port,
                                          threads: c.queues, payloadBytes: c.payloadBytes, pinned: c.pinned)
        }
        let target = impl == .netstack ? EchoTopology.stackAddress : EchoTopology.serverAddress
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = Self.port.bigEndian
        _ = inet_pton(AF_INET, target, &sa.sin_addr)
        let clientConfiguration = EchoClientConfiguration(
            sockets: c.sockets, inflight: c.inflight, payloadBytes: c.payloadBytes, warmupSeconds: c.warmupSeconds,
            seconds: c.seconds, requests: c.requests, capSeconds: c.capSeconds)

        let clientNS0 = NamespaceCounters.read(in: topology.client)
        let serverNS0 = NamespaceCounters.read(in: topology.server)
        let load0 = CPULoadSample()
        let r = try topology.client.inside(thread: "echo-client", cpu: c.pinned ? onlineCPUCount - 1 : nil) { [sa] in
            runEchoClient(clientConfiguration, target: sa, stop: stop)
        }
        let otherLoad = CPULoadSample.otherLoadField(since: load0)
        let stackDelta = stack.map { StackSnapshot($0) } ?? StackSnapshot()
        let kernelDelta = kernel?.snapshot() ?? KernelEchoSnapshot()
        let clientDrops = NamespaceCounters.read(in: topology.client).dropsSince(clientNS0)
        let serverDrops = NamespaceCounters.read(in: topology.server).dropsSince(serverNS0)

        let rps = r.measuredSeconds > 0 ? Double(r.measuredReplies) / r.measuredSeconds : 0
        let median = r.latency.quantile(0.5)
        let lossAllowed = Int(c.lossBound * Double(r.sent))
        var problems: [String] = []
        if let e = r.fatalError { problems.append("client: \(e)") }
        if r.corrupt > 0 { problems.append("\(r.corrupt) replies differ from their request") }
        if r.duplicates > 0 { problems.append("\(r.duplicates) requests answered twice") }
        if r.lost > lossAllowed {
            problems.append("\(r.lost) of \(r.sent) requests lost (bound \(c.lossBound * 100) %: \(lossAllowed))")
        }
        // (A window a stop request cut short may end before any reply.)
        if r.measuredReplies == 0 && !stop.isSet { problems.append("no reply in the measured window") }
        if impl == .netstack && !stackDelta.conserved { problems.append("stack accounting not conserved") }
        let complete = !stop.isSet && (c.requests.map { r.measuredReplies >= $0 } ?? true)

        // Where requests may have been dropped, counted by whoever dropped
        // them (deltas over the round).
        var reasons: [(String, JSONValue)] = [
            ("client_send_errors", .int(r.sendErrors)),
            ("client_udp_in_errors", .int(clientDrops.udpReceive)),
            ("client_device_drops", .int(clientDrops.device)),
        ]
        if impl == .netstack {
            reasons += [("stack_drops", .int(stackDelta.dropped)), ("stack_send_failures", .int(stackDelta.sendFailures)),
                        ("tun_write_errors", .int(stackDelta.writeErrors))]
        } else {
            reasons += [("server_udp_in_errors", .int(serverDrops.udpReceive)),
                        ("server_device_drops", .int(serverDrops.device)),
                        ("server_send_errors", .int(kernelDelta.sendErrors))]
        }

        let serverThreads = impl == .netstack ? ["smp-core-", "tun-waker"] : ["echo-kserver-"]
        let cpu = cpuField(from: r.cpuAtStart, to: r.cpuAtEnd, client: ["echo-client"], server: serverThreads,
                           window: r.measuredSeconds, units: Double(r.measuredReplies), unit: "request")
        let perReply = { (n: Int) -> JSONValue in .double(r.replies > 0 ? Double(n) / Double(r.replies) : 0) }
        let client: JSONValue = .object([
            ("epoll_waits_per_reply", perReply(r.epollWaits)), ("recvmmsg_per_reply", perReply(r.recvCalls)),
            ("sendmmsg_per_reply", perReply(r.sendCalls)),
        ])
        let server: JSONValue
        if impl == .netstack {
            let s = stackDelta
            let perPacket = { (n: Int) -> JSONValue in .double(s.packetsIn > 0 ? Double(n) / Double(s.packetsIn) : 0) }
            server = .object([
                ("packets_in", .int(s.packetsIn)), ("packets_out", .int(s.packetsOut)),
                ("handed_off", .int(s.handedOff)), ("writes_handed_off", .int(s.writesHandedOff)),
                ("misplaced", .int(s.misplaced)),
                ("packets_per_read_batch", .double(s.readBatches > 0 ? Double(s.packetsRead) / Double(s.readBatches) : 0)),
                ("write_syscalls_per_packet", perPacket(s.writeSystemCalls)),
                ("read_syscalls_per_packet", perPacket(s.packetsRead + s.readBatches)),
                ("waker_wakeups_per_packet", perPacket(s.wakeups)),
                ("parks_per_packet", perPacket(s.parks)),
                ("loop_passes_per_packet", perPacket(s.loopPasses)),
                ("mailbox_messages", .int(s.mailboxMessages)),
            ])
        } else {
            let k = kernelDelta
            let perPacket = { (n: Int) -> JSONValue in .double(k.received > 0 ? Double(n) / Double(k.received) : 0) }
            server = .object([
                ("received", .int(k.received)), ("sent", .int(k.sent)),
                ("dgrams_per_recvmmsg", .double(k.recvCalls > 0 ? Double(k.received) / Double(k.recvCalls) : 0)),
                ("epoll_waits_per_packet", perPacket(k.epollWaits)), ("recvmmsg_per_packet", perPacket(k.recvCalls)),
                ("sendmmsg_per_packet", perPacket(k.sendCalls)),
            ])
        }
        var extra: [(String, JSONValue)] = [
            ("round", .int(round)), ("rounds", .int(c.rounds)),
            ("rps", .double(rps)),
            ("median_us", .double(Double(median) / 1e3)), ("p99_us", .double(Double(r.latency.quantile(0.99)) / 1e3)),
            ("max_us", .double(Double(r.latency.maximum) / 1e3)),
            ("sockets", .int(c.sockets)), ("inflight", .int(c.inflight)), ("payload_bytes", .int(c.payloadBytes)),
            ("queues", .int(c.queues)), ("spin_passes", .int(c.spinPasses)), ("pinned", .bool(c.pinned)),
            ("sent", .int(r.sent)), ("replies", .int(r.replies)), ("lost", .int(r.lost)), ("late", .int(r.late)),
            ("corrupt", .int(r.corrupt)), ("duplicates", .int(r.duplicates)), ("loss_bound", .double(c.lossBound)),
            ("loss_reasons", .object(reasons)),
            ("cpu", cpu), ("client", client), ("server", server),
            ("complete", .bool(complete)),
        ]
        if let otherLoad { extra.append(otherLoad) }
        var note = impl == .netstack
            ? "EndpointStack on a \(c.queues)-queue TUN device, echo on the public UDPSocket API"
            : "Linux UDP echo, \(c.queues) thread(s): epoll + recvmmsg/sendmmsg(\(KernelEchoServer.batch)), behind a veth pair"
        if c.pinned { note += "; server thread k on CPU k, client on CPU \(onlineCPUCount - 1)" }
        note += "; client: 1 thread, \(c.sockets) connected sockets x \(c.inflight) in flight, \(c.payloadBytes)-byte payloads; "
            + "mops = replies in the window / window / 1e6; every reply compared byte for byte"
        if !complete { note += "; window cut short" }
        if !problems.isEmpty { note = "CHECK FAILED: " + problems.joined(separator: "; ") + "; " + note }
        let line = BenchResult.throughput(workload: Self.workload, impl: impl.rawValue, ops: r.measuredReplies,
                                          seconds: r.measuredSeconds, checked: problems.isEmpty, note: note,
                                          extra: extra)
        return (line, rps, median)
    }
}

/// The stack's, its TUN queues' and its executors' counters (of a stack
/// started for one window: its whole life).
struct StackSnapshot {
    var packetsIn = 0, packetsOut = 0, handedOff = 0, writesHandedOff = 0, dropped = 0, sendFailures = 0
    var conserved = true
    var packetsRead = 0, readBatches = 0, writeSystemCalls = 0, writeErrors = 0, wakeups = 0, misplaced = 0
    var parks = 0, loopPasses = 0, mailboxMessages = 0
    /// Packets put on a socket's receive queue (datagrams, TCP segments),
    /// runs of the sockets' worker continuations, TCP segments sent, RSTs
    /// of the input path, connections accepted.
    var delivered = 0, socketWorkerRuns = 0, tcpSegmentsSent = 0, tcpResetsSent = 0, tcpConnectionsAccepted = 0
    /// The TCP fast path's hand-off: ACKs sent from the input path and by
    /// the continuations, try-lock failures, input-path engine runs and
    /// the segments they took.
    var tcpImmediateAcks = 0, tcpDeferredAcks = 0, tcpTryLockFailures = 0, tcpInputPathRuns = 0
    var tcpInputPathSegments = 0
    /// TCP super-segments written behind a virtio-net header.
    var tcpSuperSegmentsSent = 0

    init() {}

    init(_ stack: EndpointStack) {
        let s = stack.totalStatistics
        packetsIn = s.packetsIn
        packetsOut = s.packetsOut
        handedOff = s.handedOff
        writesHandedOff = s.writesHandedOff
        dropped = s.droppedTotal
        sendFailures = s.sendFailures
        conserved = s.isConserved
        delivered = s.delivered
        socketWorkerRuns = s.socketWorkerRuns
        tcpSegmentsSent = s.tcpSegmentsSent
        tcpResetsSent = s.tcpResetsSent
        tcpConnectionsAccepted = s.tcpConnectionsAccepted
        tcpImmediateAcks = s.tcpImmediateAcks
        tcpDeferredAcks = s.tcpDeferredAcks
        tcpTryLockFailures = s.tcpTryLockFailures
        tcpInputPathRuns = s.tcpInputPathRuns
        tcpInputPathSegments = s.tcpInputPathSegments
        tcpSuperSegmentsSent = s.tcpSuperSegmentsSent
        for q in 0..<stack.configuration.cores {
            guard let t = stack.queueStatistics(queue: q) else { continue }
            packetsRead += t.packetsRead
            readBatches += t.batches
            writeSystemCalls += t.writeSystemCalls
            writeErrors += t.writeErrors
            wakeups += t.wakeups
            misplaced += t.misplaced
        }
        for e in stack.group.executors {
            let x = e.statistics
            parks += x.parks
            loopPasses += x.loopPasses
            mailboxMessages += x.messagesHandled
        }
    }
}
