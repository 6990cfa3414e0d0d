import Glibc
import PacketIO
import SMPPrimitives
import Synchronization
import Testing
import TestSupport
@testable import NetStack

// The stack against the real kernel: a multi-queue TUN device in a network
// namespace of its own; the kernel side is 198.18.0.1/24 and fd00:18::1/64,
// the stack answers as 198.18.0.2 and fd00:18::2 with a UDP echo service
// (RFC 862) written on the public socket API. Kernel clients are ordinary
// Linux sockets made inside the namespace. Every wait has a deadline
// (SO_RCVTIMEO on the kernel sockets).

private let kernelV4 = NamespaceAddress.kernelV4, stackV4 = NamespaceAddress.stackV4
private let kernelV6 = NamespaceAddress.kernelV6, stackV6 = NamespaceAddress.stackV6

/// Sends `payload` and waits for one datagram back: the bytes, or the
/// errno of a failed receive.
private func roundTrip(_ s: TestSocket, _ payload: [UInt8], capacity: Int = 2048) -> Result<[UInt8], TUNError> {
    let sent = payload.withUnsafeBytes { send(s.fd, $0.baseAddress, $0.count, 0) }
    guard sent == payload.count else { return .failure(TUNError(operation: "send", code: errno)) }
    var buffer = [UInt8](repeating: 0, count: capacity)
    let n = buffer.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress, $0.count, 0) }
    guard n >= 0 else { return .failure(TUNError(operation: "recv", code: errno)) }
    return .success(Array(buffer[0..<n]))
}

/// The churn test's kernel client: told when to stop, reports what it sent.
private final class ClientControl: Sendable {
    let stop = Atomic<Bool>(false)
    let sent = Atomic<Int>(0)
}

