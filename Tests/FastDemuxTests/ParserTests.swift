import Testing
import TestSupport
@testable import FastDemux

private typealias P = TestPacket

private func delivered(_ r: ParseResult, sourceLocation: SourceLocation = #_sourceLocation) -> ParsedPacket? {
    guard case .packet(let p) = r else {
        Issue.record("expected a delivered packet, got \(r.dropReason!.name)", sourceLocation: sourceLocation)
        return nil
    }
    return p
}

@Suite struct EthernetIPv4Tests {
    @Test func tcpOverIPv4() throws {
        let frame = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, payload: P.tcp(payload: [1, 2, 3, 4, 5])))
        let p = try #require(delivered(P.parse(frame)))
        #expect(p.flow == FlowKey(transport: .tcp, source: IPAddress("10.0.0.1")!, sourcePort: 1234,
                                  destination: IPAddress("192.168.7.2")!, destinationPort: 80))
        #expect(p.networkOffset == 14)
        #expect(p.transportOffset == 34)
        #expect(p.payloadOffset == 54)
        #expect(p.payloadLength == 5)
        #expect(p.capturedPayloadLength == 5)
        #expect(p.tcp == TCPSegmentInfo(sequenceNumber: 0x0102_0304, acknowledgmentNumber: 0x0a0b_0c0d,
                                        flags: [.psh, .ack], window: 0xfedc))
        #expect(!p.isTruncated)
    }

    @Test func udpOverIPv4() throws {
        let frame = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 17, payload: P.udp(payload: [9, 9, 9])))
        let p = try #require(delivered(P.parse(frame)))
        #expect(p.flow.transport == .udp)
        #expect(p.flow.sourcePort == 5353 && p.flow.destinationPort == 53)
        #expect(p.payloadOffset == 42 && p.payloadLength == 3)
        #expect(p.tcp == nil)
    }

    @Test func ipv4OptionsAreSkipped() throws {
        let options: [UInt8] = [0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00]  // router alert, NOPs, EOL
        let frame = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, options: options, payload: P.tcp()))
        let p = try #require(delivered(P.parse(frame)))
        #expect(p.transportOffset == 14 + 28)
        #expect(p.flow.destinationPort == 80)
    }

    @Test(arguments: [
        [(UInt16(0x8100), UInt16(5))],
        [(UInt16(0x88a8), UInt16(100)), (UInt16(0x8100), UInt16(5))],
        [(UInt16(0x9100), UInt16(1)), (UInt16(0x88a8), UInt16(2)), (UInt16(0x8100), UInt16(3))],
    ])
    func vlanTags(_ tags: [(UInt16, UInt16)]) throws {
        let frame = P.ethernet(type: 0x0800, tags: tags.map { (tpid: $0.0, tci: $0.1) },
                               payload: P.ipv4(proto: 17, payload: P.udp()))
        let p = try #require(delivered(P.parse(frame)))
        #expect(p.networkOffset == 14 + 4 * tags.count)
        #expect(p.flow.transport == .udp)
    }

    @Test func truncatedVLANTag() {
        let frame = P.ethernet(type: 0x8100, payload: [0, 5])
        #expect(P.parse(frame).dropReason == .truncatedEthernet)
    }

    @Test func nonIPEtherTypesAreNotDelivered() {
        let arp = P.ethernet(type: 0x0806, payload: [UInt8](repeating: 0, count: 28))
        #expect(P.parse(arp).dropReason == .notIP)
        let llc = P.ethernet(type: 46, payload: [0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00] + P.ipv4(proto: 6, payload: P.tcp()))
        #expect(P.parse(llc).dropReason == .notIP)
    }

    @Test func icmpAndTunnelsAreNotDelivered() {
        // ICMP port unreachable quoting a UDP header: not that flow's packet.
        let quoted = P.ipv4(proto: 17, src: P.v4b, dst: P.v4a, payload: P.udp())
        let icmp = P.ipv4(proto: 1, payload: [3, 3, 0, 0, 0, 0, 0, 0] + quoted)
        #expect(P.parse(P.ethernet(type: 0x0800, payload: icmp)).dropReason == .notTCPUDP)
        for proto: UInt8 in [4, 41, 47, 132] {  // IP-in-IP, 6in4, GRE, SCTP
            let inner = P.ipv4(proto: 6, payload: P.tcp())
            let frame = P.ethernet(type: 0x0800, payload: P.ipv4(proto: proto, payload: inner))
            #expect(P.parse(frame).dropReason == .notTCPUDP, "protocol \(proto)")
        }
        #expect(P.parse(P.ethernet(type: 0x0800, payload: P.ipv4(proto: 50, payload: [0, 0, 0, 1, 0, 0, 0, 1]))).dropReason == .ipsec)
        #expect(P.parse(P.ethernet(type: 0x0800, payload: P.ipv4(proto: 51, payload: P.ext(next: 6) + P.tcp()))).dropReason == .ipsec)
    }

    @Test func firstFragmentIsNotAWholeDatagram() {
        // UDP length says 1000 bytes, this first fragment holds 24: no
        // reassembly yet, so it must not reach a socket.
        let frame = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 17, fragment: 0x2000,
                                                             payload: P.udp(length: 1000, payload: [UInt8](repeating: 7, count: 16))))
        #expect(P.parse(frame).dropReason == .ipv4Fragment)
    }

    @Test func laterFragmentsAreDropped() {
        for fragment: UInt16 in [0x2001, 0x0010, 0x1fff] {
            let frame = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, fragment: fragment, payload: P.tcp()))
            #expect(P.parse(frame).dropReason == .ipv4Fragment)
        }
    }

    @Test func badVersionAndHeaderLength() {
        let v5 = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, version: 5, payload: P.tcp()))
        #expect(P.parse(v5).dropReason == .badIPv4Version)
        let ihl4 = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, ihl: 4, payload: P.tcp()))
        #expect(P.parse(ihl4).dropReason == .badIPv4HeaderLength)
        // IHL 15 (60 bytes) in a 40-byte packet.
        let ihl15 = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, ihl: 15, payload: [UInt8](repeating: 0, count: 20)))
        #expect(P.parse(ihl15).dropReason == .truncatedIPv4)
    }

    @Test func badTotalLength() {
        let short = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, totalLength: 19, payload: P.tcp()))
        #expect(P.parse(short).dropReason == .badIPv4TotalLength)
        let options = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, options: [1, 1, 1, 0], totalLength: 22, payload: P.tcp()))
        #expect(P.parse(options).dropReason == .badIPv4TotalLength)
        let long = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, totalLength: 200, payload: P.tcp()))
        #expect(P.parse(long).dropReason == .badIPv4TotalLength)
    }

    @Test func totalLengthZeroUsesTheFrame() throws {
        // TSO / BIG TCP captures carry total length 0: decode with the frame length, as tshark does.
        let frame = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, totalLength: 0, payload: P.tcp(payload: [UInt8](repeating: 1, count: 100))))
        let p = try #require(delivered(P.parse(frame)))
        #expect(p.payloadLength == 100)
    }

    @Test func ethernetPaddingIsNotPayload() throws {
        // A 1-byte UDP payload padded to the 60-byte Ethernet minimum.
        let ip = P.ipv4(proto: 17, payload: P.udp(payload: [0x41]))
        let frame = P.ethernet(type: 0x0800, payload: ip + [UInt8](repeating: 0, count: 60 - 14 - ip.count))
        let p = try #require(delivered(P.parse(frame)))
        #expect(p.payloadLength == 1 && p.capturedPayloadLength == 1)
        let tip = P.ipv4(proto: 6, payload: P.tcp())
        let tframe = P.ethernet(type: 0x0800, payload: tip + [UInt8](repeating: 0xee, count: 6))
        let t = try #require(delivered(P.parse(tframe)))
        #expect(t.payloadLength == 0 && t.capturedPayloadLength == 0)
    }

    @Test func snaplenTruncationAtEveryLength() {
        // Captured prefixes of a full frame (wire length = full length):
        // each layer's header missing gives that layer's reason; a complete
        // header set is delivered, marked truncated.
        let full = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, payload: P.tcp(payload: [UInt8](repeating: 3, count: 40))))
        for n in 0...full.count {
            let r = P.parse(Array(full.prefix(n)), wire: full.count)
            switch n {
            case ..<14: #expect(r.dropReason == .truncatedEthernet, "\(n)")
            case 14..<34: #expect(r.dropReason == .truncatedIPv4, "\(n)")
            case 34..<54: #expect(r.dropReason == .truncatedTCP, "\(n)")
            default:
                #expect(r.packet?.isTruncated == (n < full.count), "\(n)")
                #expect(r.packet?.capturedPayloadLength == n - 54, "\(n)")
                #expect(r.packet?.payloadLength == 40, "\(n)")
            }
        }
    }

    @Test func shortFramesAtEveryLength() {
        // The same prefixes as whole frames (wire length = captured): the
        // IPv4 total length now exceeds the frame.
        let full = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 17, payload: P.udp(payload: [1, 2, 3])))
        for n in 0..<full.count {
            let r = P.parse(Array(full.prefix(n)))
            switch n {
            case ..<14: #expect(r.dropReason == .truncatedEthernet, "\(n)")
            case 14..<34: #expect(r.dropReason == .truncatedIPv4, "\(n)")
            default: #expect(r.dropReason == .badIPv4TotalLength, "\(n)")
            }
        }
    }
}

