import FastDemux
import Testing
@testable import NetStack
import TestSupport

@Suite("TCP engine: SYN floods and hostile segments")
struct TCPHostileInputTests {
    @Test("a SYN flood beyond the SYN queue is refused and counted; entries expire after their retries")
    func synFlood() {
        let net = TCPTestNetwork()
        net.listen(port: 80, synQueue: 8)
        for port in 0..<100 {
            net.inject(rawSegment(sourcePort: UInt16(10000 + port), seq: UInt32(port) &* 7919, ack: 0, flags: .syn,
                                  options: [2, 4, 0x05, 0xb4], source: net.hosts[0].address, destination: net.hosts[1].address),
                       from: 0, to: 1)
        }
        let l = net.hosts[1].listener!
        #expect(l.synQueueDepth == 8)
        #expect(l.counters[.synQueueFull] == 92)
        #expect(net.queue.count == 8)  // one SYN-ACK per queued SYN, nothing for the refused
        #expect(net.queue.allSatisfy { $0.segment.header.flags == [.syn, .ack] })
        // Nobody answers: the SYN-ACKs are retransmitted, then the entries go.
        net.filter = { _ in false }
        net.run(for: 600_000_000)
        #expect(net.hosts[1].listener!.synQueueDepth == 0)
        #expect(net.hosts[1].listener!.counters.retransmissions == 8 * 6)
        // The queue has room again.
        net.filter = nil
        net.connect()
        #expect(net.run(for: 5_000_000) { net.hosts[1].connections.first?.state == .established })
    }

    @Test("a full accept queue drops the completing ACK and counts it; the handshake completes after accept()")
    func acceptQueueBound() {
        let net = TCPTestNetwork()
        net.listen(port: 80, acceptQueue: 2)
        net.hosts[1].autoAccept = false
        for p in 0..<3 { net.connect(port: UInt16(40000 + p)) }
        net.run(for: 500_000)
        #expect(net.hosts[1].listener!.acceptQueueDepth == 2)
        #expect(net.hosts[1].listener!.counters[.acceptQueueFull] == 1)
        #expect(net.hosts[1].listener!.synQueueDepth == 1)
        _ = net.hosts[1].listener!.accept()
        // The SYN-ACK retransmission brings a new ACK, which now fits.
        net.run(for: 5_000_000) { net.hosts[1].listener!.acceptQueueDepth == 2 }
        #expect(net.hosts[1].listener!.acceptQueueDepth == 2)
    }

