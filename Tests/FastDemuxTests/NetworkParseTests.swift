import Testing
import FastDemux
import TestSupport

/// `parseNetwork`: fragments and ICMP described after the same checks;
/// everything else exactly as `parse`.
@Suite struct NetworkParseTests {
    func network(_ frame: [UInt8], _ link: LinkType = .ethernet) -> NetworkParseResult {
        frame.withUnsafeBytes { PacketParser().parseNetwork($0, linkType: link) }
    }

    func eth4(_ ip: [UInt8]) -> [UInt8] { TestPacket.ethernet(type: 0x0800, payload: ip) }
    func eth6(_ ip: [UInt8]) -> [UInt8] { TestPacket.ethernet(type: 0x86DD, payload: ip) }

    @Test func ipv4FragmentIsDescribed() throws {
        // MF set, offset 185 × 8 = 1480, DF clear; id 0x1234 (TestPacket's).
        let frame = eth4(TestPacket.ipv4(proto: 17, fragment: 0x2000 | 185, payload: [UInt8](repeating: 9, count: 64)))
        #expect(TestPacket.parse(frame).dropReason == .ipv4Fragment)
        guard case .network(let n) = network(frame) else { Issue.record("not described"); return }
        let f = try #require(n.fragment)
        #expect(n.source == IPAddress("10.0.0.1") && n.destination == IPAddress("192.168.7.2"))
        #expect(n.networkOffset == 14 && n.upperLayerOffset == 34 && n.end == 14 + 84)
        #expect(n.upperLayerProtocol == 17 && n.upperLayerLength == 64 && !n.isTruncated)
        #expect(f.identification == 0x1234 && f.offset == 1480 && f.moreFragments && !f.dontFragment)
        #expect(f.headerOffset == 14 && f.nextHeaderFieldOffset == 14 + 9)
    }

    @Test func ipv4LastFragmentWithDF() throws {
        let frame = eth4(TestPacket.ipv4(proto: 6, fragment: 0x4000 | 3, payload: [1, 2, 3, 4, 5, 6, 7, 8]))
        guard case .network(let n) = network(frame), let f = n.fragment else { Issue.record("not described"); return }
        #expect(f.offset == 24 && !f.moreFragments && f.dontFragment && n.upperLayerProtocol == 6)
    }

    @Test func ipv6FragmentIsDescribedBehindUnfragmentableHeaders() throws {
        // IPv6, hop-by-hop (8 bytes), Fragment header (offset 1448, M).
        let fh = TestPacket.fragmentHeader(next: 17, offset: 181, more: true)
        let frame = eth6(TestPacket.ipv6(next: 0, payload: TestPacket.ext(next: 44) + fh + [UInt8](repeating: 1, count: 40)))
        #expect(TestPacket.parse(frame).dropReason == .ipv6Fragment)
        guard case .network(let n) = network(frame), let f = n.fragment else { Issue.record("not described"); return }
        #expect(n.source.family == .ipv6 && n.networkOffset == 14)
        #expect(f.headerOffset == 14 + 48 && n.upperLayerOffset == 14 + 56 && n.end == 14 + 40 + 56)
        #expect(f.nextHeaderFieldOffset == 14 + 40)  // the hop-by-hop header's Next Header
        #expect(f.identification == 0xabcd && f.offset == 1448 && f.moreFragments && n.upperLayerProtocol == 17)
        // Directly after the IPv6 header: the field is the header's own.
        let direct = eth6(TestPacket.ipv6(next: 44, payload: fh + [1, 2, 3, 4, 5, 6, 7, 8]))
        guard case .network(let d) = network(direct) else { Issue.record("not described"); return }
        #expect(d.fragment?.nextHeaderFieldOffset == 14 + 6)
    }

