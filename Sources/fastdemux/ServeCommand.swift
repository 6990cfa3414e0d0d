import ArgumentParser
import Workloads
import Glibc
import NetStack
import PacketIO
import SMPPrimitives
import Synchronization

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Be an IPv4/IPv6 host on a multi-queue TUN device: answer ping and ping -6, run UDP and TCP echo and an HTTP/1.1 server.",
        discussion: """
            Opens (or creates) TUN interface NAME with one queue per core (IFF_MULTI_QUEUE) and answers as \
            the --address(es) given: ICMP and ICMPv6 echo, UDP echo (RFC 862) on --udp-echo PORT written on \
            the stack's public socket API, TCP echo on --tcp-echo PORT, an HTTP/1.1 server on --http PORT \
            (keep-alive; GET / a short page, GET /bytes/N N bytes of a fixed pattern), ICMP port unreachable \
            for other UDP ports and a TCP reset for other TCP ports. Configure the kernel side \
            yourself, e.g. 'ip addr add 198.18.0.1/24 dev NAME; ip -6 addr add fd00:18::1/64 dev NAME nodad; \
            ip link set NAME up' with --address 198.18.0.2 --address fd00:18::2, inside a network namespace \
            of its own. A status line per second on a terminal; a summary at exit (Ctrl-C or --duration). \
            Needs root or CAP_NET_ADMIN.
            """
    )

    @Option(help: ArgumentHelp("The TUN interface name (at most 15 bytes).", valueName: "NAME"))
    var tun: String

    @Option(name: .customLong("address"),
            help: ArgumentHelp("An address the stack answers as (IPv4 or IPv6; repeat for both).", valueName: "ADDR"))
    var addresses: [String] = []

    @Option(help: ArgumentHelp("TUN queues, one core executor each (default: every CPU this process may run on).",
                               valueName: "N"))
    var queues: Int = onlineCPUCount

    @Option(name: .customLong("udp-echo"), help: ArgumentHelp("Run the UDP echo service on this port.", valueName: "PORT"))
    var udpEcho: Int?

    @Option(help: ArgumentHelp("Stop after this many seconds.", valueName: "SECONDS"))
    var duration: Double?

    @Flag(help: "Print the summary as one JSON object (one line, with schemaVersion and version).")
    var json = false

    @Option(name: .customLong("tcp-echo"), help: ArgumentHelp("Run the TCP echo service on this port.", valueName: "PORT"))
    var tcpEcho: Int?

    @Option(help: ArgumentHelp("Run the HTTP/1.1 server on this port.", valueName: "PORT"))
    var http: Int?

    @Flag(name: .customLong("no-gso"),
          help: "Open the TUN device without the virtio-net header: no TCP segmentation offload (one packet per segment).")
    var noGSO = false

    func validate() throws {
        if tun.isEmpty || tun.utf8.count > 15 { throw ValidationError("--tun: a name of 1 to 15 bytes") }
        if addresses.isEmpty { throw ValidationError("--address: give at least one address to answer as") }
        var seen: [IPAddress] = []
        for a in addresses {
            guard let ip = IPAddress(a) else { throw ValidationError("--address \(a): not an IPv4 or IPv6 address") }
            if seen.contains(ip) { throw ValidationError("--address \(a): given twice") }
            seen.append(ip)
        }
        if !(1...TUNDevice.maximumQueues).contains(queues) {
            throw ValidationError("--queues: 1 to \(TUNDevice.maximumQueues)")
        }
        if let udpEcho, !(1...65535).contains(udpEcho) { throw ValidationError("--udp-echo \(udpEcho): a port from 1 to 65535") }
        if let tcpEcho, !(1...65535).contains(tcpEcho) { throw ValidationError("--tcp-echo \(tcpEcho): a port from 1 to 65535") }
        if let http, !(1...65535).contains(http) { throw ValidationError("--http \(http): a port from 1 to 65535") }
        if let http, http == tcpEcho { throw ValidationError("--http \(http): the TCP echo's port too") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be positive") }
    }

    func run() throws {
        // Signals go to this thread only (the executors inherit the mask),
        // taken synchronously below with sigtimedwait.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let device: TUNDevice
        do {
            device = try TUNDevice(name: tun, mode: .multiQueue(queues), virtioHeader: !noGSO)
        } catch {
            writeStderr("fastdemux serve: error: \(error)")
            throw ExitCode(error.code == EPERM || error.code == EACCES ? 77 : 1)
        }
        defer { device.close() }
        let stack: EndpointStack
        do {
            stack = try EndpointStack.start(on: device, configuration: .init(
                addresses: addresses.compactMap(IPAddress.init), cores: queues))
        } catch {
            writeStderr("fastdemux serve: error: \(error)")
            throw ExitCode.failure
        }
        var echo: UDPSocket?
        if let udpEcho {
            // RFC 862 on the public socket API (the code bench
            // stack-udp-echo measures).
            do {
                echo = try StackUDPEcho.start(on: stack, port: UInt16(udpEcho))
            } catch {
                writeStderr("fastdemux serve: error: bind UDP port \(udpEcho): \(error)")
                stack.shutdown()
                throw ExitCode.failure
            }
        }
        var tcpListener: TCPListenerSocket?
        if let tcpEcho {
            do {
                tcpListener = try StackTCPEcho.start(on: stack, port: UInt16(tcpEcho))
            } catch {
                writeStderr("fastdemux serve: error: listen on TCP port \(tcpEcho): \(error)")
                echo?.close()
                stack.shutdown()
                throw ExitCode.failure
            }
        }
        var httpListener: TCPListenerSocket?
        if let http {
            do {
                httpListener = try StackHTTPServer.start(on: stack, port: UInt16(http))
            } catch {
                writeStderr("fastdemux serve: error: listen on TCP port \(http): \(error)")
                echo?.close()
                tcpListener?.close()
                stack.shutdown()
                throw ExitCode.failure
            }
        }
        writeStderr("fastdemux serve: \(device.name), \(queues) queue\(queues == 1 ? "" : "s"), answering as "
                    + addresses.joined(separator: ", ")
                    + (udpEcho.map { ", UDP echo on port \($0)" } ?? "")
                    + (tcpEcho.map { ", TCP echo on port \($0)" } ?? "")
                    + (http.map { ", HTTP on port \($0)" } ?? "")
                    + " (" + (duration.map { "\($0) s or Ctrl-C" } ?? "until Ctrl-C") + ")")

        let start = ContinuousClock.now
        let end = duration.map { start + .milliseconds(Int($0 * 1000)) }
        let terminal = stderrIsTerminal && !json
        while true {
            var timeout = timespec(tv_sec: 1, tv_nsec: 0)
            if let end {
                let left = end - ContinuousClock.now
                if left <= .zero { break }
                if left < .seconds(1) {
                    timeout = timespec(tv_sec: 0, tv_nsec: max(1, Int(left.components.attoseconds / 1_000_000_000)))
                }
            }
            if sigtimedwait(&signals, nil, &timeout) > 0 { break }
            if terminal {
                writeStderr("\r" + statusLine(stack.totalStatistics, stack.gauges, seconds: seconds(since: start))
                            + "   ", newline: false)
            }
        }
        if terminal { writeStderr("") }
        echo?.close()
        echo = nil   // its last reference: the gauges at exit must not count it
        tcpListener?.close()
        tcpListener = nil
        httpListener?.close()
        httpListener = nil
        let queueStats = (0..<queues).compactMap { stack.queueStatistics(queue: $0) }
        stack.shutdown()
        let total = stack.totalStatistics
        // After the echo socket closed and the stack stopped: what is still
        // held is a leak (or a fragment waiting for the rest of its datagram).
        let gauges = stack.gauges
        let elapsed = seconds(since: start)
        if json {
            try printJSONLine(ServeSummaryJSON(total, gauges, queues: queueStats, seconds: elapsed))
        } else {
            print(summaryText(total, gauges, queues: queueStats, seconds: elapsed))
        }
    }

    private func seconds(since start: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}

private func statusLine(_ s: StackStatistics, _ g: StackGauges, seconds: Double) -> String {
    "\(fixed(seconds, 0)) s: in \(s.packetsIn), delivered \(s.delivered) (worker runs \(s.socketWorkerRuns)), echo replies \(s.echoRequestsAnswered), "
        + "sent \(s.datagramsSent), port unreachable \(s.portUnreachableSent), dropped \(s.droppedTotal), "
        + "out \(s.packetsOut); sockets \(g.openSockets), buffers \(g.receiveBuffers.inUse)+\(g.datagramBuffers.inUse), "
        + "reassembly \(g.reassemblyQueues)"
}

private func summaryText(_ s: StackStatistics, _ g: StackGauges, queues: [TUNQueueReader.Statistics],
                         seconds: Double) -> String {
    var lines = ["serve: \(fixed(seconds, 1)) s",
                 "  packets in          \(s.packetsIn) (handed between cores \(s.handedOff))",
                 "  delivered           \(s.delivered) (socket worker continuation runs \(s.socketWorkerRuns))",
                 "  echo requests       \(s.echoRequestsAnswered) answered",
                 "  datagrams sent      \(s.datagramsSent) (failed \(s.sendFailures))",
                 "  reassembled         \(s.datagramsReassembled) datagrams from \(s.fragmentsToReassembly) fragments",
                 "  port unreachable    \(s.portUnreachableSent) sent, \(s.icmpErrorsSuppressed) suppressed, "
                    + "\(s.icmpErrorsRateLimited) rate-limited",
                 "  TCP                 \(s.tcpConnectionsAccepted) connections accepted, \(s.tcpSegmentsSent) segments sent "
                    + "(\(s.tcpSuperSegmentsSent) GSO super-segments), \(s.tcpResetsSent) RSTs to no socket",
                 "  TCP ACKs            \(s.tcpImmediateAcks) immediate (input path), \(s.tcpDeferredAcks) deferred "
                    + "(continuation), \(s.tcpTryLockFailures) try-lock failures; input-path runs \(s.tcpInputPathRuns) "
                    + "for \(s.tcpInputPathSegments) segments",
                 "  dropped             \(s.droppedTotal)"]
    for r in StackDropReason.allCases where s.dropped(r) > 0 {
        lines.append("    \(padRight(r.description, 18)) \(s.dropped(r))")
    }
    lines.append("  packets out         \(s.packetsOut)")
    for (k, q) in queues.enumerated() {
        lines.append("  queue \(k): read \(q.packetsRead), written \(q.packetsWritten), misplaced \(q.misplaced), "
                     + "write errors \(q.writeErrors)")
    }
    lines.append("  conservation        \(s.isConserved ? "ok" : "VIOLATED") (\(s.entered) in, \(s.accounted) accounted)")
    lines.append("  held at exit        " + (g.isZero ? "nothing" : g.nonZero))
    return lines.joined(separator: "\n")
}

struct ServeSummaryJSON: Encodable {
    let schemaVersion = JSONSchema.version
    let version = packageVersion
    let command = "serve"
    let seconds: Double
    let packetsIn, handedOff, delivered, echoReplies, datagramsSent, reassembled, portUnreachable, dropped, packetsOut: Int
    /// Runs of the sockets' worker continuations (kcont), all cores.
    let socketWorkerRuns: Int
    /// The TCP hand-off: connections accepted, segments sent, pure ACKs
    /// sent from the input path (immediate) and by the continuations
    /// (deferred), immediate-ACK try-lock failures, the input path's engine
    /// runs and the segments they took.
    let tcpAccepted, tcpSegmentsSent, tcpImmediateAcks, tcpDeferredAcks, tcpTryLockFailures: Int
    let tcpInputPathRuns, tcpInputPathSegments: Int
    /// TCP super-segments written behind a virtio-net header (each is one
    /// of tcpSegmentsSent; 0 with --no-gso).
    let tcpGSOSegments: Int
    let drops: [String: Int]
    let queues: [Queue]
    let conserved: Bool
    /// Every gauge at exit (after the echo socket closed and the stack
    /// stopped), by its snake_case name: all 0 unless something leaked
    /// or a fragment still waited for its datagram.
    let gauges: [String: Int]

    struct Queue: Encodable {
        let read, written, misplaced: Int
    }

    init(_ s: StackStatistics, _ g: StackGauges, queues q: [TUNQueueReader.Statistics], seconds: Double) {
        self.seconds = seconds
        packetsIn = s.packetsIn
        handedOff = s.handedOff
        delivered = s.delivered
        echoReplies = s.echoRequestsAnswered
        datagramsSent = s.datagramsSent
        reassembled = s.datagramsReassembled
        portUnreachable = s.portUnreachableSent
        dropped = s.droppedTotal
        packetsOut = s.packetsOut
        socketWorkerRuns = s.socketWorkerRuns
        tcpAccepted = s.tcpConnectionsAccepted
        tcpSegmentsSent = s.tcpSegmentsSent
        tcpImmediateAcks = s.tcpImmediateAcks
        tcpDeferredAcks = s.tcpDeferredAcks
        tcpTryLockFailures = s.tcpTryLockFailures
        tcpInputPathRuns = s.tcpInputPathRuns
        tcpInputPathSegments = s.tcpInputPathSegments
        tcpGSOSegments = s.tcpSuperSegmentsSent
        drops = Dictionary(uniqueKeysWithValues: StackDropReason.allCases.map { ($0.description, s.dropped($0)) })
        queues = q.map { Queue(read: $0.packetsRead, written: $0.packetsWritten, misplaced: $0.misplaced) }
        conserved = s.isConserved
        gauges = Dictionary(uniqueKeysWithValues: g.levels.map { ($0.name, $0.value) })
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion, version, command, seconds, delivered, dropped, drops, queues, conserved, gauges
        case packetsIn = "packets_in", handedOff = "handed_off", echoReplies = "echo_replies"
        case datagramsSent = "datagrams_sent", reassembled, portUnreachable = "port_unreachable"
        case packetsOut = "packets_out", socketWorkerRuns = "socket_worker_runs"
        case tcpAccepted = "tcp_accepted", tcpSegmentsSent = "tcp_segments_sent"
        case tcpImmediateAcks = "tcp_immediate_acks", tcpDeferredAcks = "tcp_deferred_acks"
        case tcpTryLockFailures = "tcp_try_lock_failures", tcpInputPathRuns = "tcp_input_path_runs"
        case tcpInputPathSegments = "tcp_input_path_segments", tcpGSOSegments = "tcp_gso_segments"
    }
}
