import FastDemux
import Testing
@testable import NetStack

@Suite("TCP engine: handshake and options")
struct TCPHandshakeTests {
    @Test("three-way handshake negotiates MSS, window scale and timestamps", arguments: [AddressFamily.ipv4, .ipv6])
    func handshakeNegotiates(family: AddressFamily) {
        let net = TCPTestNetwork(family: family)
        #expect(net.establish())
        let syn = net.log[0]
        #expect(syn.header.flags == .syn)
        #expect(syn.header.options.maximumSegmentSize == 1460)
        #expect(syn.header.options.windowScale == 3)  // 256 KiB buffer: shift 3 (RFC 7323 §2.3)
        #expect(syn.header.options.timestamp != nil)
        let synAck = net.log[1]
        #expect(synAck.header.flags == [.syn, .ack])
        #expect(synAck.header.acknowledgmentNumber == syn.header.sequenceNumber &+ 1)
        #expect(synAck.header.options.timestamp?.echoReply == syn.header.options.timestamp?.value)
        let ack = net.log[2]
        #expect(ack.header.flags == .ack)
        #expect(ack.header.acknowledgmentNumber == synAck.header.sequenceNumber &+ 1)
        for c in [net.client, net.server] {
            #expect(c.negotiated.sendMSS == 1460 - 12)
            #expect(c.negotiated.sendShift == 3 && c.negotiated.receiveShift == 3)
            #expect(c.negotiated.timestamps)
            #expect(c.counters.totalDrops == 0)
        }
        #expect(net.client.smoothedRTT > 0)
    }