@Suite struct TransportTests {
    @Test func tcpDataOffset() throws {
        for doff: UInt8 in [0, 4] {
            let f = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, payload: P.tcp(dataOffset: doff)))
            #expect(P.parse(f).dropReason == .badTCPDataOffset)
        }
        // Data offset 15 (60 bytes) in a 30-byte segment.
        let past = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, payload: P.tcp(dataOffset: 15, payload: [UInt8](repeating: 0, count: 10))))
        #expect(P.parse(past).dropReason == .badTCPDataOffset)
        // With options: payload starts after them.
        let opts = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, payload: P.tcp(options: [2, 4, 5, 0xb4, 1, 1, 4, 2], payload: [7])))
        let p = try #require(delivered(P.parse(opts)))
        #expect(p.payloadOffset == 14 + 20 + 28 && p.payloadLength == 1)
    }

    @Test func truncatedTCPAndUDP() {
        let t = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, payload: Array(P.tcp().prefix(19))))
        #expect(P.parse(t).dropReason == .truncatedTCP)
        let u = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 17, payload: Array(P.udp().prefix(7))))
        #expect(P.parse(u).dropReason == .truncatedUDP)
    }

    @Test func udpLength() throws {
        for len in [0, 7] {
            let f = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 17, payload: P.udp(length: len, payload: [1, 2])))
            #expect(P.parse(f).dropReason == .badUDPLength, "\(len)")
        }
        let long = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 17, payload: P.udp(length: 11, payload: [1, 2])))
        #expect(P.parse(long).dropReason == .badUDPLength)
        // Shorter than the IP payload: the rest is not UDP payload.
        let short = P.ethernet(type: 0x0800, payload: P.ipv4(proto: 17, payload: P.udp(length: 9, payload: [1, 2, 3])))
        let p = try #require(delivered(P.parse(short)))
        #expect(p.payloadLength == 1 && p.capturedPayloadLength == 1)
    }
}

