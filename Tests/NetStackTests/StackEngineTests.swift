import Glibc
import Synchronization
import Testing
import TestSupport
@testable import NetStack

// The stack engine and the UDP socket API without a device: hand-made raw
// IP packets go in through EndpointStack.inject, what the stack writes
// comes out through its capture output.

/// Polls `condition` until it holds or `seconds` pass (never hangs).
private func eventually(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while !condition() {
        if ContinuousClock.now > deadline { return false }
        usleep(500)
    }
    return true
}

/// What the stack wrote, per core, as byte arrays.
private final class Captured: Sendable {
    let packets = Mutex<[(core: Int, bytes: [UInt8])]>([])

    var capture: EndpointStack.Capture {
        { [self] core, batch, buffers in
            let copies = batch.map { Array(buffers.bytes($0)) }
            for p in batch { buffers.free(p) }
            packets.withLock { list in for c in copies { list.append((core, c)) } }
        }
    }
    var count: Int { packets.withLock { $0.count } }
    var all: [[UInt8]] { packets.withLock { $0.map(\.bytes) } }
    func take() -> [[UInt8]] { packets.withLock { l in defer { l = [] }; return l.map(\.bytes) } }
}

/// The stack's addresses: TestPacket's default destinations.
private let stackV4 = IPAddress("192.168.7.2")!
private let stackV6 = IPAddress("2001:db8::abc")!
private let peerV4 = IPAddress("10.0.0.1")!
private let peerV6 = IPAddress("2001:db8::1")!

private func makeStack(cores: Int = 1, rate: Int = 1000, burst: Int = 50, _ captured: Captured) -> EndpointStack {
    EndpointStack(configuration: .init(addresses: [stackV4, stackV6], cores: cores, bufferCount: 2048,
                                       icmpErrorsPerSecond: rate, icmpErrorBurst: burst, spinPasses: 50),
                  capture: captured.capture)
}

/// A UDP datagram from the peer to the stack (valid checksum).
private func udp(v6: Bool = false, sport: UInt16 = 40000, dport: UInt16 = 7, payload: [UInt8]) -> [UInt8] {
    Frag.udpDatagram(v6: v6, payload: payload, sport: sport, dport: dport)
}

/// An echo request from the peer to the stack.
private func echoRequest(v6: Bool, id: UInt16 = 0x1234, seq: UInt16 = 1, data: [UInt8]) -> [UInt8] {
    var icmp: [UInt8] = [v6 ? 128 : 8, 0, 0, 0] + TestPacket.be16(id) + TestPacket.be16(seq) + data
    if v6 {
        let ip = TestPacket.ipv6(next: 58, payload: icmp)
        var pseudo: UInt32 = 0
        for i in stride(from: 8, to: 40, by: 2) { pseudo += UInt32(ip[i]) << 8 | UInt32(ip[i + 1]) }
        pseudo += 58 + UInt32(icmp.count)
        let c = TestPacket.checksum(icmp, initial: pseudo)
        icmp[2] = UInt8(c >> 8); icmp[3] = UInt8(c & 0xff)
        return TestPacket.ipv6(next: 58, payload: icmp)
    }
    let c = TestPacket.checksum(icmp)
    icmp[2] = UInt8(c >> 8); icmp[3] = UInt8(c & 0xff)
    return TestPacket.ipv4(proto: 1, fragment: 0, payload: icmp)
}

/// The parsed UDP reply: flow and payload (checksums verified).
private func udpReply(_ bytes: [UInt8]) -> (flow: FlowKey, payload: [UInt8])? {
    guard case .packet(let p) = parseRaw(bytes) else { return nil }
    return (p.flow, Array(bytes[p.payloadOffset ..< p.payloadOffset + p.payloadLength]))
}

