import FastDemux
import Testing
@testable import NetStack

@Suite("TCP engine: close in every order")
struct TCPCloseTests {
    @Test("active close: FIN-WAIT-1, FIN-WAIT-2, TIME-WAIT for 2*MSL; passive side CLOSE-WAIT, LAST-ACK")
    func activeClose() {
        let net = TCPTestNetwork()
        #expect(net.establish())
        net.shutdown(host: 0)
        #expect(net.client.state == .finWait1)
        net.run(for: 1_000_000) { net.server.state == .closeWait && net.client.state == .finWait2 }
        #expect(net.server.state == .closeWait && net.client.state == .finWait2)
        #expect(net.server.atEndOfFile)
        net.shutdown(host: 1)
        #expect(net.server.state == .lastAck)
        net.run(for: 1_000_000) { net.server.state == .closed }
        #expect(net.server.closeReason == .normal)
        #expect(net.client.state == .timeWait)
        let leaves = net.client.timeWaitDeadline ?? 0
        // TIME-WAIT lasts 2*MSL (configured MSL 1 s here).
        net.run(for: 1_900_000) { net.client.state == .closed }
        #expect(leaves > net.now)
        #expect(net.client.state == .timeWait)
        net.run(for: 1_000_000) { net.client.state == .closed }
        #expect(net.client.state == .closed && net.client.closeReason == .normal)
        #expect(net.now == leaves)
        #expect(net.client.nextDeadline == nil && net.server.nextDeadline == nil)
    }

    @Test("the default TIME-WAIT is 2*MSL with the RFC's MSL of 2 minutes")
    func defaultTimeWait() {
        #expect(TCPConfiguration().maximumSegmentLifetime == 120_000_000)
        var cc = TCPTestNetwork.testConfiguration()
        cc.maximumSegmentLifetime = TCPConfiguration().maximumSegmentLifetime
        let net = TCPTestNetwork()
        #expect(net.establish(client: cc))
        net.shutdown(host: 0)
        net.run(for: 1_000_000) { net.client.state == .finWait2 }
        net.shutdown(host: 1)
        net.run(for: 1_000_000) { net.client.state == .timeWait }
        #expect(net.client.state == .timeWait)
        #expect(net.client.timeWaitDeadline == net.now + 240_000_000)
    }

    @Test("passive close: the server closes first")
    func passiveClose() {
        let net = TCPTestNetwork()
        #expect(net.establish())
        net.shutdown(host: 1)
        net.run(for: 1_000_000) { net.client.state == .closeWait && net.server.state == .finWait2 }
        #expect(net.client.state == .closeWait && net.server.state == .finWait2)
        net.shutdown(host: 0)
        net.run(for: 5_000_000) { net.client.state == .closed && net.server.state == .closed }
        #expect(net.client.closeReason == .normal && net.server.closeReason == .normal)
    }

    @Test("simultaneous close: both FINs cross, CLOSING, then TIME-WAIT on both sides")
    func simultaneousClose() {
        let net = TCPTestNetwork()
        #expect(net.establish())
        net.shutdown(host: 0)
        net.shutdown(host: 1)
        #expect(net.client.state == .finWait1 && net.server.state == .finWait1)
        var sawClosing = false
        net.run(for: 1_000_000) {
            sawClosing = sawClosing || net.client.state == .closing
            return net.client.state == .timeWait && net.server.state == .timeWait
        }
        #expect(sawClosing)
        #expect(net.client.state == .timeWait && net.server.state == .timeWait)
        net.run(for: 5_000_000) { net.client.state == .closed && net.server.state == .closed }
        #expect(net.client.closeReason == .normal && net.server.closeReason == .normal)
    }

    @Test("half-close: the client shuts down writing, the server still sends 1 MiB, then closes")
    func halfClose() {
        let net = TCPTestNetwork()
        #expect(net.establish())
        net.write(host: 0, [UInt8](repeating: 9, count: 1000))
        net.shutdown(host: 0)
        net.run(for: 1_000_000) { net.server.state == .closeWait }
        #expect(net.server.readableBytes == 1000 && net.server.atEndOfFile == false)
        net.with(1, 0) { c, _, _ in _ = c.discard(1000) }
        #expect(net.server.atEndOfFile)
        // The server keeps sending in CLOSE-WAIT; the client keeps receiving in FIN-WAIT-2.
        let app = BulkApplication(total: 1 << 20, close: false)
        app.sent[0] = 1 << 20  // the client writes nothing more
        app.received[1] = 1 << 20
        net.application = app.pump
        #expect(net.run(for: 30_000_000) { app.received[0] == 1 << 20 })
        #expect(app.mismatches == 0)
        #expect(net.client.state == .finWait2)
        net.application = nil
        net.shutdown(host: 1)
        #expect(net.run(for: 10_000_000) { net.client.state == .closed && net.server.state == .closed })
    }

    @Test("a lost FIN is retransmitted; a retransmitted FIN in TIME-WAIT is ACKed again")
    func lostFin() {
        let net = TCPTestNetwork()
        #expect(net.establish())
        var finsDropped = 0
        net.filter = { s in
            if s.header.flags.contains(.fin) && finsDropped < 1 { finsDropped += 1; return false }
            return true
        }
        net.shutdown(host: 0)
        net.run(for: 5_000_000) { net.server.state == .closeWait }
        #expect(net.server.state == .closeWait)
        #expect(net.client.counters.timeouts >= 1)
        // Lose the final ACK: the server retransmits its FIN into our TIME-WAIT.
        var acksDropped = 0
        // Unowned: the network holds its filter (a strong capture would be a
        // cycle, which LeakSanitizer reports).
        net.filter = { [unowned net] s in
            if s.endpoints.local == net.hosts[0].address && s.header.flags == .ack && acksDropped < 1 {
                acksDropped += 1
                return false
            }
            return true
        }
        net.shutdown(host: 1)
        #expect(net.run(for: 10_000_000) { net.server.state == .closed })
        #expect(acksDropped == 1)
        #expect(net.server.counters.retransmissions >= 1)
    }
}