@Suite struct IPv6Tests {
    @Test func tcpAndUDPOverIPv6() throws {
        let t = try #require(delivered(P.parse(P.ethernet(type: 0x86dd, payload: P.ipv6(next: 6, payload: P.tcp(payload: [1]))))))
        #expect(t.flow.source == IPAddress("2001:db8::1")!)
        #expect(t.flow.destination == IPAddress("2001:db8::abc")!)
        #expect(t.flow.family == .ipv6)
        #expect(t.transportOffset == 54 && t.payloadLength == 1)
        let u = try #require(delivered(P.parse(P.ethernet(type: 0x86dd, payload: P.ipv6(next: 17, payload: P.udp(checksum: 0xbeef))))))
        #expect(u.flow.transport == .udp)
    }

    @Test func extensionHeaderChain() throws {
        // Hop-by-hop, routing (type 0, no segments left), destination
        // options, atomic fragment, UDP.
        let chain = P.ext(next: 43, lengthUnits: 0) + P.ext(next: 60, lengthUnits: 2)
            + P.ext(next: 44) + P.fragmentHeader(next: 17, offset: 0, more: false)
        let frame = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 0, payload: chain + P.udp(checksum: 0xbeef, payload: [1, 2, 3, 4])))
        let p = try #require(delivered(P.parse(frame)))
        #expect(p.transportOffset == 14 + 40 + chain.count)
        #expect(p.flow.destinationPort == 53)
        // The same chain ending in a first fragment: not delivered.
        let first = P.ext(next: 43, lengthUnits: 0) + P.ext(next: 60, lengthUnits: 2)
            + P.ext(next: 44) + P.fragmentHeader(next: 17, offset: 0, more: true)
        let ff = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 0, payload: first + P.udp(length: 500, payload: [1, 2, 3, 4])))
        #expect(P.parse(ff).dropReason == .ipv6Fragment)
    }

    @Test func atomicFragmentIsAWholeDatagram() throws {
        let frame = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 44, payload: P.fragmentHeader(next: 17, offset: 0, more: false) + P.udp(checksum: 0xbeef, payload: [1, 2])))
        let p = try #require(delivered(P.parse(frame)))
        #expect(p.payloadLength == 2)
        // ... so its UDP length is checked in full.
        let bad = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 44, payload: P.fragmentHeader(next: 17, offset: 0, more: false) + P.udp(length: 50, payload: [1, 2])))
        #expect(P.parse(bad).dropReason == .badUDPLength)
    }

    @Test func laterFragmentIsDropped() {
        let frame = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 44, payload: P.fragmentHeader(next: 6, offset: 185, more: false) + P.tcp()))
        #expect(P.parse(frame).dropReason == .ipv6Fragment)
    }

    @Test func chainEnds() {
        let cases: [(UInt8, [UInt8], DropReason)] = [
            (51, P.ext(next: 6, lengthUnits: 1) + P.tcp(), .ipsec),  // AH
            (50, [0, 0, 0, 1, 0, 0, 0, 2] + P.tcp(), .ipsec),        // ESP
            (59, P.tcp(), .notTCPUDP),                                // no next header
            (58, [1, 4, 0, 0, 0, 0, 0, 0] + P.ipv6(next: 6, payload: P.tcp()), .notTCPUDP),  // ICMPv6 error quoting TCP
            (41, P.ipv6(next: 6, payload: P.tcp()), .notTCPUDP),      // IPv6-in-IPv6
            (4, P.ipv4(proto: 6, payload: P.tcp()), .notTCPUDP),      // IPv4-in-IPv6
        ]
        for (next, payload, reason) in cases {
            #expect(P.parse(P.ethernet(type: 0x86dd, payload: P.ipv6(next: next, payload: payload))).dropReason == reason, "\(next)")
        }
        let dstThenNone = P.ipv6(next: 60, payload: P.ext(next: 59))
        #expect(P.parse(P.ethernet(type: 0x86dd, payload: dstThenNone)).dropReason == .notTCPUDP)
    }

    @Test func badExtensionHeaders() {
        // Announces 3 * 8 + 8 bytes, payload holds 16.
        let long = P.ipv6(next: 60, payload: [6, 3] + [UInt8](repeating: 0, count: 14))
        #expect(P.parse(P.ethernet(type: 0x86dd, payload: long)).dropReason == .badIPv6Extension)
        // Payload length ends before the next header's first two bytes.
        let cut = P.ipv6(next: 0, payloadLength: 8, payload: P.ext(next: 60) + P.ext(next: 6) + P.tcp())
        #expect(P.parse(P.ethernet(type: 0x86dd, payload: cut)).dropReason == .badIPv6Extension)
        // A chain longer than the walk bound.
        var chain: [UInt8] = []
        for _ in 0..<PacketParser.maxIPv6ExtensionHeaders { chain += P.ext(next: 60) }
        let endless = P.ipv6(next: 60, payload: chain + P.tcp())
        #expect(P.parse(P.ethernet(type: 0x86dd, payload: endless)).dropReason == .badIPv6Extension)
        // Snaplen cut inside the chain.
        let full = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 60, payload: P.ext(next: 60) + P.ext(next: 6) + P.tcp()))
        #expect(P.parse(Array(full.prefix(14 + 40 + 9)), wire: full.count).dropReason == .truncatedIPv6)
    }

    @Test func versionAndTruncation() {
        let v4 = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 6, version: 4, payload: P.tcp()))
        #expect(P.parse(v4).dropReason == .badIPv6Version)
        let full = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 17, payload: P.udp()))
        for n in 14..<(14 + 40) {
            #expect(P.parse(Array(full.prefix(n)), wire: full.count).dropReason == .truncatedIPv6)
        }
        #expect(P.parse(Array(full.prefix(14 + 40 + 7)), wire: full.count).dropReason == .truncatedUDP)
    }

    @Test func payloadLengthZeroAndTooLong() throws {
        // 0 with TCP: a BIG TCP / TSO capture, decode to the end of the frame.
        let zero = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 6, payloadLength: 0, payload: P.tcp(payload: [1, 2, 3])))
        #expect(try #require(delivered(P.parse(zero))).payloadLength == 3)
        // Longer than the frame: tshark warns and decodes what is there,
        // Linux's ip6_rcv_core drops it.
        let long = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 17, payloadLength: 65, payload: P.udp(payload: [UInt8](repeating: 0, count: 56))))
        #expect(P.parse(long).dropReason == .badIPv6PayloadLength)
        let udpLong = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 17, payloadLength: 100, payload: P.udp(length: 100, payload: [1])))
        #expect(P.parse(udpLong).dropReason == .badIPv6PayloadLength)
    }
}