/// An echo server on the executor form of the socket API: what a user
/// writes (no special case in the engine).
private func echoServer(_ stack: EndpointStack, family: AddressFamily = .ipv4, v6Only: Bool = false,
                        port: UInt16 = 7, core: Int = 0) throws -> UDPSocket {
    let s = stack.makeUDPSocket(family, v6Only: v6Only, core: core) { s in
        while s.tryReceive({ d in try? s.send(d.payload, to: d.peer) }) != nil {}
    }
    try s.bind(port: port)
    return s
}

@Suite struct StackEngineTests {
    @Test func udpEchoOverIPv4AndIPv6ThroughTheExecutorSocketAPI() throws {
        let captured = Captured()
        let stack = makeStack(captured)
        defer { stack.shutdown() }
        let server = try echoServer(stack, family: .ipv6)   // dual stack: gets IPv4 too
        defer { server.close() }
        for (i, v6) in [false, true, false].enumerated() {
            let payload = Frag.bytes(100 + i, seed: UInt8(i))
            #expect(stack.inject(udp(v6: v6, payload: payload)))
            #expect(eventually { captured.count == i + 1 })
            guard let reply = captured.all.last.flatMap(udpReply) else { Issue.record("no UDP reply"); continue }
            #expect(reply.payload == payload)
            #expect(reply.flow.source == (v6 ? stackV6 : stackV4))
            #expect(reply.flow.destination == (v6 ? peerV6 : peerV4))
            #expect(reply.flow.sourcePort == 7 && reply.flow.destinationPort == 40000)
        }
        let s = stack.totalStatistics
        #expect(s.delivered == 3 && s.datagramsSent == 3 && s.isConserved)
    }

    @Test(arguments: [false, true])
    func echoRequestsGetEchoReplies(v6: Bool) throws {
        let captured = Captured()
        let stack = makeStack(captured)
        defer { stack.shutdown() }
        let data = Frag.bytes(56)
        #expect(stack.inject(echoRequest(v6: v6, id: 0x77, seq: 9, data: data)))
        #expect(eventually { captured.count == 1 })
        let r = captured.all[0]
        let off = v6 ? 40 : 20
        #expect(r[off] == (v6 ? 129 : 0))
        #expect(Array(r[(off + 4)...]) == TestPacket.be16(0x77) + TestPacket.be16(9) + data)
        #expect(stack.totalStatistics.echoRequestsAnswered == 1)
    }

