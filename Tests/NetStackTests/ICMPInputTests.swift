import Testing
import Glibc
import FastDemux
import NetStack
import TestSupport

@Suite struct ICMPInputTests {
    /// An ICMP message with its checksum filled in (ICMPv4: over the
    /// message; ICMPv6: with the pseudo-header of TestPacket's addresses).
    static func icmp(v6: Bool, type: UInt8, code: UInt8, rest: [UInt8], body: [UInt8]) -> [UInt8] {
        var m = [type, code, 0, 0] + rest + body
        var pseudo: UInt32 = 0
        if v6 {
            let a = TestPacket.v6a + TestPacket.v6b
            for i in stride(from: 0, to: 32, by: 2) { pseudo += UInt32(a[i]) << 8 | UInt32(a[i + 1]) }
            pseudo += UInt32(m.count) + 58
        }
        let c = TestPacket.checksum(m, initial: pseudo)
        m[2] = UInt8(c >> 8)
        m[3] = UInt8(c & 0xff)
        return m
    }

    static func frame(v6: Bool, _ message: [UInt8]) -> [UInt8] {
        v6 ? TestPacket.ethernet(type: 0x86DD, payload: TestPacket.ipv6(next: 58, payload: message))
           : TestPacket.ethernet(type: 0x0800, payload: TestPacket.ipv4(proto: 1, payload: message))
    }

    static func decode(_ frame: [UInt8]) -> ICMPDecodeResult? {
        frame.withUnsafeBytes { raw -> ICMPDecodeResult? in
            guard case .network(let n) = PacketParser().parseNetwork(raw, linkType: .ethernet) else { return nil }
            return ICMPInput.decode(raw, n)
        }
    }

    @Test(arguments: [false, true])
    func echoRequest(v6: Bool) throws {
        let data = Frag.bytes(56)
        let f = Self.frame(v6: v6, Self.icmp(v6: v6, type: v6 ? 128 : 8, code: 0, rest: [0x12, 0x34, 0, 7], body: data))
        guard case .message(.echoRequest(let e)) = try #require(Self.decode(f)) else { Issue.record("not echo"); return }
        #expect(e.identifier == 0x1234 && e.sequence == 7 && e.dataLength == 56)
        #expect(Array(f[e.dataOffset..<(e.dataOffset + e.dataLength)]) == data)
    }

    @Test(arguments: [false, true])
    func badChecksumAndShortMessagesAreDropped(v6: Bool) throws {
        var m = Self.icmp(v6: v6, type: v6 ? 128 : 8, code: 0, rest: [0, 1, 0, 1], body: [1, 2, 3])
        m[9] ^= 0x40
        guard case .dropped(.checksum) = try #require(Self.decode(Self.frame(v6: v6, m))) else {
            Issue.record("bad checksum accepted"); return
        }
        guard case .dropped(.tooShort) = try #require(Self.decode(Self.frame(v6: v6, [8, 0, 0xf7, 0xff]))) else {
            Issue.record("short accepted"); return
        }
    }

    /// A UDP datagram this host (TestPacket's destination address) sent to
    /// the peer, as an error quotes it.
    static func quotedUDP(v6: Bool) -> [UInt8] {
        let udp = TestPacket.udp(sport: 5353, dport: 9999, payload: [1, 2, 3, 4])
        return v6 ? TestPacket.ipv6(next: 17, src: TestPacket.v6b, dst: TestPacket.v6a, payload: udp)
                  : TestPacket.ipv4(proto: 17, src: TestPacket.v4b, dst: TestPacket.v4a, payload: udp)
    }

    @Test(arguments: [false, true])
    func portUnreachableNamesTheSocket(v6: Bool) throws {
        let m = Self.icmp(v6: v6, type: v6 ? 1 : 3, code: v6 ? 4 : 3, rest: [0, 0, 0, 0], body: Self.quotedUDP(v6: v6))
        guard case .message(let message) = try #require(Self.decode(Self.frame(v6: v6, m))),
              case .destinationUnreachable(_, let q) = message else { Issue.record("not unreachable"); return }
        let flow = try #require(q.socketFlow)
        #expect(flow.transport == .udp && flow.sourcePort == 9999 && flow.destinationPort == 5353)
        #expect(flow.destination == IPAddress(testBytes: v6 ? TestPacket.v6b : TestPacket.v4b))
        #expect(message.socketError(ipv6: v6) == ECONNREFUSED)
    }

    @Test(arguments: [false, true])
    func packetTooBigAndTimeExceeded(v6: Bool) throws {
        let big = v6 ? Self.icmp(v6: true, type: 2, code: 0, rest: [0, 0, 0x05, 0x00], body: Self.quotedUDP(v6: true))
                     : Self.icmp(v6: false, type: 3, code: 4, rest: [0, 0, 0x05, 0x00], body: Self.quotedUDP(v6: false))
        guard case .message(.packetTooBig(let mtu, let q)) = try #require(Self.decode(Self.frame(v6: v6, big))) else {
            Issue.record("not packet too big"); return
        }
        #expect(mtu == 1280 && q.sentFlow?.sourcePort == 5353)
        let te = Self.icmp(v6: v6, type: v6 ? 3 : 11, code: 1, rest: [0, 0, 0, 0], body: Self.quotedUDP(v6: v6))
        guard case .message(.timeExceeded(1, _)) = try #require(Self.decode(Self.frame(v6: v6, te))) else {
            Issue.record("not time exceeded"); return
        }
    }

    @Test(arguments: [false, true])
    func truncatedQuoteIsMalformed(v6: Bool) throws {
        // The quoted header plus fewer than 8 bytes of its upper layer.
        let quote = Array(Self.quotedUDP(v6: v6).prefix(v6 ? 44 : 24))
        let m = Self.icmp(v6: v6, type: v6 ? 1 : 3, code: 1, rest: [0, 0, 0, 0], body: quote)
        guard case .dropped(.malformedQuote) = try #require(Self.decode(Self.frame(v6: v6, m))) else {
            Issue.record("short quote accepted"); return
        }
    }

    @Test func unknownICMPv4TypeIsDropped() throws {
        let m = Self.icmp(v6: false, type: 40, code: 0, rest: [0, 0, 0, 0], body: [])
        guard case .dropped(.unknownType) = try #require(Self.decode(Self.frame(v6: false, m))) else {
            Issue.record("unknown type accepted"); return
        }
    }
}

extension IPAddress {
    init(testBytes bytes: [UInt8]) {
        if bytes.count == 4 {
            self.init(ipv4: UInt32(bytes[0]) << 24 | UInt32(bytes[1]) << 16 | UInt32(bytes[2]) << 8 | UInt32(bytes[3]))
        } else {
            var h: UInt64 = 0, l: UInt64 = 0
            for i in 0..<8 { h = h << 8 | UInt64(bytes[i]); l = l << 8 | UInt64(bytes[8 + i]) }
            self.init(ipv6High: h, low: l)
        }
    }
}