    @Test("the other direction: host 1 connects to a listener on host 0, and data flows both ways",
          arguments: [AddressFamily.ipv4, .ipv6])
    func reverseHandshake(family: AddressFamily) {
        let net = TCPTestNetwork(family: family)
        net.listen(port: 443, on: 0)
        net.connect(from: 1, port: 50000, serverPort: 443)
        #expect(net.run(for: 5_000_000) {
            net.hosts[0].connections.first?.state == .established && net.server.state == .established
        })
        guard !net.hosts[0].connections.isEmpty else { return }
        #expect(net.client.endpoints.localPort == 443 && net.server.endpoints.localPort == 50000)
        #expect(net.client.endpoints.local.family == family)
        net.write(host: 0, [1, 2, 3])
        net.write(host: 1, [4, 5])
        #expect(net.run(for: 1_000_000) { net.client.readableBytes == 2 && net.server.readableBytes == 3 })
    }

    @Test("options the peer does not offer are not used (RFC 7323 §2.2, §3.2; RFC 9293 §3.7.1)")
    func optionsOff() {
        let net = TCPTestNetwork()
        var cc = TCPTestNetwork.testConfiguration()
        cc.windowScaling = false
        cc.timestamps = false
        cc.maximumSegmentSize = 1000
        #expect(net.establish(client: cc))
        let synAck = net.log[1]
        #expect(synAck.header.options.windowScale == nil)
        #expect(synAck.header.options.timestamp == nil)
        let s = net.server.negotiated
        #expect(s.sendMSS == 1000 && s.sendShift == 0 && s.receiveShift == 0 && !s.timestamps)
        let c = net.client.negotiated
        #expect(c.sendMSS == 1000 && !c.timestamps)
        // A transfer with the smaller MSS stays within it.
        net.log.removeAll()
        let data = [UInt8](repeating: 7, count: 10_000)
        net.write(host: 0, data)
        net.run(for: 5_000_000) { net.server.readableBytes == 10_000 }
        #expect(net.server.readableBytes == 10_000)
        #expect(net.log.allSatisfy { $0.payloadLength <= 1000 })
    }

    @Test("initial sequence numbers differ per 4-tuple and advance with the 4 µs clock (RFC 6528)")
    func isn() {
        let g = TCPISNGenerator(key0: 1, key1: 2)
        let a = IPAddress(ipv4: 0x0a00_0001), b = IPAddress(ipv4: 0x0a00_0002)
        let x = g.initialSequenceNumber(local: a, localPort: 1, remote: b, remotePort: 80, now: 0)
        let y = g.initialSequenceNumber(local: a, localPort: 2, remote: b, remotePort: 80, now: 0)
        #expect(x != y)
        #expect(g.initialSequenceNumber(local: a, localPort: 1, remote: b, remotePort: 80, now: 400) == x &+ 100)
        let other = TCPISNGenerator(key0: 3, key1: 2)
        #expect(other.initialSequenceNumber(local: a, localPort: 1, remote: b, remotePort: 80, now: 0) != x)
        // SipHash-2-4 of key 00..0f, message 00..27 (40 bytes); the value is from an independent
        // implementation checked against the SipHash paper's Appendix A vector (15 bytes: a129ca6149be45e5).
        func le(_ start: UInt64) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | ((start + UInt64($1)) << (8 * UInt64($1))) } }
        let h = TCPISNGenerator.sipHash24(le(0), le(8), le(0), le(8), le(16), le(24), le(32))
        #expect(h == 0x0e3e_a96b_5304_a7d0)
    }

    @Test("a lost SYN and a lost SYN-ACK are retransmitted with back-off")
    func synRetransmission() {
        let net = TCPTestNetwork()
        var dropped = 0
        net.filter = { s in
            if s.header.flags.contains(.syn) && dropped < 2 { dropped += 1; return false }
            return true
        }
        #expect(net.establish())
        #expect(dropped == 2)
        #expect(net.client.counters.timeouts >= 1)
    }

    @Test("simultaneous open (RFC 9293 §3.5 figure 7)")
    func simultaneousOpen() {
        let net = TCPTestNetwork()
        var sink = CaptureSink()
        let a = TCPConnection(connecting: net.endpoints(from: 0, port: 5000, to: 1, port: 6000),
                              configuration: TCPTestNetwork.testConfiguration(), isn: net.isn, now: net.now, sink: &sink)
        let b = TCPConnection(connecting: net.endpoints(from: 1, port: 6000, to: 0, port: 5000),
                              configuration: TCPTestNetwork.testConfiguration(), isn: net.isn, now: net.now, sink: &sink)
        net.hosts[0].connections.append(a)
        net.hosts[1].connections.append(b)
        net.transmit(sink)
        #expect(net.run(for: 10_000_000) { net.client.state == .established && net.server.state == .established })
    }

    @Test("delayed ACK: one small segment is acknowledged by the 200 ms timer, two full segments at once")
    func delayedAck() {
        let net = TCPTestNetwork()
        #expect(net.establish())
        let small = [UInt8](repeating: 1, count: 100)
        // A first exchange: the server's first ACK also opens the scaled
        // window (its SYN-ACK could only offer 65535), so it goes at once.
        net.write(host: 0, small)
        net.run(for: 1_000_000)
        net.with(1, 0) { c, _, _ in _ = c.discard(100) }
        net.log.removeAll()
        let delayedBefore = net.server.counters.delayedAcksSent
        net.write(host: 0, small)
        let sentAt = net.now
        net.run(for: 1_000_000) { net.client.unacknowledgedBytes == 0 }
        let ack = net.log.last { $0.endpoints.local == net.hosts[1].address }
        #expect(net.server.counters.delayedAcksSent == delayedBefore + 1, "\(net.log.map { ($0.header.flags, $0.payloadLength, $0.header.window) })")
        #expect(net.now - sentAt >= 200_000 && net.now - sentAt < 260_000)
        #expect(ack?.header.acknowledgmentNumber != nil)

        let full = [UInt8](repeating: 2, count: 2 * 1448)
        let before = net.server.counters.pureAcksSent
        net.write(host: 0, full)
        let t0 = net.now
        net.run(for: 1_000_000) { net.client.unacknowledgedBytes == 0 }
        #expect(net.now - t0 < 10_000)
        #expect(net.client.counters.timeouts == 0)
        #expect(net.server.counters.pureAcksSent == before + 1, "\(net.log.map { ($0.header.flags, $0.payloadLength, $0.header.window) })")
        #expect(net.server.counters.delayedAcksSent == delayedBefore + 1)
    }
}
