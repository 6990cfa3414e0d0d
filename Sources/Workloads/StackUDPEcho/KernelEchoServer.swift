// stack-udp-echo's kernel baseline: a Linux UDP echo server (RFC 862) as
// one would write it for speed: epoll, recvmmsg, sendmmsg.
import CPacketIO
import Glibc
import SMPPrimitives
import Synchronization

/// One server thread's counters (single writer: the thread; read relaxed
/// between rounds by the bench).
final class KernelEchoCounters: Sendable {
    let received = Atomic<Int>(0)
    let sent = Atomic<Int>(0)
    let sendErrors = Atomic<Int>(0)
    let epollWaits = Atomic<Int>(0)
    let recvCalls = Atomic<Int>(0)
    let sendCalls = Atomic<Int>(0)

    @inline(__always)
    static func add(_ a: borrowing Atomic<Int>, _ n: Int) { addRelaxed(a, n) }
}

/// Adds `n` to a counter with a single writer (a load and a store, no
/// read-modify-write: nobody else writes it; readers take relaxed
/// snapshots).
@inline(__always)
func addRelaxed(_ a: borrowing Atomic<Int>, _ n: Int) {
    a.store(a.load(ordering: .relaxed) &+ n, ordering: .relaxed)
}

/// `count` non-blocking IPv4 sockets of `type` made in namespace `ns`,
/// each bound with SO_REUSEPORT to `address`:`port` (the kernel spreads
/// datagrams or connections over them by the 4-tuple's hash) and, for
/// SOCK_STREAM, listening. All closed again if one fails.
func reusePortSockets(in ns: BenchNamespace, type: Int32, address: String, port: UInt16,
                      count: Int) throws -> [Int32] {
    try ns.inside { () throws -> [Int32] in
        var fds: [Int32] = []
        do {
            for _ in 0..<count {
                let fd = socket(AF_INET, type | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                guard fd >= 0 else { throw EchoSetupError(description: "server socket: \(String(cString: strerror(errno)))") }
                fds.append(fd)
                var one: Int32 = 1
                setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
                // A listener: bind past the last window's TIME-WAIT connections.
                if type == Int32(SOCK_STREAM.rawValue) {
                    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
                }
                var sa = ipv4SocketAddress(address, port: port)
                let rc = withUnsafePointer(to: &sa) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                guard rc == 0, type != Int32(SOCK_STREAM.rawValue) || listen(fd, 1024) == 0 else {
                    throw EchoSetupError(description: "server bind \(address):\(port): \(String(cString: strerror(errno)))")
                }
            }
        } catch {
            for fd in fds { _ = close(fd) }
            throw error
        }
        return fds
    }
}

/// An IPv4 socket address.
func ipv4SocketAddress(_ address: String, port: UInt16) -> sockaddr_in {
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    _ = inet_pton(AF_INET, address, &sa.sin_addr)
    return sa
}

/// A sum of the server threads' counters (of a server started for one
/// window: its whole life).
struct KernelEchoSnapshot: Sendable {
    var received = 0, sent = 0, sendErrors = 0, epollWaits = 0, recvCalls = 0, sendCalls = 0

}

/// The kernel echo server: `threads` threads, each with its own socket
/// bound (SO_REUSEPORT) to the server address in the server's namespace
/// and its own level-triggered epoll set; a thread waits in `epoll_wait`,
/// then reads with `recvmmsg(64, MSG_DONTWAIT)` until the socket is empty
/// and sends each batch back with `sendmmsg` to the sources it came from.
/// As many threads as the stack has cores, so both servers get the same
/// number of threads of their own.
///
/// Concurrency: start and ``stop()`` from one thread (the bench's);
/// ``snapshot()`` from any thread.
final class KernelEchoServer: Sendable {
    static let batch = 64
    private let fds: [Int32]
    private let counters: [KernelEchoCounters]
    private let threads: Mutex<[PinnedThread<Void>]>
    private let stopFlag = EchoStopFlag()

    /// `pinned`: thread k on CPU k, as the stack's executor k.
    init(in ns: BenchNamespace, address: String, port: UInt16, threads count: Int, payloadBytes: Int,
         pinned: Bool) throws {
        let fds = try reusePortSockets(in: ns, type: Int32(SOCK_DGRAM.rawValue), address: address, port: port,
                                       count: count)
        self.fds = fds
        let counters = fds.map { _ in KernelEchoCounters() }
        self.counters = counters
        let stop = stopFlag
        threads = Mutex(fds.enumerated().map { k, fd in
            let c = counters[k]
            return PinnedThread(cpu: pinned ? k : nil, name: "echo-kserver-\(k)") { Self.serve(fd, c, stop, payloadBytes: payloadBytes) }
        })
    }

    private static func serve(_ fd: Int32, _ c: KernelEchoCounters, _ stop: EchoStopFlag, payloadBytes: Int) {
        let ep = smp_epoll_create()
        guard ep >= 0, smp_epoll_add_readable(ep, fd, 0) == 0,
              let msgs = smp_mmsg_batch_create(UInt32(Self.batch), UInt32(max(payloadBytes, 2048))) else { return }
        defer {
            smp_mmsg_batch_destroy(msgs)
            _ = close(ep)
        }
        var token: UInt32 = 0
        while !stop.isSet {
            let n = smp_epoll_wait_tokens(ep, &token, 1, 100)
            KernelEchoCounters.add(c.epollWaits, 1)
            if n <= 0 { continue }
            while true {
                let got = smp_mmsg_receive_from(fd, msgs, UInt32(Self.batch))
                KernelEchoCounters.add(c.recvCalls, 1)
                if got <= 0 { break }
                KernelEchoCounters.add(c.received, Int(got))
                var off = 0
                while off < Int(got) {
                    let r = smp_mmsg_reply(fd, msgs, UInt32(off), UInt32(Int(got) - off))
                    KernelEchoCounters.add(c.sendCalls, 1)
                    if r < 0 {
                        if errno == EINTR { continue }
                        KernelEchoCounters.add(c.sendErrors, 1)
                        off += 1
                        continue
                    }
                    KernelEchoCounters.add(c.sent, Int(r))
                    off += Int(r)
                }
                if Int(got) < Self.batch { break }
            }
        }
    }

    func snapshot() -> KernelEchoSnapshot {
        var s = KernelEchoSnapshot()
        for c in counters {
            s.received += c.received.load(ordering: .relaxed)
            s.sent += c.sent.load(ordering: .relaxed)
            s.sendErrors += c.sendErrors.load(ordering: .relaxed)
            s.epollWaits += c.epollWaits.load(ordering: .relaxed)
            s.recvCalls += c.recvCalls.load(ordering: .relaxed)
            s.sendCalls += c.sendCalls.load(ordering: .relaxed)
        }
        return s
    }

    /// Stops the threads (within one 100 ms epoll timeout) and closes the
    /// sockets. Idempotent.
    func stop() {
        stopFlag.set()
        let ts = threads.withLock { t in defer { t = [] }; return t }
        for t in ts { t.join() }
        if !ts.isEmpty { for fd in fds { _ = close(fd) } }
    }

    deinit { stop() }
}

/// A stop request for ``StackUDPEchoBenchmark/run(stop:report:)`` (a
/// signal handler thread sets it on SIGINT) and its own threads.
///
/// Concurrency: any thread. Set once, polled with relaxed loads: a setter
/// needs nothing ordered before the flag but the flag itself (results come
/// back by joining the threads, which orders everything they did).
public final class EchoStopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    /// Whether a stop was requested.
    public var isSet: Bool { flag.load(ordering: .relaxed) }
    /// Requests a stop.
    public func set() { flag.store(true, ordering: .relaxed) }
}