@Suite struct LinkTypeTests {
    static let ip4 = P.ipv4(proto: 6, payload: P.tcp())
    static let ip6 = P.ipv6(next: 17, payload: P.udp(checksum: 0xbeef))

    @Test func rawIP() {
        for link in [LinkType.raw, .rawBSD, .rawOpenBSD] {
            #expect(P.parse(Self.ip4, link).packet?.flow.transport == .tcp)
            #expect(P.parse(Self.ip6, link).packet?.flow.transport == .udp)
            #expect(P.parse([0x50] + Self.ip4.dropFirst(), link).dropReason == .notIP)
            #expect(P.parse([], link).dropReason == .truncatedIPv4)
        }
        #expect(P.parse(Self.ip4, .ipv4).packet?.networkOffset == 0)
        #expect(P.parse(Self.ip6, .ipv6).packet?.networkOffset == 0)
        #expect(P.parse(Self.ip6, .ipv4).dropReason == .badIPv4Version)
        #expect(P.parse(Self.ip4, .ipv6).dropReason == .badIPv6Version)
        #expect(P.parse(Array(Self.ip4.prefix(39)), .ipv6).dropReason == .truncatedIPv6)
    }

    @Test func linuxCooked() {
        let sll = P.be16(0) + P.be16(772) + P.be16(6) + [UInt8](repeating: 0, count: 8) + P.be16(0x0800) + Self.ip4
        #expect(P.parse(sll, .linuxSLL).packet?.networkOffset == 16)
        let sll2 = P.be16(0x86dd) + P.be16(0) + P.be32(1) + P.be16(772) + [0, 6] + [UInt8](repeating: 0, count: 8) + Self.ip6
        #expect(P.parse(sll2, .linuxSLL2).packet?.networkOffset == 20)
        #expect(P.parse(Array(sll.prefix(15)), .linuxSLL).dropReason == .truncatedCooked)
        #expect(P.parse(Array(sll2.prefix(19)), .linuxSLL2).dropReason == .truncatedCooked)
        let netlink = P.be16(0) + P.be16(824) + P.be16(0) + [UInt8](repeating: 0, count: 8) + P.be16(0x0800) + Self.ip4
        #expect(P.parse(netlink, .linuxSLL).dropReason == .notIP)
        let arp = P.be16(0x0806) + P.be16(0) + P.be32(1) + P.be16(1) + [0, 6] + [UInt8](repeating: 0, count: 8) + [UInt8](repeating: 0, count: 28)
        #expect(P.parse(arp, .linuxSLL2).dropReason == .notIP)
    }

