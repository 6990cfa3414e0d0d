// The kernel baseline of stack-http and stack-tcp-stream: the project's
// HTTP service (HTTPConnection, the same code the stack's server runs, so
// both send the same bytes) on Linux TCP sockets, as one would write it
// for speed: one epoll thread per core, each with its own SO_REUSEPORT
// listener, edge-triggered connections, writes coalesced per run.
import CPacketIO
import Glibc
import SMPPrimitives
import Synchronization

/// IPPROTO_TCP's TCP_NODELAY (netinet/tcp.h, which the Glibc module does
/// not import).
let tcpNoDelayOption: Int32 = 1

/// One server thread's counters (single writer: the thread; read relaxed
/// after the thread was joined, or as a racy snapshot).
final class KernelHTTPCounters: Sendable {
    let accepted = Atomic<Int>(0)
    let closed = Atomic<Int>(0)
    let responses = Atomic<Int>(0)
    let epollWaits = Atomic<Int>(0)
    let events = Atomic<Int>(0)
    let recvCalls = Atomic<Int>(0)
    let sendCalls = Atomic<Int>(0)
    /// Sends that found the socket's send buffer full (EAGAIN).
    let sendBlocked = Atomic<Int>(0)
    /// Connections ended by an error (a reset) rather than a FIN.
    let errors = Atomic<Int>(0)

    @inline(__always)
    static func add(_ a: borrowing Atomic<Int>, _ n: Int) { addRelaxed(a, n) }
}

/// A sum of the server threads' counters.
struct KernelHTTPSnapshot: Sendable {
    var accepted = 0, closed = 0, responses = 0, epollWaits = 0, events = 0, recvCalls = 0, sendCalls = 0
    var sendBlocked = 0, errors = 0
}

/// One connection of a kernel server thread: the socket, its
/// ``HTTPConnection`` and a staging buffer that coalesces the small writes
/// of one run (a response head and a short page) into one `send`, as the
/// stack's connection puts them in one segment (it sends at the end of
/// its handler's run). Bodies of a staging buffer's size or more go to
/// the socket directly.
///
/// Concurrency: owned by its server thread.
private final class KernelHTTPConnectionState {
    static let stagingCapacity = 4096
    let fd: Int32
    let http = HTTPConnection()
    let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: stagingCapacity, alignment: 16)
    var staged = 0
    /// The peer's stream ended (FIN or an error).
    var peerFinished = false
    /// An error (ECONNRESET, EPIPE): close now.
    var failed = false
    /// ``HTTPConnection`` asked for the write side to be shut down; done
    /// once the staging buffer is empty.
    var shutdownPending = false
    var writeShut = false
    var responsesSeen = 0

    init(fd: Int32) { self.fd = fd }

    deinit { staging.deallocate() }
}

/// The connection as an ``HTTPConnectionIO`` during one run.
private struct KernelSocketIO: HTTPConnectionIO {
    let state: KernelHTTPConnectionState
    let counters: KernelHTTPCounters

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        if state.failed { return nil }
        while true {
            let n = recv(state.fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
            KernelHTTPCounters.add(counters.recvCalls, 1)
            if n > 0 { return n }
            if n == 0 {
                state.peerFinished = true
                return nil
            }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return 0 }
            state.failed = true
            state.peerFinished = true
            return nil
        }
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Int {
        let s = state
        if s.failed { return 0 }
        if s.staged + bytes.count <= KernelHTTPConnectionState.stagingCapacity {
            (s.staging.baseAddress! + s.staged).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            s.staged += bytes.count
            return bytes.count
        }
        guard flush() else { return 0 }
        if bytes.count < KernelHTTPConnectionState.stagingCapacity { return write(bytes) }
        return send(bytes)
    }

    /// Sends the staging buffer; true when it is empty.
    @discardableResult
    mutating func flush() -> Bool {
        let s = state
        while s.staged > 0 {
            let n = send(UnsafeRawBufferPointer(rebasing: s.staging[0..<s.staged]))
            if n == 0 { return false }
            if n < s.staged {
                s.staging.baseAddress!.copyMemory(from: s.staging.baseAddress! + n, byteCount: s.staged - n)
            }
            s.staged -= n
        }
        return true
    }

    /// One `send(MSG_DONTWAIT)`: bytes taken, 0 when the buffer is full or
    /// the connection failed.
    private mutating func send(_ bytes: UnsafeRawBufferPointer) -> Int {
        while true {
            let n = Glibc.send(state.fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
            KernelHTTPCounters.add(counters.sendCalls, 1)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK {
                KernelHTTPCounters.add(counters.sendBlocked, 1)
                return 0
            }
            state.failed = true
            return 0
        }
    }
}

/// The kernel HTTP server: `threads` threads, each with its own listening
/// socket bound (SO_REUSEPORT, so the kernel spreads the connections over
/// them by their 4-tuple hash) to the server address in the server's
/// namespace and its own epoll set: the listener level-triggered, each
/// accepted connection (TCP_NODELAY, as the stack's connections have Nagle
/// off) edge-triggered for input, output and the peer's shutdown. Every
/// event runs the connection's ``HTTPConnection`` until it waits
/// (EAGAIN), then sends what the run staged. As many threads as the stack
/// has cores.
///
/// Concurrency: init and ``stop()`` from one thread (the bench's);
/// ``snapshot()`` from any thread.
final class KernelHTTPServer: Sendable {
    private let listeners: [Int32]
    private let counters: [KernelHTTPCounters]
    private let threads: Mutex<[PinnedThread<Void>]>
    private let stopFlag = EchoStopFlag()

