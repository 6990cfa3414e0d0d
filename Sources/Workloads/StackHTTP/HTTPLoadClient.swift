// The load of stack-http and stack-tcp-stream when wrk is not used: the
// project's own HTTP/1.1 client on kernel sockets. Keep-alive connections,
// one request outstanding on each, over epoll on a few threads; every
// response checked byte for byte (head and body against the service's).
import CPacketIO
import Glibc
import SMPPrimitives
import Synchronization

/// What the client asks for and how long.
struct HTTPLoadConfiguration: Sendable {
    /// Keep-alive connections, spread round-robin over the threads.
    var connections: Int
    /// Client threads, each with its own epoll set.
    var threads: Int
    /// The request target: `/` (the page) or `/bytes/N`.
    var route: HTTPRoute
    var warmupSeconds: Double
    var seconds: Double
    /// End the window after this many responses (nil: by time).
    var requests: Int?
    var capSeconds: Double
    /// After the window: how long to wait for the responses in flight
    /// (0: close at once, abandoning them; a bulk body may take long).
    var drainSeconds: Double
    /// CPU of every client thread (nil: unpinned).
    var cpu: Int?
}

/// What one client run did (all threads).
struct HTTPLoadResult: Sendable {
    var sent = 0
    var responses = 0
    /// Responses completed in the measured window, and its length.
    var measuredResponses = 0
    var measuredSeconds = 0.0
    /// Response bytes (head and body) received in the window.
    var measuredBytes = 0
    /// Body bytes received in the window (what a bulk transfer counts).
    var measuredBodyBytes = 0
    var latency = LatencyHistogram()
    /// Responses whose status, Content-Length or body differ from the
    /// service's (or a head that does not parse).
    var mismatches = 0
    /// Requests still unanswered when the client stopped (abandoned after
    /// the drain).
    var unanswered = 0
    /// Connections that failed (connect refused, reset, an early FIN),
    /// and the requests they had in flight.
    var connectionErrors = 0
    var abandoned = 0
    var epollWaits = 0
    var recvCalls = 0
    var sendCalls = 0
    var cpuAtStart = ProcessCPU()
    var cpuAtEnd = ProcessCPU()
    var fatalError: String?

    mutating func merge(_ o: HTTPLoadResult) {
        sent += o.sent
        responses += o.responses
        measuredResponses += o.measuredResponses
        measuredBytes += o.measuredBytes
        measuredBodyBytes += o.measuredBodyBytes
        latency.merge(o.latency)
        mismatches += o.mismatches
        unanswered += o.unanswered
        connectionErrors += o.connectionErrors
        abandoned += o.abandoned
        epollWaits += o.epollWaits
        recvCalls += o.recvCalls
        sendCalls += o.sendCalls
        if fatalError == nil { fatalError = o.fatalError }
    }
}

/// One client connection's progress through its current response.
private struct ClientConnection {
    var fd: Int32 = -1
    var sentAt = 0
    var inFlight = false
    /// Bytes of the head received so far.
    var headLength = 0
    var inBody = false
    var bodyOffset = 0
    var bodyLength = 0
    var dead = false
}

/// Connects `configuration.connections` kernel sockets to `target` on the
/// calling thread (which must be inside the client's namespace), runs the
/// load on `configuration.threads` threads (this one among them) and
/// returns what they did. The sockets are closed before it returns (each
/// by the thread that ran it).
func runHTTPLoad(_ c: HTTPLoadConfiguration, target: sockaddr_in, host: String,
                 stop: EchoStopFlag) -> HTTPLoadResult {
    var fds: [Int32] = []
    var result = HTTPLoadResult()
    for i in 0..<c.connections {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            result.fatalError = "client socket #\(i): \(String(cString: strerror(errno)))"
            break
        }
        fds.append(fd)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), tcpNoDelayOption, &one, socklen_t(MemoryLayout<Int32>.size))
        // A blocking connect (the handshake before the warm-up); every call
        // after it passes MSG_DONTWAIT.
        var t = target
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &t) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            result.fatalError = "client connect #\(i): \(String(cString: strerror(errno)))"
            break
        }
    }
    if result.fatalError != nil {
        for fd in fds { _ = close(fd) }
        return result
    }

    let request = Array("GET \(routeTarget(c.route)) HTTP/1.1\r\nHost: \(host)\r\n\r\n".utf8)
    let threads = min(c.threads, c.connections)
    let start = monotonicNanoseconds()
    let shared = HTTPLoadWindow(requests: c.requests)
    var workers: [PinnedThread<HTTPLoadResult>] = []
    for k in 1..<threads {
        let mine = stride(from: k, to: fds.count, by: threads).map { fds[$0] }
        workers.append(PinnedThread(cpu: c.cpu, name: "http-client-\(k)") {
            runHTTPLoadThread(c, fds: mine, request: request, start: start, window: shared, stop: stop)
        })
    }
    let mine = stride(from: 0, to: fds.count, by: threads).map { fds[$0] }
    result = runHTTPLoadThread(c, fds: mine, request: request, start: start, window: shared, stop: stop)
    for w in workers { result.merge(w.join()) }
    return result
}

