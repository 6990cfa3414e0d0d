// kernel-udp (BENCHMARKS.md): what a user would pick instead of a user-space
// demultiplexer — the Linux kernel's own UDP demux over loopback.
import CPacketIO
import Glibc
import SMPPrimitives
import Synchronization

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
        let receiver = PinnedThread(cpu: 1, name: "kudp-recv") {
            let r = kernelUDPReceive(setup, c, shared, barrier)
            shared.receiver.withLock { $0 = r }
        }
        let sender = PinnedThread(cpu: 0, name: "kudp-send") {
            let s = kernelUDPSend(setup, c, shared, barrier)
            shared.sender.withLock { $0 = s }
        }
        sender.join()
        receiver.join()
        let snmpAfter = UDPSNMPCounters.read()
        let otherLoad = CPULoadSample().otherLoad(since: load0)

        let s = shared.sender.withLock { $0 }
        let r = shared.receiver.withLock { $0 }
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
        // As the C peers: CPUs kept busy by other processes meanwhile (0 to 2
        // here); well above 0 means the timings are not meaningful.
        if let otherLoad { extra.append(("other_load", .double((otherLoad * 100).rounded() / 100))) }
        var note = "loopback 127.0.0.1, \(c.sockets) sockets, SO_RCVBUF default (\(setup.receiveBufferBytes)), "
            + "sendmmsg batches of \(c.batch) round-robin, LT epoll + recvmmsg(\(c.batch)); "
            + "mops = received / (last receive - start); kernel counters are system-wide deltas"
            + accountedNote
        if !complete { note += "; stopped by the \(c.capSeconds) s cap" }
        if let pin = pinningNote(requiredCPUs: 2) { note += "; " + pin }
        if !problems.isEmpty { note = "CHECK FAILED: " + problems.joined(separator: "; ") + "; " + note }
        return BenchResult.throughput(workload: "kernel-udp", impl: "linux_udp", ops: r.received,
                                      seconds: max(seconds, 0), checked: problems.isEmpty,
                                      note: note, extra: extra)
    }
}

/// The payload header every datagram carries (little-endian, host order):
/// global sequence (8 bytes), destination socket index (4), per-socket
/// sequence starting at 1 (4), and a fill word (8) the receiver verifies.
enum KernelUDPPayload {
    static let headerBytes = 24
    static let fill: UInt64 = 0xA5A5_A5A5_A5A5_A5A5
}

/// The receiving sockets, their addresses and the sender socket. Owned by
/// ``KernelUDPBenchmark/run()``; the two threads only read it.
// @unchecked Sendable: the descriptors and the address array are written
// only in init (before the threads start, which orders the writes before
// every read) and freed in close() after both threads were joined.
final class KernelUDPSockets: @unchecked Sendable {
    let fds: UnsafeMutableBufferPointer<Int32>
    let addresses: UnsafeMutableBufferPointer<sockaddr_in>
    let senderFD: Int32
    let epollFD: Int32
    let receiveBufferBytes: Int

    struct SetupError: Error, CustomStringConvertible {
        let description: String
    }

    init(count: Int) throws {
        raiseDescriptorLimit(to: count + 64)
        fds = .allocate(capacity: count)
        fds.initialize(repeating: -1)
        addresses = .allocate(capacity: count)
        addresses.initialize(repeating: sockaddr_in())
        senderFD = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        epollFD = smp_epoll_create()
        guard senderFD >= 0, epollFD >= 0 else {
            receiveBufferBytes = 0
            close()
            throw SetupError(description: "socket/epoll_create1: \(String(cString: strerror(errno)))")
        }
        for i in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
                            | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 {
                receiveBufferBytes = 0
                close()
                throw SetupError(description: "socket #\(i): \(String(cString: strerror(errno)))")
            }
            fds[i] = fd
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian   // 127.0.0.1
            sa.sin_port = 0                                          // ephemeral
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &sa) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in
                    bind(fd, sp, len) == 0 && getsockname(fd, sp, &len) == 0
                }
            }
            if !ok {
                receiveBufferBytes = 0
                close()
                throw SetupError(description: "bind 127.0.0.1 #\(i): \(String(cString: strerror(errno)))")
            }
            addresses[i] = sa
            if smp_epoll_add_readable(epollFD, fd, UInt32(i)) != 0 {
                receiveBufferBytes = 0
                close()
                throw SetupError(description: "epoll_ctl: \(String(cString: strerror(errno)))")
            }
        }
        var rcvbuf: Int32 = 0
        var optlen = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &rcvbuf, &optlen)
        receiveBufferBytes = Int(rcvbuf)
    }

    /// Closes every descriptor and frees the arrays. Call once, after the
    /// threads were joined.
    func close() {
        for fd in fds where fd >= 0 { _ = Glibc.close(fd) }
        if senderFD >= 0 { _ = Glibc.close(senderFD) }
        if epollFD >= 0 { _ = Glibc.close(epollFD) }
        fds.deallocate()
        addresses.deallocate()
    }
}