    /// `pinned`: thread k on CPU k, as the stack's executor k.
    init(in ns: BenchNamespace, address: String, port: UInt16, threads count: Int, pinned: Bool) throws {
        let listeners = try reusePortSockets(in: ns, type: Int32(SOCK_STREAM.rawValue), address: address, port: port,
                                             count: count)
        self.listeners = listeners
        let counters = listeners.map { _ in KernelHTTPCounters() }
        self.counters = counters
        let stop = stopFlag
        threads = Mutex(listeners.enumerated().map { k, fd in
            let c = counters[k]
            return PinnedThread(cpu: pinned ? k : nil, name: "http-kserver-\(k)") { Self.serve(listener: fd, c, stop) }
        })
    }

    private static let listenerToken = UInt32.max

    private static func serve(listener: Int32, _ c: KernelHTTPCounters, _ stop: EchoStopFlag) {
        let ep = smp_epoll_create()
        guard ep >= 0, smp_epoll_add_readable(ep, listener, listenerToken) == 0 else { return }
        var connections: [KernelHTTPConnectionState?] = []
        var free: [Int] = []
        let tokens = UnsafeMutablePointer<UInt32>.allocate(capacity: 64)
        defer {
            tokens.deallocate()
            for case let s? in connections { _ = close(s.fd) }
            _ = close(ep)
        }

        func finish(_ slot: Int) {
            guard let s = connections[slot] else { return }
            _ = close(s.fd)
            KernelHTTPCounters.add(c.closed, 1)
            if s.failed { KernelHTTPCounters.add(c.errors, 1) }
            connections[slot] = nil
            free.append(slot)
        }

        while !stop.isSet {
            let n = smp_epoll_wait_tokens(ep, tokens, 64, 100)
            KernelHTTPCounters.add(c.epollWaits, 1)
            if n <= 0 { continue }
            KernelHTTPCounters.add(c.events, Int(n))
            for e in 0..<Int(n) {
                let token = tokens[e]
                if token == listenerToken {
                    while true {
                        let fd = accept(listener, nil, nil)
                        if fd < 0 { break }
                        var one: Int32 = 1
                        setsockopt(fd, Int32(IPPROTO_TCP), tcpNoDelayOption, &one, socklen_t(MemoryLayout<Int32>.size))
                        let slot = free.popLast() ?? { connections.append(nil); return connections.count - 1 }()
                        connections[slot] = KernelHTTPConnectionState(fd: fd)
                        KernelHTTPCounters.add(c.accepted, 1)
                        if smp_epoll_add_stream(ep, fd, UInt32(slot)) != 0 { finish(slot) }
                    }
                    continue
                }
                let slot = Int(token)
                guard slot < connections.count, let s = connections[slot] else { continue }
                var io = KernelSocketIO(state: s, counters: c)
                // What an earlier run staged and could not send first: the
                // connection's bytes stay in order.
                if io.flush() && !s.writeShut {
                    if s.shutdownPending {
                        shutdown(s.fd, Int32(SHUT_WR))
                        s.writeShut = true
                    } else if s.http.run(&io) == .shutdownWrite {
                        s.shutdownPending = true
                    }
                    if io.flush() && s.shutdownPending && !s.writeShut {
                        shutdown(s.fd, Int32(SHUT_WR))
                        s.writeShut = true
                    }
                } else if s.writeShut {
                    // Input after our FIN: read and drop it (the peer's FIN follows).
                    _ = s.http.run(&io)
                }
                let answered = s.http.responses - s.responsesSeen
                if answered > 0 {
                    KernelHTTPCounters.add(c.responses, answered)
                    s.responsesSeen = s.http.responses
                }
                if s.failed || (s.writeShut && s.peerFinished) { finish(slot) }
            }
        }
    }

    func snapshot() -> KernelHTTPSnapshot {
        var s = KernelHTTPSnapshot()
        for c in counters {
            s.accepted += c.accepted.load(ordering: .relaxed)
            s.closed += c.closed.load(ordering: .relaxed)
            s.responses += c.responses.load(ordering: .relaxed)
            s.epollWaits += c.epollWaits.load(ordering: .relaxed)
            s.events += c.events.load(ordering: .relaxed)
            s.recvCalls += c.recvCalls.load(ordering: .relaxed)
            s.sendCalls += c.sendCalls.load(ordering: .relaxed)
            s.sendBlocked += c.sendBlocked.load(ordering: .relaxed)
            s.errors += c.errors.load(ordering: .relaxed)
        }
        return s
    }

    /// Stops the threads (within one 100 ms epoll timeout), closing their
    /// connections, and closes the listeners. Idempotent.
    func stop() {
        stopFlag.set()
        let ts = threads.withLock { t in defer { t = [] }; return t }
        for t in ts { t.join() }
        if !ts.isEmpty { for fd in listeners { _ = close(fd) } }
    }

    deinit { stop() }
}
