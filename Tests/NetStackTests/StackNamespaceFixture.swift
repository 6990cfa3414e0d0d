import Glibc
import PacketIO
import SMPPrimitives
import Synchronization
import Testing
import TestSupport
@testable import NetStack

// The namespace fixture of the stack's tests against the real kernel
// (StackNamespaceTests, StackTCPActiveOpenTests): a multi-queue TUN device
// in a network namespace of its own; the kernel side is 198.18.0.1/24 and
// fd00:18::1/64, the stack answers as 198.18.0.2 and fd00:18::2. Kernel
// sockets are made inside the namespace. Every wait has a deadline.

/// The namespace's addresses (the test files alias them privately: other
/// suites name their own `stackV4`).
enum NamespaceAddress {
    static let kernelV4 = "198.18.0.1", stackV4 = "198.18.0.2"
    static let kernelV6 = "fd00:18::1", stackV6 = "fd00:18::2"
}

/// A namespace with a multi-queue TUN device configured on the kernel side
/// and a stack with a UDP echo service on port 7 on it.
final class StackFixture: Sendable {
    let ns: TestNetworkNamespace
    let tun: TUNDevice
    let stack: EndpointStack
    let echo: UDPSocket
    /// TCP echo on port 7 and, on port 9, a server that closes first (its
    /// connections go through TIME-WAIT), when `tcp` is given.
    let tcpListeners: [TCPListenerSocket]

    init(queues: Int = 2,
         reassembly: ReassemblyConfiguration = ReassemblyConfiguration(maxQueues: 64, maxFragments: 1024),
         tcp: TCPConfiguration? = nil) throws {
        ns = try TestNetworkNamespace()
        let name = "fdstack0"
        tun = try ns.inside { () throws -> TUNDevice in try TUNDevice(name: name, mode: .multiQueue(queues)) }
        try ns.ip("addr", "add", "\(NamespaceAddress.kernelV4)/24", "dev", name)
        try ns.ip("-6", "addr", "add", "\(NamespaceAddress.kernelV6)/64", "dev", name, "nodad")
        try ns.ip("link", "set", name, "up")
        // Ping sockets (SOCK_DGRAM + IPPROTO_ICMP) for root, as the test
        // uses them instead of a ping binary.
        try ns.sysctl("net.ipv4.ping_group_range=0 2147483647")
        stack = try EndpointStack.start(on: tun, configuration: .init(
            addresses: [IPAddress(NamespaceAddress.stackV4)!, IPAddress(NamespaceAddress.stackV6)!], cores: queues,
            spinPasses: 50,   // the test machine is shared: park soon when idle
            reassembly: reassembly))
        // The echo service, as a user writes it: an IPv6 dual-stack socket
        // on the executor form of the API.
        echo = stack.makeUDPSocket(.ipv6) { s in
            while s.tryReceive({ d in try? s.send(d.payload, to: d.peer) }) != nil {}
        }
        try echo.bind(port: 7)
        if let tcp {
            // Echo as a user writes it: what fits the send buffer, FIN
            // once the peer finished and everything went back.
            let echo = try stack.makeTCPListener(.ipv6, port: 7, configuration: tcp) { s in
                withUnsafeTemporaryAllocation(byteCount: 16 * 1024, alignment: 16) { buffer in
                    while case let n = min(s.readableBytes, s.writableBytes, buffer.count), n > 0 {
                        let got = s.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
                        _ = s.write(UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
                    }
                }
                if s.atEndOfFile && s.state == .closeWait { s.shutdownWrite() }
            }
            // Closes first: a greeting and a FIN, whatever the peer sends
            // is read and dropped.
            let closer = try stack.makeTCPListener(.ipv6, port: 9, configuration: tcp) { s in
                if s.writableBytes > 0 && s.state == .established {
                    _ = Array("bye\n".utf8).withUnsafeBytes { s.write($0) }
                    s.shutdownWrite()
                }
                withUnsafeTemporaryAllocation(byteCount: 4096, alignment: 16) { buffer in
                    while s.read(into: buffer) > 0 {}
                }
            }
            tcpListeners = [echo, closer]
        } else {
            tcpListeners = []
        }
    }

    func tearDown() {
        for l in tcpListeners { l.close() }
        echo.close()
        stack.shutdown()
        tun.close()
        ns.destroy()
    }
}

/// A kernel socket address for `address`:`port` (IPv4 or IPv6).
func sockaddrBytes(_ address: String, _ port: UInt16) -> [UInt8] {
    if address.contains(":") {
        var sa = sockaddr_in6()
        sa.sin6_family = sa_family_t(AF_INET6)
        sa.sin6_port = port.bigEndian
        _ = inet_pton(AF_INET6, address, &sa.sin6_addr)
        return withUnsafeBytes(of: &sa) { Array($0) }
    }
    var sa = ipv4Address(address, port: port)
    return withUnsafeBytes(of: &sa) { Array($0) }
}

/// A connected kernel socket (inside the namespace), with a receive
/// timeout so that no test waits forever.
func kernelSocket(type: Int32, proto: Int32 = 0, to address: String, port: UInt16,
                          timeout: Int = 2) throws -> TestSocket {
    let family = address.contains(":") ? AF_INET6 : AF_INET
    let fd = socket(family, type, proto)
    guard fd >= 0 else { throw TUNError(operation: "socket", code: errno) }
    let s = TestSocket(fd: fd)
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    // A blocking TCP connect waits at most this long too.
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let sa = sockaddrBytes(address, port)
    let rc = sa.withUnsafeBytes { connect(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count)) }
    guard rc == 0 else { throw TUNError(operation: "connect", code: errno) }
    return s
}