/// The request target of `route`.
func routeTarget(_ route: HTTPRoute) -> String {
    switch route {
    case .page: return "/"
    case .bytes(let n): return "/bytes/\(n)"
    case .notFound: return "/missing"
    }
}

/// What the client threads share: the responses of the window so far
/// (for `--n`), and the window's end once one thread decided it.
private final class HTTPLoadWindow: Sendable {
    let requests: Int?
    let measured = Atomic<Int>(0)
    init(requests: Int?) { self.requests = requests }
}

private func runHTTPLoadThread(_ c: HTTPLoadConfiguration, fds: [Int32], request: [UInt8], start: Int,
                               window: HTTPLoadWindow, stop: EchoStopFlag) -> HTTPLoadResult {
    var r = HTTPLoadResult()
    let n = fds.count
    let isBytes: Bool
    if case .bytes = c.route { isBytes = true } else { isBytes = false }
    let bufferSize = 256 * 1024
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 64)
    // The response head the service sends for the route (keep-alive).
    let headStorage = UnsafeMutableRawBufferPointer.allocate(byteCount: HTTPService.maximumHeadLength, alignment: 16)
    let service = HTTPService.response(to: c.route)
    let expectedHead = UnsafeRawBufferPointer(rebasing: headStorage[0..<HTTPService.writeHead(
        status: service.status, contentLength: service.length, contentType: service.type, keepAlive: true,
        into: headStorage)])
    let tokens = UnsafeMutablePointer<UInt32>.allocate(capacity: max(n, 1))
    var conns = [ClientConnection](repeating: ClientConnection(), count: n)
    for i in 0..<n { conns[i].fd = fds[i] }
    let epollFD = smp_epoll_create()
    defer {
        for c in conns where c.fd >= 0 { _ = close(c.fd) }
        buffer.deallocate()
        headStorage.deallocate()
        tokens.deallocate()
        if epollFD >= 0 { _ = close(epollFD) }
    }
    guard epollFD >= 0 else {
        r.fatalError = "epoll_create1: " + String(cString: strerror(errno))
        return r
    }
    for i in 0..<n {
        guard smp_epoll_add_readable(epollFD, fds[i], UInt32(i)) == 0 else {
            r.fatalError = "epoll_ctl: " + String(cString: strerror(errno))
            return r
        }
    }

    var phase = LoadPhases(start: start, warmupSeconds: c.warmupSeconds, seconds: c.seconds,
                           byCount: c.requests != nil, capSeconds: c.capSeconds, drainSeconds: c.drainSeconds)
    var outstanding = 0

    /// Connection `i` failed: closed (which takes it out of the epoll set),
    /// its request abandoned.
    func fail(_ i: Int) {
        guard !conns[i].dead else { return }
        conns[i].dead = true
        _ = close(conns[i].fd)
        conns[i].fd = -1
        r.connectionErrors += 1
        if conns[i].inFlight {
            conns[i].inFlight = false
            outstanding -= 1
            r.abandoned += 1
        }
    }

    func send(_ i: Int, now: Int) {
        let rc = request.withUnsafeBytes {
            Glibc.send(conns[i].fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
        }
        r.sendCalls += 1
        // One small request into an idle connection's empty send buffer:
        // anything short of all of it is a failure.
        guard rc == request.count else { return fail(i) }
        conns[i].sentAt = now
        conns[i].inFlight = true
        conns[i].headLength = 0
        conns[i].inBody = false
        r.sent += 1
        outstanding += 1
    }

    /// Checks `bytes` as the body of connection `i` from its offset.
    func checkBody(_ i: Int, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var checked = 0
        while checked < bytes.count {
            let offset = conns[i].bodyOffset + checked
            let run: Int
            let same: Bool
            if isBytes {
                run = min(bytes.count - checked, HTTPBodyPattern.maximumRun)
                same = memcmp(bytes.baseAddress! + checked, HTTPBodyPattern.bytes(from: offset, count: run).baseAddress!, run) == 0
            } else {
                run = bytes.count - checked
                same = HTTPService.page.withUnsafeBytes { memcmp(bytes.baseAddress! + checked, $0.baseAddress! + offset, run) == 0 }
            }
            guard same else { return false }
            checked += run
        }
        return true
    }

    /// Consumes `got` bytes read from connection `i`.
    func consume(_ i: Int, _ got: Int, now: Int) {
        var p = 0
        if phase.measuring { r.measuredBytes += got }
        while p < got && !conns[i].dead {
            guard conns[i].inFlight else {
                // Bytes nobody asked for.
                r.mismatches += 1
                return fail(i)
            }
            if !conns[i].inBody {
                // The head, compared byte for byte with the service's
                // (status line, fields, Content-Length: one rendering).
                let h = conns[i].headLength
                let take = min(got - p, expectedHead.count - h)
                guard memcmp(buffer.baseAddress! + p, expectedHead.baseAddress! + h, take) == 0 else {
                    r.mismatches += 1
                    return fail(i)
                }
                conns[i].headLength = h + take
                p += take
                guard conns[i].headLength == expectedHead.count else { return }
                conns[i].inBody = true
                conns[i].bodyOffset = 0
                conns[i].bodyLength = service.length
            }
            let take = min(got - p, conns[i].bodyLength - conns[i].bodyOffset)
            if take > 0 {
                guard checkBody(i, UnsafeRawBufferPointer(rebasing: buffer[p..<(p + take)])) else {
                    r.mismatches += 1
                    return fail(i)
                }
                conns[i].bodyOffset += take
                p += take
                if phase.measuring { r.measuredBodyBytes += take }
            }
            if conns[i].bodyOffset == conns[i].bodyLength {
                // The response is complete.
                conns[i].inFlight = false
                outstanding -= 1
                r.responses += 1
                if phase.measuring {
                    r.measuredResponses += 1
                    _ = window.measured.add(1, ordering: .relaxed)
                    r.latency.record(now - conns[i].sentAt)
                }
                if !phase.draining { send(i, now: monotonicNanoseconds()) }
            }
        }
    }

    let first = monotonicNanoseconds()
    for i in 0..<n { send(i, now: first) }
    loop: while true {
        let now = monotonicNanoseconds()
        let enough = window.requests.map { window.measured.load(ordering: .relaxed) >= $0 } ?? false
        if phase.advance(now: now, enough: enough, stop: stop.isSet, outstanding: outstanding) { break }
        let ready = smp_epoll_wait_tokens(epollFD, tokens, Int32(n), 5)
        r.epollWaits += 1
        if ready < 0 {
            if errno == EINTR { continue }
            r.fatalError = "epoll_wait: " + String(cString: strerror(errno))
            break
        }
        for e in 0..<Int(ready) {
            let i = Int(tokens[e])
            guard !conns[i].dead else { continue }
            // One read per event (level-triggered: more comes back next
            // wait), so that one bulk connection cannot starve the others.
            let got = recv(conns[i].fd, buffer.baseAddress, bufferSize, Int32(MSG_DONTWAIT))
            r.recvCalls += 1
            if got > 0 {
                consume(i, got, now: monotonicNanoseconds())
            } else if got == 0 || (errno != EAGAIN && errno != EINTR) {
                // The server closed or reset a keep-alive connection.
                fail(i)
            }
            if case .some = r.fatalError { break loop }
        }
    }
    r.unanswered = outstanding
    r.measuredSeconds = phase.measuredSeconds
    r.cpuAtStart = phase.cpuAtStart
    r.cpuAtEnd = phase.cpuAtEnd
    return r
}
