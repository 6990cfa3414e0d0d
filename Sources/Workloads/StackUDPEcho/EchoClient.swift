// stack-udp-echo's client: one thread, N connected kernel UDP sockets, K
// requests in flight on each; every reply checked byte for byte.
import CPacketIO
import Glibc
import SMPPrimitives
import Synchronization

/// A request's bytes (little-endian): socket index (4), slot (4), sequence
/// number of the slot (8), then fill derived from all three, so a reply
/// can be checked against the request it claims to answer without keeping
/// the request.
enum EchoPayload {
    static let headerBytes = 16

    @inline(__always)
    static func fill(_ p: UnsafeMutableRawPointer, length: Int, socket: UInt32, slot: UInt32, sequence: UInt64) {
        p.storeBytes(of: socket.littleEndian, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: slot.littleEndian, toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: sequence.littleEndian, toByteOffset: 8, as: UInt64.self)
        // splitmix64 from the request's identity.
        var x = sequence &* 0x9E37_79B9_7F4A_7C15 ^ (UInt64(socket) << 32 | UInt64(slot))
        var off = headerBytes
        while off < length {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            if off + 8 <= length {
                p.storeBytes(of: z, toByteOffset: off, as: UInt64.self)
                off += 8
            } else {
                while off < length {
                    p.storeBytes(of: UInt8(truncatingIfNeeded: z), toByteOffset: off, as: UInt8.self)
                    z >>= 8
                    off += 1
                }
            }
        }
    }
}

/// The client's load and its timing.
struct EchoClientConfiguration: Sendable {
    var sockets: Int
    var inflight: Int
    var payloadBytes: Int
    /// Seconds of load before the measured window (not counted).
    var warmupSeconds: Double
    /// Length of the measured window.
    var seconds: Double
    /// Stop the measured window after this many replies (nil: by time).
    var requests: Int?
    /// The measured window never lasts longer than this.
    var capSeconds: Double
    /// A request unanswered this long is counted lost and its slot reused.
    var lossTimeoutSeconds = 0.25
    /// After the window: how long to wait for the requests still in flight.
    var drainSeconds = 0.5
}

/// What one client run did.
struct EchoClientResult: Sendable {
    var sent = 0
    var replies = 0
    /// Replies in the measured window, and its length.
    var measuredReplies = 0
    var measuredSeconds = 0.0
    var latency = LatencyHistogram()
    /// Replies whose length or bytes differ from the request they name.
    var corrupt = 0
    /// Replies to a request already answered.
    var duplicates = 0
    /// Replies to a request already counted lost (after the loss timeout).
    var late = 0
    /// Requests counted lost by the timeout (some may come back late).
    var timeouts = 0
    /// Requests still unanswered at the end of the drain.
    var unanswered = 0
    /// sendmmsg refusals (each refused request is then lost).
    var sendErrors = 0
    var epollWaits = 0
    var recvCalls = 0
    var sendCalls = 0
    var cpuAtStart = ProcessCPU()
    var cpuAtEnd = ProcessCPU()
    var fatalError: String?

    /// Requests that never got a reply.
    var lost: Int { timeouts - late + unanswered }
}