    @Test func icmpIsDescribed() {
        let echo: [UInt8] = [8, 0, 0, 0, 0, 1, 0, 2]
        let v4 = eth4(TestPacket.ipv4(proto: 1, payload: echo))
        #expect(TestPacket.parse(v4).dropReason == .notTCPUDP)
        guard case .network(let n) = network(v4) else { Issue.record("ICMP not described"); return }
        #expect(n.fragment == nil && n.upperLayerProtocol == 1 && n.upperLayerOffset == 34 && n.end == 42)
        let v6 = eth6(TestPacket.ipv6(next: 60, payload: TestPacket.ext(next: 58) + [128, 0, 0, 0, 0, 1, 0, 2]))
        guard case .network(let m) = network(v6) else { Issue.record("ICMPv6 not described"); return }
        #expect(m.fragment == nil && m.upperLayerProtocol == 58 && m.upperLayerOffset == 14 + 48)
        // An atomic fragment (RFC 6946) carrying ICMPv6 is a whole message.
        let atomic = eth6(TestPacket.ipv6(next: 44, payload: TestPacket.fragmentHeader(next: 58, offset: 0, more: false)
            + [128, 0, 0, 0, 0, 1, 0, 2]))
        guard case .network(let a) = network(atomic) else { Issue.record("atomic not described"); return }
        #expect(a.fragment == nil && a.upperLayerOffset == 14 + 48)
    }

    @Test func otherProtocolsStayDropped() {
        #expect(network(eth4(TestPacket.ipv4(proto: 47, payload: [0, 0, 0, 0]))).isDropped(.notTCPUDP))
        #expect(network(eth6(TestPacket.ipv6(next: 59, payload: [0, 0, 0, 0]))).isDropped(.notTCPUDP))
    }

    @Test func earlierChecksStillWin() {
        // Martian source, bad header checksum, bad options: dropped as by
        // parse, not described.
        let martian = eth4(TestPacket.ipv4(proto: 17, src: [127, 0, 0, 1], fragment: 0x2000, payload: [0, 0, 0, 0, 0, 0, 0, 0]))
        #expect(network(martian).isDropped(.martianSource))
        var bad = eth4(TestPacket.ipv4(proto: 1, payload: [8, 0, 0, 0, 0, 0, 0, 0]))
        bad[14 + 10] ^= 1
        #expect(network(bad).isDropped(.badIPv4HeaderChecksum))
        let multicast = eth6(TestPacket.ipv6(next: 58, dst: [0xff, 0x02] + [UInt8](repeating: 0, count: 13) + [1],
                                             payload: [128, 0, 0, 0, 0, 0, 0, 0]))
        #expect(network(multicast).isDropped(.multicastDestination))
        let hbhLate = eth6(TestPacket.ipv6(next: 60, payload: TestPacket.ext(next: 0) + TestPacket.ext(next: 44)
            + TestPacket.fragmentHeader(next: 17, offset: 1, more: true)))
        #expect(network(hbhLate).isDropped(.ipv6HopByHopNotFirst))
    }

    /// On every frame of the committed captures, parseNetwork agrees with
    /// parse: the same TCP/UDP packets and the same drops, except that
    /// fragment and not-TCP/UDP drops may be described instead.
    @Test func agreesWithParseOnTheCaptures() throws {
        var frames = 0, described = 0
        for path in fuzzSeedCaptures() {
            for input in try parserFuzzInputs(fromCapture: path) where input[1] == 0 {
                let link = ParserFuzzer.linkTypes[Int(input[0])]
                let extra = Int(input[2]) << 8 | Int(input[3])
                let frame = Array(input[4...])
                let wire = frame.count + extra
                let (plain, net) = frame.withUnsafeBytes {
                    (PacketParser().parse($0, linkType: link, wireLength: wire),
                     PacketParser().parseNetwork($0, linkType: link, wireLength: wire))
                }
                frames += 1
                switch (plain, net) {
                case (.packet(let p), .transport(let q)):
                    #expect(p.flow == q.flow && p.payloadOffset == q.payloadOffset && p.payloadLength == q.payloadLength
                            && p.tcp == q.tcp && p.isTruncated == q.isTruncated)
                case (.dropped(let r), .dropped(let s)):
                    #expect(r == s)
                case (.dropped(let r), .network):
                    described += 1
                    #expect(r == .ipv4Fragment || r == .ipv6Fragment || r == .notTCPUDP)
                default:
                    Issue.record("parse \(plain) vs parseNetwork \(net)")
                }
            }
        }
        #expect(frames > 400)
        _ = described  // the committed captures hold no fragment or ICMP frame today
    }
}

extension NetworkParseResult {
    func isDropped(_ reason: DropReason) -> Bool {
        if case .dropped(let r) = self { return r == reason }
        return false
    }
}