/// Raises the soft RLIMIT_NOFILE to at least `n` (up to the hard limit).
private func raiseDescriptorLimit(to n: Int) {
    var rl = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0, rl.rlim_cur < rlim_t(n) else { return }
    rl.rlim_cur = min(rlim_t(n), rl.rlim_max)
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
}

struct KernelUDPSenderResult: Sendable {
    var sent = 0
    var sendErrors = 0
    var sendCalls = 0
    var seconds = 0.0
    var fatalError: String?
}

struct KernelUDPReceiverResult: Sendable {
    var received = 0
    var bad = 0
    var orderErrors = 0
    var overrun = 0
    var epollWaits = 0
    var recvCalls = 0
    var start = 0.0
    var lastReceive = 0.0
    var fatalError: String?
}

/// What the two threads share while running.
final class KernelUDPShared: Sendable {
    /// Datagrams the sender is done with (sent or failed), published with
    /// `senderDone`.
    let sentTotal = Atomic<Int>(0)
    /// Set by the sender when it stops. Released after `sentTotal` so the
    /// receiver, acquiring it, sees the final count.
    let senderDone = Atomic<Bool>(false)
    /// Per-socket counts of datagrams sent, published before `senderDone`
    /// (same release) so the receiver's end-of-run check can read them.
    let sentPerSocket: Mutex<[UInt32]> = Mutex([])
    let sender = Mutex(KernelUDPSenderResult())
    let receiver = Mutex(KernelUDPReceiverResult())
}

private func kernelUDPSend(_ s: KernelUDPSockets, _ c: KernelUDPBenchmark.Configuration,
                           _ shared: KernelUDPShared, _ barrier: SpinBarrier) -> KernelUDPSenderResult {
    let batch = c.batch
    let size = c.payloadBytes
    let nsocks = s.fds.count
    guard let msgs = smp_mmsg_batch_create(UInt32(batch), UInt32(size)) else {
        // Still meet the receiver at the barrier, and let it finish.
        barrier.wait()
        shared.senderDone.store(true, ordering: .releasing)
        return KernelUDPSenderResult(fatalError: "out of memory")
    }
    defer { smp_mmsg_batch_destroy(msgs) }
    var pseq = [UInt32](repeating: 0, count: nsocks)
    for i in 0..<batch {
        smp_mmsg_batch_buffer(msgs, UInt32(i)).initializeMemory(as: UInt8.self, repeating: 0xA5, count: size)
    }
    let addrs = UnsafeMutableRawPointer(s.addresses.baseAddress!)
    var result = KernelUDPSenderResult()
    var g = 0
    var rr = 0
    barrier.wait()
    let t0 = monotonicSeconds()
    sending: while g < c.datagrams {
        let n = min(batch, c.datagrams - g)
        for i in 0..<n {
            let d = rr
            rr = rr + 1 == nsocks ? 0 : rr + 1
            pseq[d] &+= 1
            let p = smp_mmsg_batch_buffer(msgs, UInt32(i))!
            p.storeBytes(of: UInt64(g + 1 + i), toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: UInt32(d), toByteOffset: 8, as: UInt32.self)
            p.storeBytes(of: pseq[d], toByteOffset: 12, as: UInt32.self)
            p.storeBytes(of: KernelUDPPayload.fill, toByteOffset: 16, as: UInt64.self)
            smp_mmsg_batch_set_message(msgs, UInt32(i), UInt32(size), addrs + d * MemoryLayout<sockaddr_in>.stride,
                                       UInt32(MemoryLayout<sockaddr_in>.size))
        }
        var off = 0
        while off < n {
            let r = smp_mmsg_send(s.senderFD, msgs, UInt32(off), UInt32(n - off))
            result.sendCalls += 1
            if r < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == ENOBUFS || e == EAGAIN {
                    // Not sent: count it as sent-and-dropped and move on.
                    result.sendErrors += 1
                    off += 1
                    continue
                }
                result.fatalError = "sendmmsg: " + String(cString: strerror(e))
                g += off
                break sending
            }
            off += Int(r)
        }
        g += n
        if result.sendCalls & 63 == 0 && monotonicSeconds() - t0 > c.capSeconds { break }
    }
    result.seconds = monotonicSeconds() - t0
    result.sent = g
    shared.sentPerSocket.withLock { $0 = pseq }
    shared.sentTotal.store(g, ordering: .relaxed)
    // Releasing: the receiver acquires senderDone and must then see sentTotal.
    shared.senderDone.store(true, ordering: .releasing)
    return result
}

