import FastDemux
import Testing
@testable import NetStack

/// Both directions of a bulk transfer: each side writes `total` bytes of
/// its pattern, reads and byte-compares the peer's, and half-closes when
/// done writing if `close` is set.
final class BulkApplication {
    let total: Int
    let close: Bool
    var sent = [0, 0]
    var received = [0, 0]
    var mismatches = 0
    var paused = [false, false]
    var scratch = [UInt8](repeating: 0, count: 64 * 1024)
    let seeds: [UInt64] = [0x1111, 0x2222]

    init(total: Int, close: Bool = true) {
        self.total = total
        self.close = close
    }

    var done: Bool { received[0] == total && received[1] == total }

    func pump(_ net: TCPTestNetwork) {
        for side in 0..<2 {
            guard !net.hosts[side].connections.isEmpty else { continue }
            let seed = seeds[side], peerSeed = seeds[1 - side]
            net.with(side, 0) { c, now, sink in
                while sent[side] < total && c.writableBytes > 0 {
                    let n = min(c.writableBytes, scratch.count, total - sent[side])
                    let base = sent[side]
                    scratch.withUnsafeMutableBytes { buf in
                        for i in 0..<n { buf[i] = patternByte(base + i, seed: seed) }
                    }
                    let w = scratch.withUnsafeBytes { c.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                    sent[side] += w
                }
                if close && sent[side] == total { c.shutdownWrite() }
                if !paused[side] {
                    while true {
                        let r = scratch.withUnsafeMutableBytes { c.read(into: $0) }
                        if r == 0 { break }
                        let base = received[side]
                        scratch.withUnsafeBytes { buf in
                            for i in 0..<r where buf[i] != patternByte(base + i, seed: peerSeed) { mismatches += 1 }
                        }
                        received[side] += r
                    }
                }
                c.output(now: now, sink: &sink)
            }
        }
    }
}

@Suite("TCP engine: bulk transfer")
struct TCPTransferTests {
    struct Channel: CustomTestStringConvertible, Sendable {
        var loss: Double
        var reorder: Double
        var duplicate: Double
        var testDescription: String { "loss \(loss), reorder \(reorder), duplicate \(duplicate)" }
    }

    @Test("16 MiB each way arrive intact", arguments: [
        Channel(loss: 0, reorder: 0, duplicate: 0),
        Channel(loss: 0.01, reorder: 0, duplicate: 0),
        Channel(loss: 0.05, reorder: 0, duplicate: 0),
        Channel(loss: 0, reorder: 0.1, duplicate: 0.01),
    ])
    func bulk(channel: Channel) {
        let net = TCPTestNetwork(seed: 42)
        net.recording = false
        #expect(net.establish())
        net.loss = channel.loss
        net.reorder = channel.reorder
        net.duplicate = channel.duplicate
        let app = BulkApplication(total: 16 << 20)
        net.application = app.pump
        let ok = net.run(for: 3_600_000_000, steps: 20_000_000) {
            app.done && net.client.state == .closed && net.server.state == .closed
        }
        #expect(ok, "received \(app.received), states \(net.client.state) \(net.server.state) \(String(describing: net.client.closeReason)) \(String(describing: net.server.closeReason)), t \(net.now), next \(String(describing: net.nextEvent)), client \(net.client.counters), server \(net.server.counters), c.una \(net.client.sndUna) nxt \(net.client.sndNxt) max \(net.client.sndMax) wnd \(net.client.sendWindow) cwnd \(net.client.congestionWindow) rto \(net.client.retransmissionTimeout)")
        #expect(app.mismatches == 0)
        #expect(app.received == [16 << 20, 16 << 20])
        let c = net.client.counters, s = net.server.counters
        if channel.loss > 0 {
            #expect(c.retransmissions > 0 && s.retransmissions > 0)
            #expect(c.fastRetransmits > 0 && s.fastRetransmits > 0)
            #expect(c.outOfOrderSegments > 0 && s.outOfOrderSegments > 0)
            #expect(c.duplicateAcksSent > 0)
        } else if channel.reorder > 0 {
            #expect(c.outOfOrderSegments > 0 && s.outOfOrderSegments > 0)
            #expect(c.duplicateSegments + s.duplicateSegments > 0)
        } else {
            #expect(c.retransmissions == 0 && s.retransmissions == 0)
        }
        #expect(net.client.closeReason == .normal && net.server.closeReason == .normal)
    }

    @Test("zero window: the reader stops, the sender probes with back-off, the reader resumes, all arrives")
    func zeroWindow() {
        let net = TCPTestNetwork(seed: 7)
        net.recording = false
        #expect(net.establish())
        let app = BulkApplication(total: 2 << 20, close: false)
        app.paused[1] = true
        net.application = app.pump
        // The server's 256 KiB buffer fills, the window closes.
        net.run(for: 2_000_000) { net.client.sendWindow == 0 }
        #expect(net.client.sendWindow == 0)
        #expect(net.server.readableBytes == 256 * 1024)
        net.advance(by: 20_000_000)
        let probes = net.client.counters.windowProbes
        #expect(probes >= 3 && probes < 40)  // backed off: not one per 500 ms
        #expect(net.client.state == .established)
        app.paused[1] = false
        let ok = net.run(for: 120_000_000) { app.received[1] == 2 << 20 }
        #expect(ok)
        #expect(app.mismatches == 0)
        #expect(net.server.counters[.outOfWindow] >= 1)  // the probes beyond the window
    }
}