    @Test func bsdLoopbackEitherByteOrder() {
        for link in [LinkType.null, .loop] {
            #expect(P.parse(P.le32(2) + Self.ip4, link).packet?.networkOffset == 4)
            #expect(P.parse(P.be32(2) + Self.ip4, link).packet?.flow.family == .ipv4)
            for af: UInt32 in [24, 28, 30] {
                #expect(P.parse(P.le32(af) + Self.ip6, link).packet?.flow.family == .ipv6)
                #expect(P.parse(P.be32(af) + Self.ip6, link).packet?.flow.family == .ipv6)
            }
            #expect(P.parse(P.le32(10) + Self.ip6, link).dropReason == .notIP)  // Linux AF_INET6 is not a BSD value
            #expect(P.parse([2, 0, 0], link).dropReason == .truncatedLoopback)
        }
    }

    @Test func unsupportedLinkType() {
        #expect(P.parse(Self.ip4, LinkType(rawValue: 147)).dropReason == .unsupportedLinkType)
        #expect(!LinkType(rawValue: 147).isSupported)
        #expect(LinkType.linuxSLL2.isSupported)
    }
}

@Suite struct ChecksumTests {
    static func v4tcp(corruptHeader: Bool = false, corruptSegment: Bool = false) -> [UInt8] {
        var ip = P.withTransportChecksum(P.ipv4(proto: 6, payload: P.tcp(payload: [1, 2, 3])), l4: 20, proto: 6)
        if corruptHeader { ip[8] = 63 }       // TTL change without checksum update
        if corruptSegment { ip[ip.count - 1] ^= 0xff }
        return P.ethernet(type: 0x0800, payload: ip)
    }

