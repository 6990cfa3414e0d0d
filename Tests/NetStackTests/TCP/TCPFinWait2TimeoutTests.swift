import FastDemux
import Testing
@testable import NetStack

/// The orphan's FIN-WAIT-2 timeout (Linux's tcp_fin_timeout; RFC 9293
/// §3.10.7.4, RFC 1122 §4.2.2.13). Time is the network's simulated clock.
@Suite("TCP engine: FIN-WAIT-2 timeout of orphaned connections")
struct TCPFinWait2TimeoutTests {
    static func configuration(timeout: UInt64 = 5_000_000) -> TCPConfiguration {
        var c = TCPTestNetwork.testConfiguration()
        c.finWait2Timeout = timeout
        return c
    }

    /// Host 0 closes (orphans) its connection and sends the FIN.
    func close(_ net: TCPTestNetwork) {
        net.with(0, 0) { c, now, sink in
            c.close(now: now)
            c.output(now: now, sink: &sink)
        }
    }

    @Test("the default is Linux's tcp_fin_timeout, 60 s")
    func defaultTimeout() {
        #expect(TCPConfiguration().finWait2Timeout == 60_000_000)
    }

    @Test("an orphan in FIN-WAIT-2 whose peer never sends its FIN closes after the timeout, without a RST")
    func orphanTimesOut() {
        let net = TCPTestNetwork()
        #expect(net.establish(client: Self.configuration()))
        close(net)
        #expect(net.client.isOrphaned)
        net.run(for: 1_000_000) { net.client.state == .finWait2 }
        #expect(net.client.state == .finWait2)
        let entered = net.now
        #expect(net.client.finWait2Deadline == entered + 5_000_000)
        #expect(net.client.nextDeadline == entered + 5_000_000)
        let rstsBefore = net.client.counters.resetsSent
        // Just before the deadline it is still there; at it, it is gone.
        net.run(for: 4_900_000) { net.client.state == .closed }
        #expect(net.client.state == .finWait2)
        net.run(for: 1_000_000) { net.client.state == .closed }
        #expect(net.client.state == .closed && net.client.closeReason == .finWait2Timeout)
        #expect(net.now == entered + 5_000_000)
        #expect(net.client.counters.finWait2Timeouts == 1)
        #expect(net.client.counters.resetsSent == rstsBefore)
        #expect(net.client.nextDeadline == nil)
        // The peer, still in CLOSE-WAIT, is untouched by the drop.
        #expect(net.server.state == .closeWait)
    }

    @Test("a half-closed connection (shutdownWrite, still read) stays in FIN-WAIT-2 far beyond the timeout")
    func halfCloseIsNotTimedOut() {
        let net = TCPTestNetwork()
        #expect(net.establish(client: Self.configuration(timeout: 1_000_000)))
        net.shutdown(host: 0)
        net.run(for: 1_000_000) { net.client.state == .finWait2 }
        #expect(net.client.state == .finWait2 && !net.client.isOrphaned)
        #expect(net.client.finWait2Deadline == nil)
        net.advance(by: 100_000_000)
        #expect(net.client.state == .finWait2)
        // The peer still sends; the application still reads.
        net.write(host: 1, Array(repeating: 7, count: 1000))
        net.run(for: 1_000_000) { net.client.readableBytes == 1000 }
        #expect(net.client.readableBytes == 1000)
        net.shutdown(host: 1)
        net.run(for: 1_000_000) { net.client.state == .timeWait }
        #expect(net.client.state == .timeWait && net.client.counters.finWait2Timeouts == 0)
    }

    @Test("the peer's FIN before the timeout: TIME-WAIT as usual, the timer is withdrawn")
    func peerFinBeforeTimeout() {
        let net = TCPTestNetwork()
        #expect(net.establish(client: Self.configuration()))
        close(net)
        net.run(for: 1_000_000) { net.client.state == .finWait2 }
        net.advance(by: 2_000_000)
        net.shutdown(host: 1)
        net.run(for: 1_000_000) { net.client.state == .timeWait }
        #expect(net.client.state == .timeWait && net.client.finWait2Deadline == nil)
        net.run(for: 10_000_000) { net.client.state == .closed }
        #expect(net.client.closeReason == .normal && net.client.counters.finWait2Timeouts == 0)
        #expect(net.server.closeReason == .normal)
    }

    @Test("close() in FIN-WAIT-2 (after a half-close) starts the timer from the close")
    func closeAfterHalfClose() {
        let net = TCPTestNetwork()
        #expect(net.establish(client: Self.configuration()))
        net.shutdown(host: 0)
        net.run(for: 1_000_000) { net.client.state == .finWait2 }
        net.advance(by: 20_000_000)
        close(net)
        let closedAt = net.now
        #expect(net.client.finWait2Deadline == closedAt + 5_000_000)
        net.run(for: 10_000_000) { net.client.state == .closed }
        #expect(net.client.closeReason == .finWait2Timeout && net.now == closedAt + 5_000_000)
    }

    @Test("an orphan drops what arrives and keeps its window open; the peer's data does not restart the timer")
    func orphanDiscardsData() {
        let net = TCPTestNetwork()
        #expect(net.establish(client: Self.configuration()))
        net.write(host: 1, Array(repeating: 1, count: 3000))
        net.run(for: 1_000_000) { net.client.readableBytes == 3000 }
        close(net)
        #expect(net.client.readableBytes == 0)
        net.run(for: 1_000_000) { net.client.state == .finWait2 }
        let deadline = net.client.finWait2Deadline
        #expect(deadline != nil)
        for _ in 0..<4 {
            net.write(host: 1, Array(repeating: 2, count: 100_000))
            net.run(for: 500_000) { net.server.unacknowledgedBytes == 0 }
            #expect(net.server.unacknowledgedBytes == 0)
            #expect(net.client.readableBytes == 0)
        }
        #expect(net.client.finWait2Deadline == deadline)
        net.run(for: 10_000_000) { net.client.state == .closed }
        #expect(net.client.closeReason == .finWait2Timeout && net.now == deadline)
    }
}