/// A pseudo-random block whose period (65,521 bytes, a prime) lines up
/// with no segment size; stored twice so that any run of up to one period
/// from any offset is contiguous.
let tcpPattern: [UInt8] = {
    var x: UInt64 = 0x9E37_79B9_7F4A_7C15
    let period = (0..<65_521).map { _ -> UInt8 in
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        return UInt8(truncatingIfNeeded: x)
    }
    return period + period
}()

/// A kernel TCP client: connects to `server`:`port`, sends `total` bytes
/// of the pattern, half-closes, and reads until end-of-file, comparing
/// every byte back with what was sent (nil: all identical; else what went
/// wrong). Non-blocking, every wait under `seconds`.
func tcpEchoClient(to server: String, port: UInt16, total: Int, seconds: Double) -> String? {
    let s: TestSocket
    do {
        s = try kernelSocket(type: Int32(SOCK_STREAM.rawValue), to: server, port: port)
    } catch {
        return "connect: \(error)"
    }
    _ = fcntl(s.fd, F_SETFL, fcntl(s.fd, F_GETFL) | O_NONBLOCK)
    let period = 65_521
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    var sent = 0, received = 0, finSent = false
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    return tcpPattern.withUnsafeBytes { pattern -> String? in
        while true {
            if ContinuousClock.now > deadline { return "deadline: sent \(sent), received \(received) of \(total)" }
            var pfd = pollfd(fd: s.fd, events: Int16(POLLIN) | (sent < total ? Int16(POLLOUT) : 0), revents: 0)
            _ = poll(&pfd, 1, 100)
            if sent < total {
                let n = min(total - sent, period)
                let w = send(s.fd, pattern.baseAddress! + sent % period, n, Int32(MSG_NOSIGNAL))
                if w > 0 { sent += w } else if w < 0 && errno != EAGAIN { return "send: errno \(errno)" }
            } else if !finSent {
                shutdown(s.fd, Int32(SHUT_WR))
                finSent = true
            }
            while true {
                let r = buffer.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress, $0.count, 0) }
                if r == 0 {
                    return received == total ? nil : "end of file after \(received) of \(total) bytes"
                }
                if r < 0 {
                    if errno == EAGAIN { break }
                    return "recv: errno \(errno) after \(received) bytes"
                }
                // Compare in pieces of at most one period (contiguous in the pattern).
                var done = 0
                while done < r {
                    let piece = min(r - done, period)
                    let equal = buffer.withUnsafeBytes {
                        memcmp($0.baseAddress! + done, pattern.baseAddress! + (received + done) % period, piece) == 0
                    }
                    if !equal { return "bytes \(received + done)..<\(received + done + piece) differ" }
                    done += piece
                }
                received += r
                if received > total { return "\(received) bytes back for \(total)" }
            }
        }
    }
}

/// Polls `condition` every 20 ms for up to `seconds`; its last value.
func within(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// Expects the TCP gauges back at zero within 10 s (no connection, socket
/// object, PCB or demux socket of a connection left; the UDP echo and the
/// two listeners are the live demux sockets).
func expectTCPConnectionsGone(_ stack: EndpointStack, sourceLocation: SourceLocation = #_sourceLocation) {
    var last = StackGauges()
    let gone = within(seconds: 10) {
        last = stack.gauges
        return last.tcpConnections == 0 && last.tcpSocketObjects == 0 && last.connectedEntries == 0
            && last.closingSockets == 0 && last.liveSockets == 3
    }
    #expect(gone, "\(last.nonZero)", sourceLocation: sourceLocation)
}