    @Test func transportChecksumsNotVerifiedByDefault() {
        // The IPv4 header checksum is, as in Linux's ip_rcv_core; it can be
        // turned off.
        #expect(P.parse(Self.v4tcp(corruptHeader: true)).dropReason == .badIPv4HeaderChecksum)
        let lenient = PacketParser(options: ParserOptions(verifyIPv4HeaderChecksum: false))
        let corrupt = Self.v4tcp(corruptHeader: true)
        #expect(corrupt.withUnsafeBytes { lenient.parse($0, linkType: .ethernet) }.packet != nil)
        #expect(P.parse(Self.v4tcp(corruptSegment: true)).packet != nil)
        // Unfilled checksums, as captured on loopback.
        #expect(P.parse(P.ethernet(type: 0x0800, payload: P.ipv4(proto: 17, payload: P.udp(payload: [1])))).packet != nil)
    }

    @Test func verifiedOnRequest() {
        #expect(P.parse(Self.v4tcp(), verify: true).packet != nil)
        #expect(P.parse(Self.v4tcp(corruptHeader: true), verify: true).dropReason == .badIPv4HeaderChecksum)
        #expect(P.parse(Self.v4tcp(corruptSegment: true), verify: true).dropReason == .checksum)
    }

    @Test func udpChecksums() {
        let good4 = P.withTransportChecksum(P.ipv4(proto: 17, payload: P.udp(payload: [1, 2, 3])), l4: 20, proto: 17)
        #expect(P.parse(good4, .raw, verify: true).packet != nil)
        var bad4 = good4
        bad4[bad4.count - 2] ^= 1
        #expect(P.parse(bad4, .raw, verify: true).dropReason == .checksum)
        // Zero = "no checksum" is fine over IPv4, invalid over IPv6 (with
        // or without verification: it is not an unfilled offload checksum).
        #expect(P.parse(P.ipv4(proto: 17, payload: P.udp(payload: [1])), .raw, verify: true).packet != nil)
        #expect(P.parse(P.ipv6(next: 17, payload: P.udp(payload: [1])), .raw, verify: true).dropReason == .udpZeroChecksumIPv6)
        let good6 = P.withTransportChecksum(P.ipv6(next: 17, payload: P.udp(payload: [5, 6, 7])), l4: 40, proto: 17)
        #expect(P.parse(good6, .raw, verify: true).packet != nil)
        // UDP length shorter than the IP payload: the pseudo-header uses UDP's length.
        let trailer = P.withTransportChecksum(P.ipv4(proto: 17, payload: P.udp(length: 10, payload: [1, 2, 3, 4])), l4: 20, proto: 17)
        #expect(P.parse(trailer, .raw, verify: true).packet != nil)
    }