/// Runs the client on the calling thread, which must be inside the
/// client's namespace; `target` is the server (IPv4). Returns when the
/// window and the drain are over or `stop` was set.
func runEchoClient(_ c: EchoClientConfiguration, target: sockaddr_in, stop: EchoStopFlag) -> EchoClientResult {
    var r = EchoClientResult()
    let n = c.sockets, k = c.inflight, size = c.payloadBytes
    let recvBatchSize = 64
    let fds = UnsafeMutableBufferPointer<Int32>.allocate(capacity: n)
    fds.initialize(repeating: -1)
    let sequence = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: n * k)
    sequence.initialize(repeating: 0)
    let sentAt = UnsafeMutableBufferPointer<Int>.allocate(capacity: n * k)
    sentAt.initialize(repeating: 0)
    let pending = UnsafeMutableBufferPointer<Bool>.allocate(capacity: n * k)
    pending.initialize(repeating: false)
    let resend = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: k)
    let tokens = UnsafeMutablePointer<UInt32>.allocate(capacity: n)
    let expected = UnsafeMutableRawPointer.allocate(byteCount: size + 16, alignment: 16)
    var sendBatches: [OpaquePointer] = []
    let recvBatch = smp_mmsg_batch_create(UInt32(recvBatchSize), 2048)
    let epollFD = smp_epoll_create()
    defer {
        for fd in fds where fd >= 0 { _ = close(fd) }
        if epollFD >= 0 { _ = close(epollFD) }
        for b in sendBatches { smp_mmsg_batch_destroy(b) }
        smp_mmsg_batch_destroy(recvBatch)
        fds.deallocate(); sequence.deallocate(); sentAt.deallocate(); pending.deallocate()
        resend.deallocate(); tokens.deallocate(); expected.deallocate()
    }
    guard let recvBatch, epollFD >= 0 else {
        r.fatalError = "client setup: out of memory or epoll_create1 failed"
        return r
    }
    for i in 0..<n {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0, let b = smp_mmsg_batch_create(UInt32(k), UInt32(size)) else {
            r.fatalError = "client socket #\(i): \(String(cString: strerror(errno)))"
            if fd >= 0 { _ = close(fd) }
            return r
        }
        fds[i] = fd
        sendBatches.append(b)
        var t = target
        let rc = withUnsafePointer(to: &t) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0, smp_epoll_add_readable(epollFD, fd, UInt32(i)) == 0 else {
            r.fatalError = "client connect/epoll #\(i): \(String(cString: strerror(errno)))"
            return r
        }
    }

    /// Sends new requests for `count` slots of socket `s` (listed in
    /// `resend`), in one sendmmsg (looping over partial sends).
    func send(_ s: Int, _ count: Int, now: Int) {
        let b = sendBatches[s]
        for m in 0..<count {
            let slot = Int(resend[m])
            let i = s * k + slot
            sequence[i] &+= 1
            EchoPayload.fill(smp_mmsg_batch_buffer(b, UInt32(m)), length: size, socket: UInt32(s), slot: UInt32(slot),
                             sequence: sequence[i])
            smp_mmsg_batch_set_message(b, UInt32(m), UInt32(size), nil, 0)
            sentAt[i] = now
            pending[i] = true
        }
        var off = 0
        while off < count {
            let rc = smp_mmsg_send(fds[s], b, UInt32(off), UInt32(count - off))
            r.sendCalls += 1
            if rc < 0 {
                if errno == EINTR { continue }
                // ENOBUFS, EAGAIN, ECONNREFUSED (an ICMP error seen): this
                // request is lost; the timeout accounts for it.
                r.sendErrors += 1
                off += 1
                continue
            }
            off += Int(rc)
        }
        r.sent += count
    }

    let start = monotonicNanoseconds()
    for s in 0..<n {
        for slot in 0..<k { resend[slot] = UInt32(slot) }
        send(s, k, now: start)
    }
    var phase = LoadPhases(start: start, warmupSeconds: c.warmupSeconds, seconds: c.seconds,
                           byCount: c.requests != nil, capSeconds: c.capSeconds, drainSeconds: c.drainSeconds)
    let lossTimeout = Int(c.lossTimeoutSeconds * 1e9)
    var nextScan = start + lossTimeout / 4
    var outstanding = n * k

    loop: while true {
        let now = monotonicNanoseconds()
        let enough = c.requests.map { r.measuredReplies >= $0 } ?? false
        if phase.advance(now: now, enough: enough, stop: stop.isSet, outstanding: outstanding) { break }
        if now >= nextScan {
            nextScan = now + lossTimeout / 4
            for s in 0..<n {
                var m = 0
                for slot in 0..<k where pending[s * k + slot] && now - sentAt[s * k + slot] > lossTimeout {
                    pending[s * k + slot] = false
                    r.timeouts += 1
                    outstanding -= 1
                    resend[m] = UInt32(slot)
                    m += 1
                }
                if m > 0 && !phase.draining {
                    send(s, m, now: now)
                    outstanding += m
                }
            }
        }
        let ready = smp_epoll_wait_tokens(epollFD, tokens, Int32(n), 5)
        r.epollWaits += 1
        if ready < 0 {
            if errno == EINTR { continue }
            r.fatalError = "epoll_wait: " + String(cString: strerror(errno))
            break
        }
        for e in 0..<Int(ready) {
            let s = Int(tokens[e])
            while true {
                let got = smp_mmsg_receive(fds[s], recvBatch, UInt32(recvBatchSize), 1)
                r.recvCalls += 1
                if got <= 0 {
                    if got < 0 && errno != EAGAIN && errno != EINTR && errno != ECONNREFUSED {
                        r.fatalError = "recvmmsg: " + String(cString: strerror(errno))
                        break loop
                    }
                    break
                }
                let t = monotonicNanoseconds()
                var m = 0
                for i in 0..<Int(got) {
                    let p = UnsafeRawPointer(smp_mmsg_batch_buffer(recvBatch, UInt32(i))!)
                    let length = Int(smp_mmsg_batch_received_length(recvBatch, UInt32(i)))
                    r.replies += 1
                    guard length == size else { r.corrupt += 1; continue }
                    let sock = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
                    let slot = Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
                    let seq = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                    guard sock == UInt32(s), slot < k, seq >= 1, seq <= sequence[s * k + slot] else {
                        r.corrupt += 1
                        continue
                    }
                    EchoPayload.fill(expected, length: size, socket: sock, slot: UInt32(slot), sequence: seq)
                    guard memcmp(expected, p, size) == 0 else { r.corrupt += 1; continue }
                    let i = s * k + slot
                    if seq < sequence[i] { r.late += 1; continue }
                    guard pending[i] else { r.duplicates += 1; continue }
                    pending[i] = false
                    outstanding -= 1
                    if phase.measuring {
                        r.measuredReplies += 1
                        r.latency.record(t - sentAt[i])
                    }
                    if !phase.draining {
                        resend[m] = UInt32(slot)
                        m += 1
                    }
                }
                if m > 0 {
                    send(s, m, now: monotonicNanoseconds())
                    outstanding += m
                }
                if Int(got) < recvBatchSize { break }
            }
        }
    }
    r.unanswered = outstanding
    r.measuredSeconds = phase.measuredSeconds
    r.cpuAtStart = phase.cpuAtStart
    r.cpuAtEnd = phase.cpuAtEnd
    return r
}