    @Test(arguments: [false, true])
    func udpToAClosedPortGetsARateLimitedPortUnreachable(v6: Bool) throws {
        let captured = Captured()
        let stack = makeStack(rate: 1, burst: 2, captured)   // no refill during the test
        defer { stack.shutdown() }
        for _ in 0..<5 { #expect(stack.inject(udp(v6: v6, dport: 9999, payload: [1, 2, 3]))) }
        let s = stack.totalStatistics
        #expect(s.dropped(.noSocket) == 5)
        #expect(s.portUnreachableSent == 2 && s.icmpErrorsRateLimited == 3, "\(s)")
        #expect(eventually { captured.count == 2 })
        let e = captured.all[0]
        let off = v6 ? 40 : 20
        #expect(e[v6 ? 6 : 9] == (v6 ? 58 : 1))
        #expect(e[off] == (v6 ? 1 : 3) && e[off + 1] == (v6 ? 4 : 3))
        #expect(s.isConserved)
    }

    @Test func aDatagramWithABadChecksumIsDroppedWithoutAnError() throws {
        let captured = Captured()
        let stack = makeStack(captured)
        defer { stack.shutdown() }
        let server = try echoServer(stack)
        defer { server.close() }
        var bad = udp(payload: [1, 2, 3, 4])
        bad[bad.count - 1] ^= 0xff
        stack.inject(bad)
        var badClosed = udp(dport: 9999, payload: [1, 2, 3, 4])
        badClosed[badClosed.count - 1] ^= 0xff
        stack.inject(badClosed)
        let s = stack.totalStatistics
        #expect(s.dropped(.parse) == 2 && s.parseDrops[Int(DropReason.checksum.rawValue)] == 2)
        #expect(s.delivered == 0 && s.portUnreachableSent == 0 && s.isConserved)
    }

    @Test func noErrorAboutABroadcastDatagram() throws {
        let captured = Captured()
        let stack = EndpointStack(configuration: .init(addresses: [IPAddress("255.255.255.255")!, stackV4]),
                                  capture: captured.capture)
        defer { stack.shutdown() }
        // A datagram from a non-unicast source (class E) may never be
        // answered with an error (RFC 1122 §3.2.2).
        let bad = TestPacket.withTransportChecksum(
            TestPacket.ipv4(proto: 17, src: [240, 0, 0, 1], fragment: 0, payload: TestPacket.udp(dport: 9999)),
            l4: 20, proto: 17)
        stack.inject(bad)
        let s = stack.totalStatistics
        #expect(s.portUnreachableSent == 0)
        #expect(s.entered == 1 && s.isConserved)
    }

    @Test func aFragmentedDatagramIsReassembledDeliveredAndTheReplyFragmented() throws {
        let captured = Captured()
        let stack = makeStack(captured)
        defer { stack.shutdown() }
        let server = try echoServer(stack, port: 5000)
        defer { server.close() }
        let payload = Frag.bytes(8192)
        let fragments = Frag.split(udp(sport: 4000, dport: 5000, payload: payload), mtu: 1500).map { Array($0[14...]) }
        #expect(fragments.count == 6)
        for f in fragments { #expect(stack.inject(f)) }
        #expect(eventually { captured.count == 6 })
        let s = stack.totalStatistics
        #expect(s.datagramsReassembled == 1 && s.delivered == 1 && s.fragmentsToReassembly == 6)
        #expect(s.isConserved)
        // The reply's fragments, reassembled by a table of our own.
        let rx = PacketPool(bufferCount: 64)
        let table = ReassemblyTable(fragmentPool: rx, datagramPool: PacketPool(bufferCount: 2, bufferSize: 70_000))
        var whole: [UInt8]?
        for f in captured.all {
            let p = rx.allocate(copying: f.withUnsafeBytes { $0 })!
            guard case .network(let n) = PacketParser().parseNetwork(rx.bytes(p), linkType: .raw) else {
                Issue.record("reply is not a fragment"); continue
            }
            if case .complete(let d) = table.insert(p, n, now: .now) {
                whole = Array(table.datagramPool.bytes(d.packet))
                table.datagramPool.free(d.packet)
            }
        }
        #expect(whole.flatMap(udpReply)?.payload == payload)
    }

    @Test func bindConflictsFollowLinux() throws {
        let stack = makeStack(Captured())
        defer { stack.shutdown() }
        let any4 = stack.makeUDPSocket(.ipv4)
        try any4.bind(port: 5353)
        let one4 = stack.makeUDPSocket(.ipv4)
        #expect(throws: UDPSocketError.addressInUse) { try one4.bind(InetEndpoint(stackV4, 5353)) }
        let dual = stack.makeUDPSocket(.ipv6)
        #expect(throws: UDPSocketError.addressInUse) { try dual.bind(port: 5353) }
        let only6 = stack.makeUDPSocket(.ipv6, v6Only: true)
        try only6.bind(port: 5353)
        let mapped = stack.makeUDPSocket(.ipv6)
        #expect(throws: UDPSocketError.addressInUse) { try mapped.bind(InetEndpoint(stackV4.mappedToIPv6, 5353)) }
        #expect(throws: UDPSocketError.familyMismatch) { try only6.connect(to: InetEndpoint(peerV4.mappedToIPv6, 1)) }
        #expect(throws: UDPSocketError.addressNotAvailable) {
            try stack.makeUDPSocket(.ipv4).bind(InetEndpoint(IPAddress("192.0.2.99")!, 1))
        }
        any4.close()
        try one4.bind(InetEndpoint(stackV4, 5353))   // free again after close
        let eph = stack.makeUDPSocket(.ipv6)
        try eph.bind(port: 0)
        #expect(UDPPortTable.ephemeralRange.contains(eph.localEndpoint!.port))
        for s in [one4, dual, only6, mapped, eph] { s.close() }
    }

    @Test func aV6OnlyWildcardSocketGetsNoIPv4() throws {
        let captured = Captured()
        let stack = makeStack(captured)
        defer { stack.shutdown() }
        let server = try echoServer(stack, family: .ipv6, v6Only: true)
        defer { server.close() }
        stack.inject(udp(payload: [1]))
        stack.inject(udp(v6: true, payload: [2]))
        #expect(eventually { captured.count == 2 })
        let s = stack.totalStatistics
        #expect(s.delivered == 1 && s.dropped(.noSocket) == 1 && s.portUnreachableSent == 1)
    }

    @Test func flowsBelongToOneCoreAndMisplacedPacketsAreHandedOver() throws {
        let captured = Captured()
        let stack = makeStack(cores: 2, captured)
        defer { stack.shutdown() }
        let server = try echoServer(stack, core: 1)
        defer { server.close() }
        let ports: [UInt16] = (0..<32).map { 41000 + $0 }
        for p in ports { stack.inject(udp(sport: p, payload: TestPacket.be16(p)), core: 0) }
        #expect(eventually { captured.count == ports.count })
        let s0 = stack.statistics(core: 0), s1 = stack.statistics(core: 1)
        #expect(s0.packetsIn == 32 && s1.handedIn == s0.handedOff)
        #expect(s0.handedOff > 0 && s0.handedOff < 32)   // the keyed hash splits the flows
        #expect(s0.isConserved && s1.isConserved)
        // Each reply went out on its flow's owner core: the core that
        // delivered it (core 0 for its own flows, core 1 for the rest).
        let byCore = captured.packets.withLock { $0.map(\.core) }
        #expect(byCore.filter { $0 == 1 }.count == s0.handedOff)
        #expect(s1.packetsOut == s0.handedOff)
    }

    @Test func theAsyncFormReceivesAndSends() async throws {
        let captured = Captured()
        let stack = makeStack(captured)
        defer { stack.shutdown() }
        let s = stack.makeUDPSocket(.ipv4)
        try s.connect(to: InetEndpoint(peerV4, 40000))
        let local = try #require(s.localEndpoint)
        #expect(local.address == stackV4)
        try await s.send([9, 8, 7])
        #expect(eventually { captured.count == 1 })
        #expect(captured.all.first.flatMap(udpReply)?.payload == [9, 8, 7])
        stack.inject(udp(sport: 40000, dport: local.port, payload: [4, 5]))
        let got = await s.receive { d in (Array(d.payload), d.peer) }
        #expect(got?.0 == [4, 5] && got?.1 == InetEndpoint(peerV4, 40000))
        s.close()
        #expect(await s.receive { _ in 0 } == nil)
    }

    @Test func aReusePortGroupSendsEachFlowToOneMember() throws {
        let stack = makeStack(Captured())
        defer { stack.shutdown() }
        /// Member index and source port of every datagram received.
        let seen = Mutex<[(member: Int, port: UInt16)]>([])
        func member(_ m: Int) throws -> UDPSocket {
            let s = stack.makeUDPSocket(.ipv4, reusePort: true) { s in
                while let p = s.tryReceive({ $0.peer.port }) { seen.withLock { $0.append((m, p)) } }
            }
            try s.bind(port: 6000)
            return s
        }
        let members = try (0..<3).map(member)
        #expect(throws: UDPSocketError.addressInUse) { try stack.makeUDPSocket(.ipv4).bind(port: 6000) }
        let ports: [UInt16] = (0..<40).map { 42000 + $0 }
        for _ in 0..<3 { for p in ports { stack.inject(udp(sport: p, dport: 6000, payload: [1])) } }
        #expect(eventually { seen.withLock { $0.count } == 120 })
        let byPort = Dictionary(grouping: seen.withLock { $0 }, by: \.port).mapValues { Set($0.map(\.member)) }
        #expect(byPort.values.allSatisfy { $0.count == 1 })          // a flow stays with one member
        #expect(Set(byPort.values.map { $0.first! }).count == 3)     // and the flows spread over all
        // The group shrinks: the remaining members take every flow.
        members[0].close()
        seen.withLock { $0 = [] }
        for p in ports { stack.inject(udp(sport: p, dport: 6000, payload: [2])) }
        #expect(eventually { seen.withLock { $0.count } == 40 })
        #expect(seen.withLock { $0 }.allSatisfy { $0.member != 0 })
        members[1].close(); members[2].close()
        for p in ports.prefix(1) { stack.inject(udp(sport: p, dport: 6000, payload: [3])) }
        #expect(stack.totalStatistics.dropped(.noSocket) == 1)   // the last member closed the group
        try stack.makeUDPSocket(.ipv4).bind(port: 6000)           // and freed the port
    }
}

/// Allocations on the input path, counted as in ReassemblyAllocationTests
/// (only when the test binary runs with an LD_PRELOAD shim exporting
/// `test_malloc_count()`, a per-thread malloc counter; uncounted otherwise).
/// What is counted, on the core's own thread: one batch of UDP to a socket,
/// UDP to a closed port (the port unreachable or the rate limiter), ICMP and
/// ICMPv6 echo requests (their replies), parse, lookup, delivery, output
/// and the flush, and the socket's reader draining its queue; not copying
/// the frames in (the test's own arrays), and one datagram sent with the
/// executor form of `UDPSocket.send`. Measured with such a shim: 0.
@Suite struct StackAllocationTests {
    @Test func noAllocationPerPacketOnTheInputPath() throws {
        let stack = EndpointStack(configuration: .init(addresses: [stackV4, stackV6], bufferCount: 1024))
        defer { stack.shutdown() }
        let socket = stack.makeUDPSocket(.ipv4)
        try socket.bind(port: 7)
        defer { socket.close() }
        let frames = [udp(payload: Frag.bytes(100)), udp(dport: 9999, payload: [1]),
                      echoRequest(v6: false, data: Frag.bytes(56)), echoRequest(v6: true, data: Frag.bytes(56)),
                      udp(v6: true, payload: [2])]
        let core = stack.cores[0]
        let fast = socket.socket
        let payload = Frag.bytes(200), peer = InetEndpoint(peerV4, 40000)
        let result = stack.group.call(on: 0) { () -> (allocations: UInt64, packets: Int, delivered: Int, sent: Int) in
            let count = ReassemblyAllocationTests.counter ?? { 0 }
            let refs = UnsafeMutableBufferPointer<PacketRef>.allocate(capacity: frames.count)
            defer { refs.deallocate() }
            var allocations: UInt64 = 0, packets = 0, delivered = 0, sent = 0
            for round in 0..<210 {
                for (i, f) in frames.enumerated() {
                    refs[i] = core.cache.allocate()!
                    f.withUnsafeBytes { stack.buffers.pool.buffer(refs[i]).copyMemory(from: $0) }
                    stack.buffers.pool.setLength(f.count, of: refs[i])
                }
                let x = count()
                core.input(UnsafeBufferPointer(refs))
                // The reader's side, as a readiness handler drains it.
                delivered += fast.receive(upTo: 64) { core.release($0) }
                // And a reply through the executor form of the socket API.
                payload.withUnsafeBytes { sent += (try? socket.send($0, to: peer)) != nil ? 1 : 0 }
                core.flush()
                if round >= 10 {   // after warming up the caches
                    allocations += count() - x
                    packets += frames.count
                }
            }
            return (allocations, packets, delivered, sent)
        }
        #expect(result.delivered == 210 && result.packets == 1000 && result.sent == 210)
        #expect(result.allocations == 0, "\(result.allocations) allocations for \(result.packets) packets")
        #expect(stack.totalStatistics.isConserved)
    }
}