private func kernelUDPReceive(_ s: KernelUDPSockets, _ c: KernelUDPBenchmark.Configuration,
                              _ shared: KernelUDPShared, _ barrier: SpinBarrier) -> KernelUDPReceiverResult {
    let batch = c.batch
    // One byte more than the payload so an over-long datagram is detected.
    let slot = c.payloadBytes + 1
    let nsocks = s.fds.count
    guard let msgs = smp_mmsg_batch_create(UInt32(batch), UInt32(slot)) else {
        barrier.wait()   // the sender then runs into full receive buffers: drops
        return KernelUDPReceiverResult(fatalError: "out of memory")
    }
    let tokens = UnsafeMutablePointer<UInt32>.allocate(capacity: 256)
    let last = UnsafeMutablePointer<UInt32>.allocate(capacity: nsocks)
    last.initialize(repeating: 0, count: nsocks)
    defer {
        smp_mmsg_batch_destroy(msgs)
        tokens.deallocate()
        last.deallocate()
    }
    var r = KernelUDPReceiverResult()
    var quiet = 0
    barrier.wait()
    r.start = monotonicSeconds()
    r.lastReceive = r.start
    // A bound even if the sender hangs: its cap plus a generous grace.
    let deadline = r.start + c.capSeconds + 30
    receiving: while true {
        // Acquiring: pairs with the sender's releasing store, so sentTotal is final.
        let done = shared.senderDone.load(ordering: .acquiring)
        if done && r.received >= shared.sentTotal.load(ordering: .relaxed) { break }
        let ne = smp_epoll_wait_tokens(s.epollFD, tokens, 256, done ? 20 : 200)
        r.epollWaits += 1
        if ne < 0 {
            if errno == EINTR { continue }
            r.fatalError = "epoll_wait: " + String(cString: strerror(errno))
            break
        }
        if ne == 0 {
            // Drained: whatever is still missing was dropped by the kernel.
            if done { quiet += 1; if quiet >= 5 { break } }
            if monotonicSeconds() > deadline { r.fatalError = "receiver timed out"; break }
            continue
        }
        quiet = 0
        for e in 0..<Int(ne) {
            let sock = Int(tokens[e])
            let got = smp_mmsg_receive(s.fds[sock], msgs, UInt32(batch), 1)
            r.recvCalls += 1
            if got <= 0 {
                if got < 0 && errno != EAGAIN && errno != EINTR {
                    r.fatalError = "recvmmsg: " + String(cString: strerror(errno))
                    break receiving
                }
                continue
            }
            for i in 0..<Int(got) {
                let p = UnsafeRawPointer(smp_mmsg_batch_buffer(msgs, UInt32(i))!)
                let dst = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
                let seq = p.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
                let fill = p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
                guard Int(smp_mmsg_batch_received_length(msgs, UInt32(i))) == c.payloadBytes, Int(dst) == sock,
                      fill == KernelUDPPayload.fill else {
                    r.bad += 1
                    continue
                }
                // Strictly increasing per socket: no duplicates, no reordering.
                if seq <= last[sock] { r.orderErrors += 1 }
                last[sock] = seq
            }
            r.received += Int(got)
        }
        r.lastReceive = monotonicSeconds()
        if r.lastReceive > deadline { r.fatalError = "receiver timed out"; break }
    }
    let sentPerSocket = shared.sentPerSocket.withLock { $0 }
    if sentPerSocket.count == nsocks {
        for i in 0..<nsocks where last[i] > sentPerSocket[i] { r.overrun += 1 }
    }
    return r
}

/// The UDP counters of /proc/net/snmp (system-wide).
struct UDPSNMPCounters {
    var inDatagrams = 0, noPorts = 0, inErrors = 0, outDatagrams = 0, rcvbufErrors = 0

    static func read() -> UDPSNMPCounters? {
        guard let f = fopen("/proc/net/snmp", "r") else { return nil }
        defer { fclose(f) }
        var lines: [String] = []
        var buf = [CChar](repeating: 0, count: 2048)
        while fgets(&buf, Int32(buf.count), f) != nil {
            lines.append(buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        // Two "Udp:" lines: the field names, then the values.
        let udp = lines.filter { $0.hasPrefix("Udp:") }
        guard udp.count >= 2 else { return nil }
        let names = udp[0].split(whereSeparator: { $0 == " " || $0 == "\n" }).dropFirst()
        let values = udp[1].split(whereSeparator: { $0 == " " || $0 == "\n" }).dropFirst()
        var table: [Substring: Int] = [:]
        for (k, v) in zip(names, values) { table[k] = Int(v) }
        guard let i = table["InDatagrams"], let np = table["NoPorts"], let ie = table["InErrors"],
              let o = table["OutDatagrams"], let rb = table["RcvbufErrors"] else { return nil }
        return UDPSNMPCounters(inDatagrams: i, noPorts: np, inErrors: ie, outDatagrams: o, rcvbufErrors: rb)
    }
}
