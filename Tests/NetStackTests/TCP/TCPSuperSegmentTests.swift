import FastDemux
import Testing
@testable import NetStack

// Super-segments (TCPConfiguration.maximumSegmentsPerSend above 1, what a
// device with segmentation offload gets): the engine's split of new data
// into calls of k × MSS within the windows, the flags on the last piece,
// the short tail rules, and retransmissions that stay one MSS. The test
// channel cuts each call into MSS pieces as Linux's tcp_gso_segment does.

@Suite("TCP engine: super-segments")
struct TCPSuperSegmentTests {
    static func offloadConfiguration(_ k: Int = 44) -> TCPConfiguration {
        var c = TCPTestNetwork.testConfiguration()
        c.maximumSegmentsPerSend = k
        return c
    }

    @Test("the first flight is one super-segment of the initial window, PSH and no FIN, MSS pieces")
    func initialWindow() {
        let net = TCPTestNetwork()
        #expect(net.establish(client: Self.offloadConfiguration()))
        let mss = net.client.negotiated.sendMSS
        net.superSegmentLog = []
        net.log = []
        net.write(host: 0, [UInt8](repeating: 7, count: 100_000))
        // cwnd 10 MSS (RFC 6928), all of it in one call.
        #expect(net.superSegmentLog.count == 1)
        let call = net.superSegmentLog.first
        #expect(call?.length == 10 * mss && call?.segmentSize == mss)
        #expect(call?.header.flags.contains(.fin) == false && call?.header.flags.contains(.psh) == false)
        #expect(net.log.count == 10 && net.log.allSatisfy { $0.payloadLength == mss })
        #expect(net.client.counters.superSegmentsSent == 1 && net.client.counters.segmentsSent >= 10)
    }

    @Test("the peer's window limits a super-segment to whole MSS within it")
    func windowLimit() {
        let net = TCPTestNetwork()
        var server = TCPTestNetwork.testConfiguration()
        server.receiveBufferSize = 5000
        server.windowScaling = false
        #expect(net.establish(client: Self.offloadConfiguration(), server: server))
        let mss = net.client.negotiated.sendMSS
        net.superSegmentLog = []
        net.log = []
        net.write(host: 0, [UInt8](repeating: 7, count: 100_000))
        let window = net.client.sendWindow
        #expect(window <= 5000)
        #expect(net.superSegmentLog.count == 1)
        #expect(net.superSegmentLog.first?.length == (window / mss) * mss)
        #expect(net.log.allSatisfy { $0.payloadLength <= mss })
    }

    @Test("all that is queued: a short last piece and the FIN ride on the super-segment")
    func finAndTail() {
        let net = TCPTestNetwork()
        #expect(net.establish(client: Self.offloadConfiguration()))
        let mss = net.client.negotiated.sendMSS
        net.superSegmentLog = []
        net.log = []
        net.with(0, 0) { c, now, sink in
            _ = [UInt8](repeating: 1, count: 3 * mss + 100).withUnsafeBytes { c.write($0) }
            c.shutdownWrite()
            c.output(now: now, sink: &sink)
        }
        #expect(net.superSegmentLog.count == 1)
        let call = net.superSegmentLog.first
        #expect(call?.length == 3 * mss + 100)
        #expect(call?.header.flags.contains(.fin) == true && call?.header.flags.contains(.psh) == true)
        #expect(net.log.map(\.payloadLength) == [mss, mss, mss, 100])
        #expect(net.log.map { $0.header.flags.contains(.fin) } == [false, false, false, true])
    }

    @Test("Nagle holds the short tail back: the super-segment is whole MSS")
    func nagleTail() {
        let net = TCPTestNetwork()
        var c = Self.offloadConfiguration()
        c.nagle = true
        #expect(net.establish(client: c))
        let mss = net.client.negotiated.sendMSS
        net.superSegmentLog = []
        net.log = []
        net.write(host: 0, [UInt8](repeating: 1, count: 3 * mss + 100))
        #expect(net.superSegmentLog.map(\.length) == [3 * mss])
        #expect(net.log.map(\.payloadLength) == [mss, mss, mss])
    }

    @Test("at most k MSS per call, and never beyond a 64 KiB IP packet")
    func limits() {
        for (k, expected) in [(2, 2), (1000, (65535 - 100) / 1448)] {
            let net = TCPTestNetwork()
            net.recording = false
            #expect(net.establish(client: Self.offloadConfiguration(k)))
            let mss = net.client.negotiated.sendMSS
            #expect(mss == 1448)
            // 4 MiB: cwnd grows past 64 KiB.
            let app = BulkApplication(total: 4 << 20)
            net.application = app.pump
            #expect(net.run(for: 600_000_000) { app.done })
            let lengths = net.superSegmentLog.filter { $0.header.sourcePort == net.client.endpoints.localPort }
                .map(\.length)
            #expect(lengths.allSatisfy { $0 <= expected * mss })
            #expect(lengths.max() == expected * mss)
        }
    }

    @Test("without the setting every call is one segment (today's behaviour)")
    func offByDefault() {
        let net = TCPTestNetwork()
        #expect(net.establish())
        net.superSegmentLog = []
        net.write(host: 0, [UInt8](repeating: 1, count: 100_000))
        #expect(net.superSegmentLog.isEmpty && net.client.counters.superSegmentsSent == 0)
    }

    @Test("16 MiB each way under 3 % loss in super-segments: intact, retransmissions one MSS each",
          arguments: [AddressFamily.ipv4, .ipv6])
    func bulkUnderLoss(family: AddressFamily) {
        let net = TCPTestNetwork(family: family, seed: 7)
        net.recording = false
        #expect(net.establish(client: Self.offloadConfiguration(), server: Self.offloadConfiguration()))
        net.loss = 0.03
        let app = BulkApplication(total: 16 << 20)
        net.application = app.pump
        let ok = net.run(for: 3_600_000_000, steps: 20_000_000) {
            app.done && net.client.state == .closed && net.server.state == .closed
        }
        #expect(ok, "received \(app.received), client \(net.client.counters), server \(net.server.counters)")
        #expect(app.mismatches == 0 && app.received == [16 << 20, 16 << 20])
        let c = net.client.counters, s = net.server.counters
        #expect(c.superSegmentsSent > 0 && s.superSegmentsSent > 0)
        #expect(c.retransmissions > 0 && s.retransmissions > 0)
        // No super-segment starts below the end of an earlier one from the
        // same side: retransmissions went out one MSS at a time.
        var highest: [UInt16: UInt32] = [:]
        var retransmitted = 0
        for call in net.superSegmentLog {
            let port = call.header.sourcePort
            let end = call.header.sequenceNumber &+ UInt32(call.length)
            if let h = highest[port], TCPSeq.lt(call.header.sequenceNumber, h) { retransmitted += 1 }
            if highest[port].map({ TCPSeq.gt(end, $0) }) ?? true { highest[port] = end }
        }
        #expect(retransmitted == 0)
    }
}
