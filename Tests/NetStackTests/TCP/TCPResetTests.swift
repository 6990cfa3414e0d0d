import FastDemux
import Testing
@testable import NetStack

@Suite("TCP engine: resets and RFC 5961")
struct TCPResetTests {
    @Test("a SYN to a closed port gets <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>; connect fails as refused")
    func closedPort() {
        let net = TCPTestNetwork()
        net.connect(serverPort: 81)  // nothing listens
        net.run(for: 1_000_000) { net.client.state == .closed }
        #expect(net.client.state == .closed && net.client.closeReason == .refused)
        let syn = net.log[0], rst = net.log[1]
        #expect(rst.header.flags == [.rst, .ack])
        #expect(rst.header.sequenceNumber == 0)
        #expect(rst.header.acknowledgmentNumber == syn.header.sequenceNumber &+ 1)
        #expect(net.hosts[1].inputDrops[.noConnection] == 1)
    }

    @Test("a segment with ACK to no connection gets <SEQ=SEG.ACK><CTL=RST>; a RST gets nothing (RFC 9293 §3.10.7.1)")
    func resetReplyRules() {
        let withAck = TCPHeader(sourcePort: 1, destinationPort: 2, sequenceNumber: 100, acknowledgmentNumber: 5000,
                                flags: [.ack, .psh], window: 10)
        let r = withAck.resetReply(payloadLength: 10)
        #expect(r == TCPHeader(sourcePort: 2, destinationPort: 1, sequenceNumber: 5000, acknowledgmentNumber: 0,
                               flags: .rst, window: 0))
        let finNoAck = TCPHeader(sourcePort: 1, destinationPort: 2, sequenceNumber: 100, acknowledgmentNumber: 0,
                                 flags: .fin, window: 10)
        #expect(finNoAck.resetReply(payloadLength: 10)?.acknowledgmentNumber == 111)
        let rst = TCPHeader(sourcePort: 1, destinationPort: 2, sequenceNumber: 1, acknowledgmentNumber: 1,
                            flags: [.rst, .ack], window: 0)
        #expect(rst.resetReply(payloadLength: 0) == nil)
        // A listener answers a stray ACK the same way.
        let net = TCPTestNetwork()
        net.listen(port: 80)
        net.inject(rawSegment(seq: 7, ack: 12345, flags: .ack, source: net.hosts[0].address, destination: net.hosts[1].address),
                   from: 0, to: 1)
        #expect(net.queue.count == 1)
        #expect(net.queue.first?.segment.header.flags == .rst)
        #expect(net.queue.first?.segment.header.sequenceNumber == 12345)
        // A closed connection answers like a closed port.
        var sink = CaptureSink()
        var c = TCPConnection(connecting: net.endpoints(from: 1, port: 1, to: 0, port: 2),
                              configuration: TCPTestNetwork.testConfiguration(), isn: net.isn, now: 0, sink: &sink)
        c.abort(now: 0, sink: &sink)
        sink.segments.removeAll()
        c.receive(withAck, payload: UnsafeRawBufferPointer(start: nil, count: 0), now: 0, sink: &sink)
        #expect(sink.segments.map(\.header) == [r!])
        #expect(c.counters[.noConnection] == 1)
    }

    /// An established pair and a segment builder aimed at the server.
    func established() -> (TCPTestNetwork, (UInt32, UInt32, TCPFlags) -> [UInt8]) {
        let net = TCPTestNetwork()
        #expect(net.establish())
        net.run(for: 100_000)
        let build = { (seq: UInt32, ack: UInt32, flags: TCPFlags) in
            rawSegment(seq: seq, ack: ack, flags: flags, source: net.hosts[0].address, destination: net.hosts[1].address)
        }
        return (net, build)
    }

    @Test("an in-window RST that is not exact gets a challenge ACK (RFC 5961 §3.2)")
    func inWindowReset() {
        let (net, seg) = established()
        let s = net.server
        net.inject(seg(s.rcvNxt &+ 100, 0, .rst), from: 0, to: 1)
        #expect(net.server.state == .established)
        #expect(net.server.counters.challengeAcks == 1)
        #expect(net.server.counters[.resetChallenged] == 1)
        let ack = net.queue.last?.segment.header
        #expect(ack?.flags == .ack && ack?.sequenceNumber == s.sndNxt && ack?.acknowledgmentNumber == s.rcvNxt)
        // The challenge ACK reaches the client, which has nothing to do with it.
        net.run(for: 100_000)
        #expect(net.client.state == .established)
    }

    @Test("an exact RST closes the connection; an out-of-window RST is dropped silently")
    func exactReset() {
        let (net, seg) = established()
        let s = net.server
        net.inject(seg(s.rcvNxt &+ 1_000_000, 0, .rst), from: 0, to: 1)
        #expect(net.server.state == .established)
        #expect(net.server.counters[.resetOutOfWindow] == 1)
        #expect(net.queue.isEmpty)
        net.inject(seg(s.rcvNxt, 0, .rst), from: 0, to: 1)
        #expect(net.server.state == .closed && net.server.closeReason == .reset)
        #expect(net.queue.isEmpty)
    }

    @Test("a SYN on an established connection gets a challenge ACK (RFC 5961 §4.2)")
    func synInEstablished() {
        let (net, seg) = established()
        let s = net.server
        for seq in [s.rcvNxt, s.rcvNxt &+ 5, s.rcvNxt &- 1_000_000] {
            net.inject(seg(seq, 0, .syn), from: 0, to: 1)
        }
        #expect(net.server.state == .established)
        // The in-window SYNs reach the SYN check; the far one fails the window test first (plain ACK).
        #expect(net.server.counters[.synChallenged] == 2)
        #expect(net.server.counters.challengeAcks == 2)
        #expect(net.server.counters[.outOfWindow] == 1)
        #expect(net.queue.count == 3 && net.queue.allSatisfy { $0.segment.header.flags == .ack })
    }

    @Test("ACK acceptability (RFC 5961 §5.2): an ACK of unsent data or far too old is answered and dropped")
    func ackAcceptability() {
        let (net, seg) = established()
        let s = net.server
        net.inject(seg(s.rcvNxt, s.sndNxt &+ 10, .ack), from: 0, to: 1)
        net.inject(seg(s.rcvNxt, s.sndUna &- 3_000_000, .ack), from: 0, to: 1)
        #expect(net.server.counters[.unacceptableAck] == 2)
        #expect(net.server.sndUna == s.sndUna)
        #expect(net.queue.count == 2)
        // A segment without ACK is dropped (RFC 9293 §3.10.7.4 fifth check).
        net.inject(seg(s.rcvNxt, 0, .psh), from: 0, to: 1)
        #expect(net.server.counters[.missingAck] == 1)
    }

    @Test("RST in SYN-SENT is taken only with an acceptable ACK (RFC 9293 §3.10.7.3)")
    func resetInSynSent() {
        let net = TCPTestNetwork()
        net.connect(serverPort: 99)
        net.queue.removeAll()
        let iss = net.client.iss
        let build = { (ack: UInt32, flags: TCPFlags) in
            rawSegment(sourcePort: 99, destinationPort: 40000, seq: 0, ack: ack, flags: flags,
                       source: net.hosts[1].address, destination: net.hosts[0].address)
        }
        net.inject(build(iss &+ 5, [.rst, .ack]), from: 1, to: 0)  // bad ACK: ignored (no RST to a RST)
        #expect(net.client.state == .synSent)
        #expect(net.queue.isEmpty)
        net.inject(build(0, .rst), from: 1, to: 0)  // no ACK: not acceptable
        #expect(net.client.state == .synSent && net.client.counters[.resetUnacceptable] == 1)
        net.inject(build(iss &+ 1, [.rst, .ack]), from: 1, to: 0)
        #expect(net.client.state == .closed && net.client.closeReason == .refused)
    }

    @Test("an abort sends <SEQ=SND.NXT><CTL=RST> and the peer closes with reason reset")
    func abort() {
        let net = TCPTestNetwork()
        #expect(net.establish())
        net.with(0, 0) { c, now, sink in c.abort(now: now, sink: &sink) }
        #expect(net.client.closeReason == .aborted)
        net.run(for: 100_000) { net.server.state == .closed }
        #expect(net.server.closeReason == .reset)
    }
}