/// CPU time of this process's threads by role, and of the machine, at one
/// instant (from /proc; clock ticks).
struct ProcessCPU: Sendable {
    /// Ticks of this process's threads, by thread name.
    var threads: [String: Int] = [:]
    /// All CPUs: busy ticks (user, nice, system, irq, softirq, steal) and
    /// softirq ticks alone.
    var machineBusy = 0
    var machineSoftirq = 0
    var time = monotonicSeconds()

    init() {
        if let line = readTextLines("/proc/stat", limit: 1)?.first {
            let v = line.split(separator: " ").dropFirst().compactMap { Int($0.filter { $0 != "\n" }) }
            if v.count >= 8 {
                machineBusy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                machineSoftirq = v[6]
            }
        }
        for tid in directoryEntries("/proc/self/task") {
            guard tid.first?.isNumber == true, let line = readTextLines("/proc/self/task/\(tid)/stat", limit: 1)?.first,
                  let open = line.firstIndex(of: "("), let close = line.lastIndex(of: ")") else { continue }
            let name = String(line[line.index(after: open)..<close])
            let f = line[line.index(after: close)...].split(separator: " ")
            // Fields after the name: state is 0; utime and stime are 11 and 12.
            guard f.count > 12, let u = Int(f[11]), let s = Int(f[12]) else { continue }
            threads[name, default: 0] += u + s
        }
    }

    /// Ticks used since `before` by the threads whose name starts with one
    /// of `prefixes`.
    func ticks(since before: ProcessCPU, prefixes: [String]) -> Int {
        var t = 0
        for (name, v) in threads where prefixes.contains(where: { name.hasPrefix($0) }) {
            t += v - (before.threads[name] ?? 0)
        }
        return t
    }
}
