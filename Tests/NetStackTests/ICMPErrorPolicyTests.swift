import Testing
@testable import NetStack

func suppression4(_ p: [UInt8], linkLayerBroadcast: Bool = false) -> ICMPErrorSuppression? {
    p.withUnsafeBytes { ICMPErrorPolicy.suppression(ofErrorAboutIPv4: $0, linkLayerBroadcast: linkLayerBroadcast) }
}

func suppression6(_ p: [UInt8], type: UInt8 = 1, code: UInt8 = 4, linkLayerMulticast: Bool = false) -> ICMPErrorSuppression? {
    p.withUnsafeBytes {
        ICMPErrorPolicy.suppression(ofErrorAboutIPv6: $0, type: type, code: code, linkLayerMulticast: linkLayerMulticast)
    }
}

@Suite struct ICMPErrorPolicyTests {
    /// RFC 1122 §3.2.2's list, one case each.
    @Test func ipv4Rules() throws {
        let udp = udpPacket(v4b, v4a, payload: 20)
        #expect(suppression4(udp) == nil)
        #expect(suppression4(udp, linkLayerBroadcast: true) == .linkLayerMulticastOrBroadcast)
        let unreachable = try udp.withUnsafeBytes { o throws(OutputError) in
            try build { b throws(OutputError) in try ICMPv4Output.buildDestinationUnreachable(into: b, offending: o, identification: 1) }
        }
        #expect(suppression4(unreachable) == .aboutICMPError)
        #expect(suppression4(echoRequestV4(from: v4b, to: v4a, data: [])) == nil)  // queries are fine
        var unknown = echoRequestV4(from: v4b, to: v4a, data: [])
        unknown[20] = 40
        #expect(suppression4(unknown) == .aboutICMPError)
        var first = udp
        first[6] = 0x20  // MF, offset 0: the first fragment
        #expect(suppression4(first) == nil)
        var later = udp
        later[6] = 0x00; later[7] = 0xb9  // offset 185 × 8
        #expect(suppression4(later) == .nonInitialFragment)
        for d in ["224.0.0.251", "255.255.255.255"] {
            #expect(suppression4(udpPacket(v4b, IPAddress(d)!, payload: 1)) == .multicastOrBroadcastDestination)
        }
        for s in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255"] {
            #expect(suppression4(udpPacket(IPAddress(s)!, v4a, payload: 1)) == .sourceNotUnicastHost)
        }
        #expect(suppression4(Array(udp[0..<19])) == .malformed)
        #expect(suppression4(Array(echoRequestV4(from: v4b, to: v4a, data: [])[0..<20])) == .malformed)
    }

    /// RFC 4443 §2.4(e), one case each, with the Packet Too Big and
    /// Parameter Problem code 2 exemptions.
    @Test func ipv6Rules() throws {
        let udp = udpPacket(v6b, v6a, payload: 20)
        #expect(suppression6(udp) == nil)
        let unreachable = try udp.withUnsafeBytes { o throws(OutputError) in
            try build { b throws(OutputError) in try ICMPv6Output.buildDestinationUnreachable(into: b, offending: o) }
        }
        #expect(suppression6(unreachable) == .aboutICMPError)
        var redirect = echoRequestV6(from: v6b, to: v6a, data: [0, 0, 0, 0])
        #expect(suppression6(redirect) == nil)
        redirect[40] = 137
        #expect(suppression6(redirect) == .aboutRedirect)
        let multicast = udpPacket(v6b, IPAddress("ff02::fb")!, payload: 4)
        #expect(suppression6(multicast) == .multicastOrBroadcastDestination)
        #expect(suppression6(multicast, type: 2, code: 0) == nil)
        #expect(suppression6(multicast, type: 4, code: 2) == nil)
        #expect(suppression6(multicast, type: 4, code: 1) == .multicastOrBroadcastDestination)
        #expect(suppression6(udp, linkLayerMulticast: true) == .linkLayerMulticastOrBroadcast)
        #expect(suppression6(udp, type: 2, code: 0, linkLayerMulticast: true) == nil)
        for s in ["::", "ff02::1"] {
            #expect(suppression6(udpPacket(IPAddress(s)!, v6a, payload: 1)) == .sourceNotUnicastHost)
        }
        #expect(suppression6(Array(udp[0..<39])) == .malformed)
    }

    /// Behind a Fragment header: the first fragment is judged by its
    /// upper-layer header, later ones are refused.
    @Test func ipv6Fragments() throws {
        let pool = PacketPool(bufferCount: 8)
        let payload = [UInt8](repeating: 3, count: 2000)
        let fragments = try payload.withUnsafeBytes { p in
            sendPackets(pool: pool) { ids, cache, out throws(OutputError) in
                try UDPOutput.sendIPv6(source: v6b, sourcePort: 7, destination: v6a, destinationPort: 8, payload: p,
                                       mtu: 1280, identifications: &ids, cache: &cache, into: out)
            }
        }.get()
        #expect(fragments.count == 2)
        #expect(suppression6(fragments[0]) == nil)
        #expect(suppression6(fragments[1]) == .nonInitialFragment)
        var icmpFirst = fragments[0]
        icmpFirst[40] = 58; icmpFirst[48] = 3  // an ICMPv6 time exceeded, fragmented
        #expect(suppression6(icmpFirst) == .aboutICMPError)
    }

    @Test func rateLimiterBurstThenRefill() {
        let ms: UInt64 = 1_000_000
        var limiter = ICMPRateLimiter(messagesPerSecond: 10, burst: 5, now: 1_000 * ms)
        func allow(_ now: UInt64) -> Bool { limiter.allow(now: now) }
        for _ in 0..<5 { #expect(allow(1_000 * ms)) }
        #expect(!allow(1_000 * ms))
        #expect(!allow(1_050 * ms))  // half a token
        #expect(allow(1_100 * ms))   // the two halves make one
        #expect(!allow(1_100 * ms))
        #expect(!allow(900 * ms))    // time going backwards adds nothing
        let twice = allow(1_300 * ms) && allow(1_300 * ms)
        #expect(twice)
        #expect(!allow(1_300 * ms))
        // A long idle period refills to the burst, no more.
        #expect(allow(3_600_000 * ms))
        #expect(limiter.available == 4)
        var sent = 1
        while allow(3_600_000 * ms) { sent += 1 }
        #expect(sent == 5)
    }

    @Test func rateLimiterLinuxDefaults() {
        var limiter = ICMPRateLimiter(now: 0)
        #expect(limiter.messagesPerSecond == 1000 && limiter.burst == 50)
        var sent = 0
        for t in 0..<1000 where limiter.allow(now: UInt64(t) * 100_000) { sent += 1 }  // 1000 tries in 0.1 s
        #expect(sent == 50 + 99)  // the burst plus 1000/s over 99.9 ms
    }
}