/// Datagrams of 1 to 1,400 bytes, varying content.
private func payload(_ i: Int) -> [UInt8] {
    let n = 1 + (i &* 7919) % 1400
    return (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
}

@Suite(.enabled(if: tunTestsCanRun, "needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN), /dev/net/tun and ip netns"),
       .serialized)
struct StackNamespaceTests {
    @Test(arguments: [stackV4, stackV6])
    func aKernelUDPClientGetsEveryDatagramEchoedByteIdentical(server: String) throws {
        let f = try StackFixture()
        defer { f.tearDown() }
        let count = 10_000
        let mismatches = try f.ns.inside { () throws -> [String] in
            let s = try kernelSocket(type: Int32(SOCK_DGRAM.rawValue), to: server, port: 7)
            var bad: [String] = []
            for i in 0..<count where bad.count < 5 {
                let p = payload(i)
                switch roundTrip(s, p) {
                case .success(let r) where r == p: continue
                case .success(let r): bad.append("datagram \(i): \(r.count) bytes back for \(p.count)")
                case .failure(let e): bad.append("datagram \(i): \(e)")
                }
            }
            return bad
        }
        #expect(mismatches.isEmpty, "\(mismatches)")
        let s = f.stack.totalStatistics
        #expect(s.delivered >= count && s.datagramsSent >= count)
        #expect(s.isConserved, "\(s)")
    }

    @Test(arguments: [stackV4, stackV6])
    func aKernelTCPClientGets16MiBEchoedByteIdenticalAndTheConnectionIsFreed(server: String) throws {
        var tcp = TCPConfiguration()
        tcp.maximumSegmentLifetime = 500_000   // TIME-WAIT 1 s
        let f = try StackFixture(tcp: tcp)
        defer { f.tearDown() }
        let failure = try f.ns.inside { () -> String? in
            tcpEchoClient(to: server, port: 7, total: 16 << 20, seconds: 90)
        }
        #expect(failure == nil, "\(failure ?? "")")
        expectTCPConnectionsGone(f.stack)
        let s = f.stack.totalStatistics
        #expect(s.tcpConnectionsAccepted == 1)
        #expect(s.isConserved, "\(s)")
        // The NetBSD fast path: the input path ran the engine on what it
        // queued and sent the ACKs due at once (16 MiB is about 11,600
        // full segments: an immediate ACK at least every second one).
        #expect(s.tcpInputPathSegments > 5_000, "\(s)")
        #expect(s.tcpImmediateAcks > 2_000, "\(s)")
        #expect(s.tcpTryLockFailures == 0, "flow-affine cores: the input never meets a run of the engine")
    }

    @Test(arguments: [stackV4, stackV6])
    func aServerThatClosesFirstGoesThroughTimeWaitAndIsFreed(server: String) throws {
        var tcp = TCPConfiguration()
        tcp.maximumSegmentLifetime = 500_000   // TIME-WAIT 1 s
        let f = try StackFixture(tcp: tcp)
        defer { f.tearDown() }
        let greeting = try f.ns.inside { () throws -> [UInt8] in
            let s = try kernelSocket(type: Int32(SOCK_STREAM.rawValue), to: server, port: 9)
            var got: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 64)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break }   // end of file (or the 2 s receive timeout)
                got += buffer[0..<n]
            }
            return got
        }   // the client closes here: its FIN puts the server in TIME-WAIT
        #expect(greeting == Array("bye\n".utf8))
        #expect(within(seconds: 0.5) { f.stack.gauges.tcpConnections == 1 }, "in TIME-WAIT")
        expectTCPConnectionsGone(f.stack)
    }

    @Test(arguments: [stackV4, stackV6])
    func aTCPConnectToAClosedPortIsRefused(server: String) throws {
        let f = try StackFixture(tcp: TCPConfiguration())
        defer { f.tearDown() }
        let error = try f.ns.inside { () -> Int32 in
            do {
                _ = try kernelSocket(type: Int32(SOCK_STREAM.rawValue), to: server, port: 8)
                return 0
            } catch let e as TUNError {
                return e.code
            } catch {
                return -1
            }
        }
        #expect(error == ECONNREFUSED)
        #expect(f.stack.totalStatistics.tcpResetsSent >= 1)
    }

    @Test(arguments: [stackV4, stackV6])
    func pingGetsEchoReplies(server: String) throws {
        let f = try StackFixture()
        defer { f.tearDown() }
        let v6 = server.contains(":")
        let replies = try f.ns.inside { () throws -> Int in
            let s = try kernelSocket(type: Int32(SOCK_DGRAM.rawValue), proto: v6 ? Int32(IPPROTO_ICMPV6) : Int32(IPPROTO_ICMP),
                                     to: server, port: 0)
            var got = 0
            for seq in 1...3 {
                // Type, code, checksum (the kernel fills it and the
                // identifier for a ping socket), identifier, sequence, data.
                let request: [UInt8] = [v6 ? 128 : 8, 0, 0, 0, 0, 0, 0, UInt8(seq)] + (0..<56).map { UInt8($0) }
                if case .success(let r) = roundTrip(s, request), r.count == request.count,
                   r[0] == (v6 ? 129 : 0), r[7] == UInt8(seq), Array(r[8...]) == Array(request[8...]) {
                    got += 1
                }
            }
            return got
        }
        #expect(replies == 3)
        #expect(f.stack.totalStatistics.echoRequestsAnswered == 3)
    }

    @Test(arguments: [stackV4, stackV6])
    func aConnectedKernelClientSeesConnectionRefusedFromAClosedPort(server: String) throws {
        let f = try StackFixture()
        defer { f.tearDown() }
        let code = try f.ns.inside { () throws -> Int32 in
            let s = try kernelSocket(type: Int32(SOCK_DGRAM.rawValue), to: server, port: 9999)
            // The first send draws the ICMP error; the error is reported
            // on the next call (recv).
            if case .failure(let e) = roundTrip(s, [1, 2, 3]) { return e.code }
            return 0
        }
        #expect(code == ECONNREFUSED)
        #expect(f.stack.totalStatistics.portUnreachableSent == 1)
    }

    @Test(arguments: [stackV4, stackV6])
    func an8KiBDatagramIsReassembledEchoedAndReassembledByLinux(server: String) throws {
        let f = try StackFixture()
        defer { f.tearDown() }
        let big = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let result = try f.ns.inside { () throws -> Result<[UInt8], TUNError> in
            let s = try kernelSocket(type: Int32(SOCK_DGRAM.rawValue), to: server, port: 7)
            return roundTrip(s, big, capacity: 65_536)
        }
        #expect((try? result.get()) == big, "\(result)")
        let s = f.stack.totalStatistics
        #expect(s.datagramsReassembled == 1 && s.fragmentsToReassembly == 6)
        #expect(s.isConserved, "\(s)")
    }

    /// Replies go out on the flow's owner queue, and Linux's tun automq
    /// steering learns from them (tun_flow_update on our writes): after a
    /// flow's first reply its datagrams arrive on the owner's queue, so at
    /// most the first one or two per flow are misplaced.
    @Test func repliesOnTheOwnerQueueTeachTheKernelToSteerTheFlowThere() throws {
        let f = try StackFixture(queues: 2)
        defer { f.tearDown() }
        let flows = 16, perFlow = 50
        let echoed = try f.ns.inside { () throws -> Int in
            let sockets = try (0..<flows).map { _ in
                try kernelSocket(type: Int32(SOCK_DGRAM.rawValue), to: stackV4, port: 7)
            }
            var ok = 0
            for i in 0..<perFlow {
                for s in sockets where (try? roundTrip(s, payload(i)).get()) == payload(i) { ok += 1 }
            }
            return ok
        }
        #expect(echoed == flows * perFlow)
        let queues = (0..<2).compactMap { f.stack.queueStatistics(queue: $0) }
        let misplaced = queues.reduce(0) { $0 + $1.misplaced }
        let s = f.stack.totalStatistics
        #expect(s.handedOff == misplaced)
        #expect(misplaced <= 2 * flows, "\(misplaced) misplaced of \(flows * perFlow)")
        #expect(s.isConserved, "\(s)")
    }

    /// Issue 10 against the kernel: a kernel UDP client sends (IPv4 and
    /// IPv6, small datagrams and 3,000-byte ones the kernel fragments) to
    /// ports whose sockets are bound and closed over and over meanwhile;
    /// afterwards nothing is held: sockets, table entries, buffers (the TUN
    /// queues' caches included), reassembly.
    @Test func socketsChurnWhileAKernelClientSendsAndNothingLeaks() throws {
        var reassembly = ReassemblyConfiguration(maxQueues: 64, maxFragments: 1024)
        reassembly.ipv4Timeout = .milliseconds(200)
        reassembly.ipv6Timeout = .milliseconds(200)
        let f = try StackFixture(reassembly: reassembly)
        defer { f.tearDown() }
        let control = ClientControl()
        let client = PinnedThread(name: "ns-client") { [ns = f.ns] () -> String? in
            do {
                return try ns.inside { () throws -> String? in
                    let v4 = TestSocket(fd: socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0))
                    let v6 = TestSocket(fd: socket(AF_INET6, Int32(SOCK_DGRAM.rawValue), 0))
                    guard v4.fd >= 0, v6.fd >= 0 else { return "socket: errno \(errno)" }
                    var reply = [UInt8](repeating: 0, count: 4096)
                    var i = 0
                    while !control.stop.load(ordering: .relaxed) {
                        let v = i & 1 == 0
                        let port: UInt16 = i % 5 == 0 ? 7 : 20000 + UInt16(i % 64)
                        let sa = sockaddrBytes(v ? stackV4 : stackV6, port)
                        let p = payload(i) + (i % 16 == 3 ? [UInt8](repeating: 0x5a, count: 3000) : [])
                        _ = p.withUnsafeBytes { b in
                            sa.withUnsafeBytes { a in
                                sendto(v ? v4.fd : v6.fd, b.baseAddress, b.count, 0,
                                       a.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(a.count))
                            }
                        }
                        i += 1
                        if i % 16 == 0 {
                            // Take what came back (echoes), and let the stack keep up.
                            for fd in [v4.fd, v6.fd] {
                                while reply.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }) > 0 {}
                            }
                            usleep(200)
                        }
                    }
                    control.sent.store(i, ordering: .relaxed)
                    return nil
                }
            } catch {
                return "\(error)"
            }
        }
        let stack = f.stack
        var window: [UDPSocket] = []
        for i in 0..<1000 {
            let s = stack.makeUDPSocket(i & 1 == 0 ? .ipv4 : .ipv6, core: i & 1) { s in
                while s.tryReceive({ d in try? s.send(d.payload, to: d.peer) }) != nil {}
            }
            #expect(throws: Never.self) { try s.bind(port: 20000 + UInt16(i % 64)) }
            window.append(s)
            if window.count == 16 {
                let old = window.removeFirst()
                if i % 3 == 0 { stack.group.call(on: (i / 3) & 1) { old.close() } } else { old.close() }
            }
            usleep(200)
        }
        for s in window { s.close() }
        window = []
        control.stop.store(true, ordering: .relaxed)
        let failure = client.join()
        #expect(failure == nil, "\(failure ?? "")")
        f.echo.close()
        var last = StackGauges()
        let zero = eventually(seconds: 10) {
            last = stack.gauges
            // The fixture still holds the closed echo socket (its demux
            // socket and worker are freed with the fixture).
            last.liveSockets -= 1
            last.socketWorkers -= 1
            return last.isZero
        }
        #expect(zero, "still held: \(last.nonZero)")
        let s = stack.totalStatistics
        #expect(control.sent.load(ordering: .relaxed) > 100 && s.delivered > 0 && s.datagramsReassembled > 0, "\(s)")
        #expect(s.isConserved, "\(s)")
    }
}

