// kernel-udp (specified in docs/BenchmarkWorkloads.md): what a user would
// pick instead of a user-space demultiplexer — the Linux kernel's own UDP
// demux over loopback.
//
// Files: this one (the workload and its check), KernelUDPSockets.swift (the
// sockets and the payload), KernelUDPThreads.swift (the sender and the
// receiver), UDPSNMPCounters.swift (the kernel's UDP drop counters).
import SMPPrimitives

let kernelUDPWorkloads: [Workload] = [
    Workload(
        name: "kernel-udp",
        summary: "Linux UDP demux on loopback: 2,048 sockets on 127.0.0.1, sendmmsg on CPU 0, epoll + recvmmsg on CPU 1",
        impls: [(name: "linux_udp", run: { options in
            let config = KernelUDPBenchmark.Configuration(
                sockets: options.size ?? 2_048,
                datagrams: options.n ?? 10_000_000,
                capSeconds: min(options.capSeconds, 10))
            return KernelUDPBenchmark(config).run()
        })]
    ),
]

/// The kernel-udp workload: the Linux kernel demultiplexes 64-byte datagrams
/// sent over loopback to many UDP sockets, and one thread receives them.
///
/// A sender thread pinned to CPU 0 sends datagrams with `sendmmsg` in
/// batches of ``Configuration/batch``, destinations round-robin over the
/// sockets; a receiver thread pinned to CPU 1 waits with level-triggered
/// epoll and calls `recvmmsg(MSG_DONTWAIT)` once per ready socket. Every
/// payload carries its destination socket index and a per-socket sequence
/// number, so the receiver verifies that nothing was misdelivered,
/// duplicated or reordered. Datagrams the kernel drops (full receive
/// buffers) are counted, not an error: UDP may drop.
///
/// Concurrency contract: ``run()`` is synchronous and may be called from any
/// thread; it creates and joins its own two threads and closes every
/// descriptor it opened. Not meant to be run concurrently with itself
/// (timings would interfere), though it is safe to.
public struct KernelUDPBenchmark: Sendable {
    public struct Configuration: Sendable {
        /// Receiving sockets, each bound to 127.0.0.1 on an ephemeral port.
        public var sockets: Int
        /// Datagrams to send (the workload's N).
        public var datagrams: Int
        /// The sender stops after this many seconds even if not all were sent.
        public var capSeconds: Double
        /// Datagrams per `sendmmsg` and at most per `recvmmsg`.
        public var batch: Int = 64
        /// Payload size; at least 24 bytes (the header the check needs).
        public var payloadBytes: Int = 64

        public init(sockets: Int = 2_048, datagrams: Int = 10_000_000, capSeconds: Double = 10) {
            self.sockets = sockets
            self.datagrams = datagrams
            self.capSeconds = capSeconds
        }
    }

    public let configuration: Configuration

    public init(_ configuration: Configuration) {
        precondition(configuration.sockets > 0 && configuration.datagrams > 0)
        precondition(configuration.payloadBytes >= KernelUDPPayload.headerBytes)
        precondition(configuration.batch > 0)
        self.configuration = configuration
    }

    /// Runs the workload once and returns its result line
    /// (`impl = linux_udp`). `checked` is false if anything was misdelivered,
    /// duplicated or reordered, or if setup failed (the note says why).
    public func run() -> BenchResult {
        let c = configuration
        let setup: KernelUDPSockets
        do {
            setup = try KernelUDPSockets(count: c.sockets)
        } catch {
            return BenchResult.throughput(workload: "kernel-udp", impl: "linux_udp", ops: 0, seconds: 0,
                                          checked: false, note: "setup failed: \(error)")
        }
        defer { setup.close() }

        let shared = KernelUDPShared()
        let barrier = SpinBarrier(parties: 2)
        let snmpBefore = UDPSNMPCounters.read()
        let load0 = CPULoadSample()
        let receiver = PinnedThread(cpu: 1, name: "kudp-recv") { kernelUDPReceive(setup, c, shared, barrier) }
        let sender = PinnedThread(cpu: 0, name: "kudp-send") { kernelUDPSend(setup, c, shared, barrier) }
        let s = sender.join()
        let r = receiver.join()
        let snmpAfter = UDPSNMPCounters.read()
        let otherLoad = CPULoadSample.otherLoadField(since: load0)

        var problems: [String] = []
        if let e = s.fatalError { problems.append("sender: \(e)") }
        if let e = r.fatalError { problems.append("receiver: \(e)") }
        if r.bad > 0 { problems.append("\(r.bad) datagrams malformed or misdelivered") }
        if r.orderErrors > 0 { problems.append("\(r.orderErrors) datagrams duplicated or out of order") }
        if r.received > s.sent { problems.append("received \(r.received) > sent \(s.sent)") }
        // The highest sequence seen on a socket cannot exceed what was sent to it.
        if r.overrun > 0 { problems.append("\(r.overrun) sockets saw sequence numbers never sent") }
        // Every datagram the kernel did not deliver must show up in its own
        // (system-wide, so only ever larger) drop counters.
        var accountedNote = ""
        if let b = snmpBefore, let a = snmpAfter {
            let kernelDropped = (a.inErrors - b.inErrors) + (a.noPorts - b.noPorts)
            if r.received + kernelDropped < s.sent - s.sendErrors {
                problems.append("\(s.sent - s.sendErrors - r.received - kernelDropped) datagrams unaccounted for")
            }
        } else {
            accountedNote = "; /proc/net/snmp unreadable, kernel drop accounting not checked"
        }
        let seconds = r.lastReceive - r.start
        let complete = s.sent == c.datagrams
        var extra: [(String, JSONValue)] = [
            ("sent", .int(s.sent)),
            ("received", .int(r.received)),
            ("drops", .int(s.sent - r.received)),
            ("send_mops", .double(s.seconds > 0 ? Double(s.sent) / s.seconds / 1e6 : 0)),
            ("send_seconds", .double(s.seconds)),
            ("send_errors", .int(s.sendErrors)),
        ]
        if let b = snmpBefore, let a = snmpAfter {
            extra.append(("kernel_rcvbuf_errors", .int(a.rcvbufErrors - b.rcvbufErrors)))
            extra.append(("kernel_in_errors", .int(a.inErrors - b.inErrors)))
        }
        extra += [
            ("dgrams_per_recvmmsg", .double(r.recvCalls > 0 ? Double(r.received) / Double(r.recvCalls) : 0)),
            ("epoll_waits", .int(r.epollWaits)),
            ("complete", .bool(complete)),
        ]
        // As the C peer harness: CPUs kept busy by other processes meanwhile
        // (0 to 2 here); well above 0 means the timings are not meaningful.
        if let otherLoad { extra.append(otherLoad) }
        var note = "loopback 127.0.0.1, \(c.sockets) sockets, SO_RCVBUF default (\(setup.receiveBufferBytes)), "
            + "sendmmsg batches of \(c.batch) round-robin, LT epoll + recvmmsg(\(c.batch)); "
            + "mops = received / (last receive - start); kernel counters are system-wide deltas"
            + accountedNote
        if !complete { note += "; stopped by the \(c.capSeconds) s cap" }
        note = pinnedNote(note)
        if !problems.isEmpty { note = "CHECK FAILED: " + problems.joined(separator: "; ") + "; " + note }
        return BenchResult.throughput(workload: "kernel-udp", impl: "linux_udp", ops: r.received,
                                      seconds: max(seconds, 0), checked: problems.isEmpty,
                                      note: note, extra: extra)
    }
}