    @Test("malformed headers are refused with their reason, never a crash")
    func malformed() {
        let a = IPAddress(ipv4: 0x0a00_0001), b = IPAddress(ipv4: 0x0a00_0002)
        func reason(_ bytes: [UInt8]) -> TCPDropReason? {
            bytes.withUnsafeBytes { raw -> TCPDropReason? in
                do throws(TCPDropReason) {
                    _ = try TCPHeader.parse(raw)
                    return nil
                } catch {
                    return error
                }
            }
        }
        let good = rawSegment(seq: 1, ack: 0, flags: .syn, options: [2, 4, 5, 0xb4], source: a, destination: b)
        #expect(reason(good) == nil)
        #expect(reason(Array(good[0..<10])) == .truncatedHeader)
        #expect(reason(rawSegment(seq: 1, ack: 0, flags: .ack, dataOffsetWords: 4, source: a, destination: b)) == .badDataOffset)
        #expect(reason(rawSegment(seq: 1, ack: 0, flags: .ack, dataOffsetWords: 15, source: a, destination: b)) == .badDataOffset)
        // MSS option whose length runs past the header.
        #expect(reason(rawSegment(seq: 1, ack: 0, flags: .syn, dataOffsetWords: 6, options: [1, 1, 2, 4],
                                  source: a, destination: b)) == .optionOverrun)
        // A length byte missing at the end of the options.
        #expect(reason(rawSegment(seq: 1, ack: 0, flags: .syn, options: [1, 1, 1, 8], source: a, destination: b)) == .optionOverrun)
        // Zero-length and one-length options.
        #expect(reason(rawSegment(seq: 1, ack: 0, flags: .syn, options: [5, 0, 0, 0], source: a, destination: b)) == .badOptionLength)
        #expect(reason(rawSegment(seq: 1, ack: 0, flags: .syn, options: [30, 1, 0, 0], source: a, destination: b)) == .badOptionLength)
        // A known option with the wrong length is skipped, not fatal (RFC 7323 §2.2).
        let odd = rawSegment(seq: 1, ack: 0, flags: .syn, options: [3, 4, 7, 0], source: a, destination: b)
        let parsed = odd.withUnsafeBytes { try? TCPHeader.parse($0) }
        #expect(parsed?.header.options.windowScale == nil)
        // Checksums.
        #expect(good.withUnsafeBytes { TCPHeader.verifyChecksum($0, source: a, destination: b) })
        let bad = rawSegment(seq: 1, ack: 0, flags: .syn, source: a, destination: b, badChecksum: true)
        #expect(!bad.withUnsafeBytes { TCPHeader.verifyChecksum($0, source: a, destination: b) })
    }

    @Test("hostile segments at an established connection are dropped and counted; the transfer is unharmed")
    func hostileAtConnection() {
        let net = TCPTestNetwork(seed: 3)
        #expect(net.establish())
        let s = net.server
        let src = net.hosts[0].address, dst = net.hosts[1].address
        let hostile: [[UInt8]] = [
            rawSegment(seq: s.rcvNxt, ack: s.sndNxt, flags: .ack, dataOffsetWords: 3, payload: [1, 2, 3], source: src, destination: dst),
            rawSegment(seq: s.rcvNxt, ack: s.sndNxt, flags: .ack, dataOffsetWords: 15, source: src, destination: dst),
            rawSegment(seq: s.rcvNxt, ack: s.sndNxt, flags: .ack, options: [8, 10, 0, 0], source: src, destination: dst),
            rawSegment(seq: s.rcvNxt, ack: s.sndNxt, flags: .ack, options: [0x13, 0, 1, 1], source: src, destination: dst),
            rawSegment(seq: s.rcvNxt, ack: s.sndNxt, flags: .ack, payload: [1, 2], source: src, destination: dst, badChecksum: true),
            // Sequence numbers far outside the window, both sides.
            rawSegment(seq: s.rcvNxt &+ 0x4000_0000, ack: s.sndNxt, flags: .ack, payload: [UInt8](repeating: 1, count: 100),
                       source: src, destination: dst),
            rawSegment(seq: s.rcvNxt &- 0x4000_0000, ack: s.sndNxt, flags: .ack, payload: [UInt8](repeating: 1, count: 100),
                       source: src, destination: dst),
            // FIN far ahead, data with every control bit.
            rawSegment(seq: s.rcvNxt &+ 0x7000_0000, ack: s.sndNxt, flags: [.fin, .ack], source: src, destination: dst),
            rawSegment(seq: s.rcvNxt &+ 1, ack: s.sndNxt &+ 0x7fff_0000, flags: TCPFlags(rawValue: 0x1ff), payload: [9],
                       source: src, destination: dst),
        ]
        for h in hostile { net.inject(h, from: 0, to: 1) }
        let d = net.hosts[1].inputDrops
        #expect(d[.badDataOffset] == 2)
        #expect(d[.optionOverrun] == 1)
        #expect(d[.badOptionLength] == 1)
        #expect(d[.badChecksum] == 1)
        #expect(net.server.counters[.outOfWindow] == 3)
        #expect(net.server.state == .established)  // the all-flags segment: an in-window RST, challenged
        #expect(net.server.counters[.resetChallenged] == 1)
        #expect(net.server.readableBytes == 0)
        // Random bytes: parse, and if they parse, feed them; never a crash.
        var rng = SplitMix64(seed: 99)
        for _ in 0..<20_000 {
            let n = Int(rng.next() % 80)
            var bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if n >= 4 && rng.next() % 2 == 0 { bytes[0] = 0x9c; bytes[1] = 0x40; bytes[2] = 0; bytes[3] = 80 }  // our ports
            bytes.withUnsafeBytes { raw in
                guard let p = try? TCPHeader.parse(raw) else { return }
                var sink = CaptureSink()
                var c = net.server
                c.receive(p.header, payload: UnsafeRawBufferPointer(rebasing: raw[p.payloadOffset...]), now: net.now, sink: &sink)
            }
        }
        // The real connection still works.
        let app = BulkApplication(total: 256 * 1024)
        net.application = app.pump
        #expect(net.run(for: 60_000_000) { app.done })
        #expect(app.mismatches == 0)
    }

    @Test("out-of-order data is held and merged; the hole's arrival delivers everything")
    func reassembly() {
        let net = TCPTestNetwork()
        #expect(net.establish())
        let s = net.server, src = net.hosts[0].address, dst = net.hosts[1].address
        let base = s.rcvNxt
        func seg(_ off: Int, _ len: Int) -> [UInt8] {
            rawSegment(seq: base &+ UInt32(off), ack: s.sndNxt, flags: .ack,
                       payload: (off..<off + len).map { UInt8(truncatingIfNeeded: $0) }, source: src, destination: dst)
        }
        // 0..<100 missing; 300..<400, 100..<200, 350..<500 (overlap), 200..<300.
        for (o, l) in [(300, 100), (100, 100), (350, 150), (200, 100)] { net.inject(seg(o, l), from: 0, to: 1) }
        #expect(net.server.readableBytes == 0)
        #expect(net.server.reassembly.count == 1)
        #expect(net.server.counters.duplicateAcksSent == 4)
        net.inject(seg(0, 100), from: 0, to: 1)
        #expect(net.server.readableBytes == 500)
        #expect(net.server.reassembly.isEmpty)
        var out = [UInt8](repeating: 0, count: 500)
        let n = out.withUnsafeMutableBytes { net.hosts[1].connections[0].read(into: $0) }
        #expect(n == 500 && out == (0..<500).map { UInt8(truncatingIfNeeded: $0) })
        // The ranges are bounded: 17 disjoint pieces need 17 ranges, the 17th is refused.
        let base2 = net.server.rcvNxt
        for k in 0..<17 {
            net.inject(rawSegment(seq: base2 &+ UInt32(10 + 20 * k), ack: s.sndNxt, flags: .ack, payload: [1, 2, 3],
                                  source: src, destination: dst), from: 0, to: 1)
        }
        #expect(net.server.counters[.reassemblyRangesFull] == 1)
    }
}