    @Test func ipv6TCPChecksumThroughExtensionHeaders() {
        // Destination options holding one skippable option (type 0x1e,
        // action bits 00) of 12 bytes: 16 bytes in all.
        let options: [UInt8] = [6, 1, 0x1e, 12] + [UInt8](repeating: 0xab, count: 12)
        let ip = P.ipv6(next: 60, payload: options + P.tcp(payload: [1, 2, 3, 4, 5]))
        let good = P.withTransportChecksum(ip, l4: 40 + 16, proto: 6)
        #expect(P.parse(good, .raw, verify: true).packet != nil)
        var bad = good
        bad[20] ^= 0x10  // destination address
        #expect(P.parse(bad, .raw, verify: true).dropReason == .checksum)
    }

    @Test func ipv4HeaderFastPathAgreesWithTheGeneralSum() {
        var rng = SplitMix64(seed: 0xc5)
        var verified = 0
        for i in 0..<4000 {
            var h = (0..<((5 + i % 11) * 4)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if i % 2 == 0 {  // half of them with a correct checksum
                h[10] = 0
                h[11] = 0
                let c = P.checksum(h)
                h[10] = UInt8(c >> 8)
                h[11] = UInt8(c & 0xff)
            }
            if i % 97 == 0 { h = [UInt8](repeating: i % 2 == 0 ? 0 : 0xff, count: h.count) }
            h.withUnsafeBytes { b in
                let general = Checksum.fold(Checksum.sum(b, from: 0, count: b.count)) == 0
                #expect(Checksum.ipv4HeaderVerifies(b, from: 0, length: b.count) == general, "\(h)")
                if general { verified += 1 }
            }
        }
        #expect(verified >= 1900)
    }

    @Test func truncatedSegmentsAreNotVerified() {
        let full = Self.v4tcp(corruptSegment: true)
        #expect(P.parse(Array(full.dropLast()), wire: full.count, verify: true).packet?.isTruncated == true)
    }
}

@Suite struct FlowKeyTests {
    @Test func canonicalFormIsDirectionIndependent() {
        let k = FlowKey(transport: .tcp, source: IPAddress("192.168.7.2")!, sourcePort: 80,
                        destination: IPAddress("10.0.0.1")!, destinationPort: 1234)
        #expect(k.canonical == k.reversed.canonical)
        #expect(k.canonical.source == IPAddress("10.0.0.1")!)
        #expect(k.canonicalDescription == "tcp|10.0.0.1|1234|192.168.7.2|80")
        // Same address: the lower port first.
        let same = FlowKey(transport: .udp, source: IPAddress("::1")!, sourcePort: 9000,
                           destination: IPAddress("::1")!, destinationPort: 53)
        #expect(same.canonicalDescription == "udp|::1|53|::1|9000")
        #expect(k != k.reversed)
        #expect(Set([k, k.reversed, k]).count == 2)
    }

    @Test(arguments: [
        ("2001:db8::1", "2001:db8::1"),
        ("::1", "::1"),
        ("::", "::"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),     // a single zero group is not compressed
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),              // the longest run
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),        // the first of equal runs
        ("FE80:0000::0001", "fe80::1"),
        ("fe80::", "fe80::"),
        ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.1.10.100", "255.1.10.100"),
    ])
    func addressText(_ input: String, _ expected: String) throws {
        let a = try #require(IPAddress(input))
        #expect(a.description == expected)
        #expect(IPAddress(a.description) == a)
    }

    @Test func rejectsBadAddressText() {
        #expect(IPAddress("1.2.3") == nil)
        #expect(IPAddress("2001:::1") == nil)
        #expect(IPAddress("") == nil)
    }

    @Test func isBitwiseCopyableAndCompact() {
        func needsBitwiseCopyable<T: BitwiseCopyable>(_: T.Type) {}
        needsBitwiseCopyable(FlowKey.self)
        needsBitwiseCopyable(ParsedPacket.self)
        #expect(MemoryLayout<FlowKey>.size <= 40)
    }
}

@Suite struct DropReasonTests {
    @Test func namesAreUniqueSnakeCaseAndRoundTrip() {
        let names = DropReason.allCases.map(\.name)
        #expect(Set(names).count == names.count)
        for r in DropReason.allCases {
            #expect(r.name.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "_" })
            #expect(DropReason(name: r.name) == r)
            #expect(Int(r.rawValue) < DropReason.count)
        }
        #expect(DropReason(name: "nonsense") == nil)
        #expect(DropReason.notTCPUDP.name == "not_tcp_udp")
        #expect(DropReason.truncatedEthernet.name == "truncated_ethernet")
    }

    @Test func classificationLineFormat() {
        let frame = P.ethernet(type: 0x86dd, payload: P.ipv6(next: 6, payload: P.tcp()))
        #expect(P.parse(frame).classificationLine(index: 3) == "3\ttcp\t2001:db8::1\t1234\t2001:db8::abc\t80\tdeliver")
        #expect(ParseResult.dropped(.notIP).classificationLine(index: 12) == "12\t-\t-\t-\t-\t-\tnot_ip")
    }
}

@Suite struct ParserRobustnessTests {
    /// Random frames and random corruptions of valid frames, for every
    /// supported link type: the parser must return (and, under ASan, never
    /// read outside the exact-size buffer).
    @Test func randomAndCorruptedFramesNeverCrash() {
        var rng = SplitMix64(seed: 0x5eed)
        let links: [LinkType] = [.ethernet, .raw, .ipv4, .ipv6, .linuxSLL, .linuxSLL2, .null, .loop, LinkType(rawValue: 9)]
        let seeds: [[UInt8]] = [
            P.ethernet(type: 0x0800, payload: P.ipv4(proto: 6, options: [1, 1, 1, 0], payload: P.tcp(payload: [1, 2, 3]))),
            P.ethernet(type: 0x8100, payload: P.be16(0x86dd) + P.ipv6(next: 0, payload: P.ext(next: 44) + P.fragmentHeader(next: 17, offset: 0, more: false) + P.udp(checksum: 0xbeef))),
            P.ethernet(type: 0x86dd, payload: P.ipv6(next: 43, payload: P.ext(next: 60, lengthUnits: 2) + P.ext(next: 6) + P.tcp())),
        ]
        var delivered = 0
        for i in 0..<30_000 {
            var frame: [UInt8]
            var link = links[Int(rng.next() % UInt64(links.count))]
            if i % 2 == 0 {
                frame = (0..<Int(rng.next() % 120)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                link = .ethernet
                frame = seeds[i % seeds.count]
                for _ in 0..<(rng.next() % 3) {
                    frame[Int(rng.next() % UInt64(frame.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
                if rng.next() % 2 == 0 {
                    frame = Array(frame.prefix(Int(rng.next() % UInt64(frame.count + 1))))
                }
            }
            let wire = rng.next() % 3 == 0 ? frame.count + Int(rng.next() % 100) : frame.count
            let r = P.parse(frame, link, wire: wire, verify: rng.next() % 2 == 0)
            if let p = r.packet {
                delivered += 1
                #expect(p.payloadOffset + p.capturedPayloadLength <= frame.count)
                #expect(p.capturedPayloadLength >= 0 && p.capturedPayloadLength <= p.payloadLength)
            }
        }
        #expect(delivered > 1000)  // the corruptions do not hide every frame
    }
}
