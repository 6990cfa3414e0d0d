import Testing
import TestSupport
@testable import FastDemux

private typealias P = TestPacket

/// Hand-made packets for every receive rule of docs/ParsingRules.md: each
/// malformed or refused packet must be dropped with exactly its reason
/// (compared by the stable name, so the expectations read like the table),
/// and its well-formed neighbour must still be delivered.
@Suite struct HostilePacketTests {
    // MARK: Builders

    static let unicastMAC: [UInt8] = [0x02, 0, 0, 0, 0, 2]
    static let zeroMAC: [UInt8] = [0, 0, 0, 0, 0, 0]

    static func eth(dst: [UInt8] = unicastMAC, src: [UInt8] = [0x02, 0, 0, 0, 0, 1], type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        dst + src + P.be16(type) + payload
    }

    /// IPv4 over Ethernet from a non-loopback device.
    static func v4(proto: UInt8 = 17, src: [UInt8] = P.v4a, dst: [UInt8] = P.v4b, options: [UInt8] = [],
                   fragment: UInt16 = 0x4000, totalLength: Int? = nil, l4: [UInt8]? = nil) -> [UInt8] {
        let transport = l4 ?? (proto == 6 ? P.tcp() : P.udp(payload: [1, 2, 3]))
        return eth(type: 0x0800, P.ipv4(proto: proto, src: src, dst: dst, options: options, fragment: fragment,
                                        totalLength: totalLength, payload: transport))
    }

    /// IPv6 over Ethernet from a non-loopback device; UDP carries a non-zero
    /// (unverified) checksum.
    static func v6(next: UInt8 = 17, src: [UInt8] = P.v6a, dst: [UInt8] = P.v6b, payloadLength: Int? = nil,
                   chain: [UInt8] = [], l4: [UInt8]? = nil) -> [UInt8] {
        let last = l4 ?? udp6
        return eth(type: 0x86dd, P.ipv6(next: next, src: src, dst: dst, payloadLength: payloadLength, payload: chain + last))
    }

    static let udp6 = P.udp(checksum: 0xbeef, payload: [1, 2, 3])

    static func v6addr(_ s: String) -> [UInt8] {
        let a = IPAddress(s)!
        return (0..<8).map { UInt8(truncatingIfNeeded: a.high >> (56 - 8 * UInt64($0))) }
            + (0..<8).map { UInt8(truncatingIfNeeded: a.low >> (56 - 8 * UInt64($0))) }
    }

    /// An IPv6 options header (hop-by-hop or destination options) whose
    /// option area is `options`, which must make the header a multiple of 8.
    static func optionsHeader(next: UInt8, _ options: [UInt8]) -> [UInt8] {
        precondition((2 + options.count) % 8 == 0)
        return [next, UInt8((2 + options.count) / 8 - 1)] + options
    }

    static func routingHeader(next: UInt8, type: UInt8, segmentsLeft: UInt8) -> [UInt8] {
        [next, 2, type, segmentsLeft, 0, 0, 0, 0] + v6addr("2001:db8::99")
    }

    static func cooked(packetType: UInt16, hatype: UInt16 = 1, _ ip: [UInt8]) -> [UInt8] {
        P.be16(packetType) + P.be16(hatype) + P.be16(6) + [UInt8](repeating: 0, count: 8) + P.be16(0x0800) + ip
    }

    static func cooked2(packetType: UInt8, hatype: UInt16 = 1, _ ip: [UInt8]) -> [UInt8] {
        P.be16(0x0800) + P.be16(0) + P.be32(1) + P.be16(hatype) + [packetType, 6] + [UInt8](repeating: 0, count: 8) + ip
    }

    static func reason(_ frame: [UInt8], _ link: LinkType = .ethernet, wire: Int? = nil) -> String {
        P.parse(frame, link, wire: wire).dropReason?.name ?? "deliver"
    }

    // MARK: IPv4: ip_rcv_core

    @Test func ipv4HeaderChecksum() {
        var bad = Self.v4()
        bad[14 + 8] = 1  // TTL changed, checksum not updated
        #expect(Self.reason(bad) == "bad_ipv4_header_checksum")
        #expect(Self.reason(Self.v4()) == "deliver")
    }

    @Test func ipv4TotalLengthZeroOnlyForTCP() {
        // tot_len 0 is read as "the frame" only for TCP (a BIG TCP capture);
        // for UDP it is a header error, as in ip_rcv_core.
        #expect(Self.reason(Self.v4(proto: 17, totalLength: 0)) == "bad_ipv4_total_length")
        #expect(Self.reason(Self.v4(proto: 6, totalLength: 0)) == "deliver")
    }

    // MARK: IPv4: ip_route_input_slow and this stack's unicast-only sockets

    @Test(arguments: [
        ([224, 0, 0, 1], "martian_source"),
        ([239, 255, 255, 250], "martian_source"),
        ([255, 255, 255, 255], "martian_source"),
        ([0, 0, 0, 0], "martian_source"),
        ([0, 1, 2, 3], "martian_source"),
        ([127, 0, 0, 1], "martian_source"),
        ([127, 9, 9, 9], "martian_source"),
        ([240, 0, 0, 1], "deliver"),       // class E is not martian in Linux
        ([100, 64, 0, 1], "deliver"),
    ] as [([UInt8], String)])
    func ipv4MartianSources(_ src: [UInt8], _ expected: String) {
        #expect(Self.reason(Self.v4(src: src)) == expected)
    }

    @Test(arguments: [
        ([0, 0, 0, 0], "martian_destination"),
        ([0, 9, 9, 9], "martian_destination"),
        ([127, 0, 0, 1], "martian_destination"),
        ([255, 255, 255, 255], "broadcast_destination"),
        ([224, 0, 0, 251], "multicast_destination"),
        ([239, 1, 2, 3], "multicast_destination"),
        ([192, 168, 7, 255], "deliver"),   // a subnet broadcast: the parser knows no subnets
    ] as [([UInt8], String)])
    func ipv4DestinationRules(_ dst: [UInt8], _ expected: String) {
        #expect(Self.reason(Self.v4(dst: dst)) == expected)
        #expect(Self.reason(Self.v4(proto: 6, dst: dst)) == expected)
    }

    @Test func dhcpDiscoverIsABroadcast() {
        // 0.0.0.0:68 -> 255.255.255.255:67 is accepted by Linux for UDP
        // broadcast sockets; this stack has none. 0.0.0.0 -> 0.0.0.0 is
        // routed as a broadcast too.
        let discover = Self.v4(src: [0, 0, 0, 0], dst: [255, 255, 255, 255], l4: P.udp(sport: 68, dport: 67, payload: [1]))
        #expect(Self.reason(discover) == "broadcast_destination")
        #expect(Self.reason(Self.v4(src: [0, 0, 0, 0], dst: [0, 0, 0, 0])) == "broadcast_destination")
        // A multicast source is refused before the destination is looked at.
        #expect(Self.reason(Self.v4(src: [224, 0, 0, 1], dst: [255, 255, 255, 255])) == "martian_source")
    }

    @Test func loopbackAddressesOnALoopbackDevice() {
        // 127/8 is fine on a loopback device: Ethernet with zero MACs (as
        // Linux's lo writes), BSD NULL/LOOP, cooked with ARPHRD_LOOPBACK.
        let ip = P.ipv4(proto: 6, src: [127, 0, 0, 1], dst: [127, 0, 0, 1], payload: P.tcp())
        #expect(Self.reason(Self.eth(dst: Self.zeroMAC, src: Self.zeroMAC, type: 0x0800, ip)) == "deliver")
        #expect(Self.reason(P.le32(2) + ip, .null) == "deliver")
        #expect(Self.reason(Self.cooked(packetType: 0, hatype: 772, ip), .linuxSLL) == "deliver")
        #expect(Self.reason(Self.cooked2(packetType: 4, hatype: 772, ip), .linuxSLL2) == "deliver")
        // ... and martian elsewhere: a real NIC, raw IP (tun), cooked Ethernet.
        #expect(Self.reason(Self.eth(type: 0x0800, ip)) == "martian_destination")
        #expect(Self.reason(ip, .raw) == "martian_destination")
        #expect(Self.reason(Self.cooked(packetType: 0, hatype: 1, ip), .linuxSLL) == "martian_destination")
        // Multicast is still not delivered on loopback: no group membership.
        let mc = P.ipv4(proto: 17, src: [127, 0, 0, 1], dst: [224, 0, 0, 251], payload: P.udp())
        #expect(Self.reason(P.le32(2) + mc, .null) == "multicast_destination")
    }

    // MARK: IPv4: ip_options_compile, ip_rcv_options

    @Test(arguments: [
        ([1, 1, 1, 0], "deliver"),                              // NOPs, EOL
        ([0x94, 4, 0, 0], "deliver"),                           // router alert
        ([7, 7, 4, 0, 0, 0, 0, 0], "deliver"),                  // record route, one slot
        ([68, 8, 5, 0, 0, 0, 0, 0], "deliver"),                 // timestamp, one slot
        ([0x82, 4, 0, 0], "deliver"),                           // security: accepted on receive
        ([0, 7, 1, 0], "deliver"),                              // EOL ends the list
        ([7, 1, 0, 0], "bad_ipv4_options"),                     // length < 2
        ([0x94, 8, 0, 0], "bad_ipv4_options"),                  // runs past the header
        ([1, 1, 1, 7], "bad_ipv4_options"),                     // a type byte with no length
        ([0x94, 3, 0, 1], "bad_ipv4_options"),                  // router alert shorter than 4
        ([7, 7, 3, 0, 0, 0, 0, 0], "bad_ipv4_options"),         // record route pointer < 4
        ([7, 6, 4, 0, 0, 0, 1, 0], "bad_ipv4_options"),         // record route slot past the option
        ([7, 3, 4, 7, 3, 4, 1, 0], "bad_ipv4_options"),         // two record routes
        ([68, 3, 5, 1], "bad_ipv4_options"),                    // timestamp shorter than 4
        ([68, 8, 4, 0, 0, 0, 0, 0], "bad_ipv4_options"),        // timestamp pointer < 5
        ([68, 8, 5, 1, 0, 0, 0, 0], "bad_ipv4_options"),        // address+time slot does not fit
        ([68, 4, 5, 0xf0], "bad_ipv4_options"),                 // full, overflow counter at 15
        ([131, 2, 4, 0], "bad_ipv4_options"),                   // source route shorter than 3
        ([131, 3, 3, 0], "bad_ipv4_options"),                   // source route pointer < 4
        ([131, 7, 4, 10, 0, 0, 9, 0], "ipv4_source_route"),     // loose source route
        ([137, 7, 4, 10, 0, 0, 9, 0], "ipv4_source_route"),     // strict source route
        ([134, 4, 0, 0, 134, 4, 0, 0], "bad_ipv4_options"),     // two CIPSO options
    ] as [([UInt8], String)])
    func ipv4Options(_ options: [UInt8], _ expected: String) {
        #expect(Self.reason(Self.v4(proto: 6, options: options)) == expected)
    }

    // MARK: IPv4: ip_local_deliver (no reassembly)

    @Test(arguments: [UInt16(0x2000), 0x2001, 0x0001, 0x1fff, 0x6000])
    func ipv4Fragments(_ fragment: UInt16) {
        #expect(Self.reason(Self.v4(fragment: fragment, l4: P.udp(length: 1000, payload: [1]))) == "ipv4_fragment")
        #expect(Self.reason(Self.v4(proto: 6, fragment: fragment)) == "ipv4_fragment")
    }

    @Test func ipv4DontFragmentAndReservedBitAreNotFragments() {
        #expect(Self.reason(Self.v4(fragment: 0x4000)) == "deliver")
        #expect(Self.reason(Self.v4(fragment: 0x8000)) == "deliver")
        #expect(Self.reason(Self.v4(fragment: 0)) == "deliver")
    }

    // MARK: Link layer: PACKET_OTHERHOST, and TCP's PACKET_HOST rule

    @Test func otherHostFramesAreDropped() {
        let ip = P.ipv4(proto: 17, payload: P.udp())
        #expect(Self.reason(Self.cooked(packetType: 3, ip), .linuxSLL) == "other_host")
        #expect(Self.reason(Self.cooked2(packetType: 3, ip), .linuxSLL2) == "other_host")
        #expect(Self.reason(Self.cooked(packetType: 0, ip), .linuxSLL) == "deliver")
        #expect(Self.reason(Self.cooked(packetType: 4, ip), .linuxSLL) == "deliver")  // outgoing
    }

    @Test func tcpInALinkLayerBroadcastIsDropped() {
        let tcp = P.ipv4(proto: 6, payload: P.tcp())
        let udp = P.ipv4(proto: 17, payload: P.udp())
        for mac: [UInt8] in [[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], [0x01, 0x00, 0x5e, 0, 0, 1], [0x33, 0x33, 0, 0, 0, 1]] {
            #expect(Self.reason(Self.eth(dst: mac, type: 0x0800, tcp)) == "tcp_link_broadcast")
            #expect(Self.reason(Self.eth(dst: mac, type: 0x0800, udp)) == "deliver")  // UDP: Linux delivers
        }
        #expect(Self.reason(Self.cooked(packetType: 1, tcp), .linuxSLL) == "tcp_link_broadcast")
        #expect(Self.reason(Self.cooked2(packetType: 2, tcp), .linuxSLL2) == "tcp_link_broadcast")
        let tcp6 = P.ipv6(next: 6, payload: P.tcp())
        #expect(Self.reason(Self.eth(dst: [0x33, 0x33, 0, 0, 0, 1], type: 0x86dd, tcp6)) == "tcp_link_broadcast")
    }

    // MARK: IPv6: ip6_rcv_core

    @Test func ipv6PayloadLength() {
        // Longer than the frame.
        #expect(Self.reason(Self.v6(payloadLength: 200)) == "bad_ipv6_payload_length")
        #expect(Self.reason(Self.v6(next: 6, payloadLength: 21, l4: P.tcp())) == "bad_ipv6_payload_length")
        #expect(Self.reason(Self.v6(next: 6, payloadLength: 20, l4: P.tcp())) == "deliver")
        // Shorter is fine (Ethernet padding beyond it is not payload) ...
        #expect(Self.reason(Self.v6(payloadLength: 11, l4: Self.udp6 + [0, 0, 0])) == "deliver")
        // ... but 0 with UDP leaves no transport header (Linux trims to 40).
        #expect(Self.reason(Self.v6(payloadLength: 0)) == "bad_ipv6_payload_length")
        // A snaplen cut is not a length error.
        let full = Self.v6()
        #expect(Self.reason(Array(full.prefix(full.count - 2)), wire: full.count) == "deliver")
    }

    @Test(arguments: [
        ("::1", "2001:db8::abc", "martian_source"),
        ("ff02::1", "2001:db8::abc", "martian_source"),
        ("2001:db8::1", "::1", "martian_destination"),
        ("2001:db8::1", "::", "martian_destination"),
        ("2001:db8::1", "ff00::1", "martian_destination"),     // multicast scope 0
        ("2001:db8::1", "ff01::1", "martian_destination"),     // interface-local, from outside
        ("2001:db8::1", "ff02::fb", "multicast_destination"),
        ("2001:db8::1", "ff05::1:3", "multicast_destination"),
        ("::", "2001:db8::abc", "deliver"),                    // unspecified source: allowed
        ("::ffff:10.0.0.1", "2001:db8::abc", "deliver"),       // UDP from a v4-mapped source: allowed
        ("fe80::1", "fe80::2", "deliver"),
    ])
    func ipv6AddressRules(_ src: String, _ dst: String, _ expected: String) {
        #expect(Self.reason(Self.v6(src: Self.v6addr(src), dst: Self.v6addr(dst))) == expected)
    }

    @Test func ipv6LoopbackAddressesOnALoopbackDevice() {
        let ip = P.ipv6(next: 6, src: Self.v6addr("::1"), dst: Self.v6addr("::1"), payload: P.tcp())
        #expect(Self.reason(Self.eth(dst: Self.zeroMAC, src: Self.zeroMAC, type: 0x86dd, ip)) == "deliver")
        #expect(Self.reason(P.le32(30) + ip, .null) == "deliver")
        #expect(Self.reason(ip, .raw) == "martian_source")
        let ifLocal = P.ipv6(next: 17, src: Self.v6addr("::1"), dst: Self.v6addr("ff01::1"), payload: Self.udp6)
        #expect(Self.reason(P.le32(30) + ifLocal, .null) == "multicast_destination")
    }

    @Test func tcpFromAV4MappedSource() {
        let mapped = Self.v6(next: 6, src: Self.v6addr("::ffff:10.0.0.1"), l4: P.tcp())
        #expect(Self.reason(mapped) == "v4_mapped_source")
        #expect(Self.reason(Self.v6(next: 6, src: Self.v6addr("::10.0.0.1"), l4: P.tcp())) == "deliver")
    }

    // MARK: IPv6: extension headers (ip6_parse_tlv, ipv6_rthdr_rcv, ipv6_frag_rcv)

    @Test func hopByHopMustComeFirst() {
        let chain = Self.optionsHeader(next: 0, [1, 4, 0, 0, 0, 0]) + Self.optionsHeader(next: 17, [1, 4, 0, 0, 0, 0])
        #expect(Self.reason(Self.v6(next: 60, chain: chain)) == "ipv6_hop_by_hop_not_first")
        let ok = Self.optionsHeader(next: 60, [1, 4, 0, 0, 0, 0]) + Self.optionsHeader(next: 17, [1, 4, 0, 0, 0, 0])
        #expect(Self.reason(Self.v6(next: 0, chain: ok)) == "deliver")
    }

    @Test(arguments: [
        ([0, 0, 0, 0, 0, 0], "deliver"),                                  // six Pad1
        ([1, 4, 0, 0, 0, 0], "deliver"),                                  // PadN of 6
        ([0x1e, 4, 9, 9, 9, 9], "deliver"),                               // unknown, action 00: skipped
        ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "bad_ipv6_option"),  // 14 bytes of Pad1
        ([1, 4, 0, 0, 1, 0], "bad_ipv6_option"),                          // PadN not zero
        ([0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "bad_ipv6_option"),  // Pad1, Pad1, PadN 5: 7 bytes, then 7 more
        ([0x1e, 5, 9, 9, 9, 9], "bad_ipv6_option"),                       // runs past the header
        ([0, 0, 0, 0, 0, 0x1e], "bad_ipv6_option"),                       // a type byte with no length
        ([0x5e, 4, 9, 9, 9, 9], "bad_ipv6_option"),                       // unknown, action 01: discard
        ([0x9e, 4, 9, 9, 9, 9], "bad_ipv6_option"),                       // unknown, action 10
        ([0xde, 4, 9, 9, 9, 9], "bad_ipv6_option"),                       // unknown, action 11
    ] as [([UInt8], String)])
    func destinationOptions(_ options: [UInt8], _ expected: String) {
        #expect(Self.reason(Self.v6(next: 60, chain: Self.optionsHeader(next: 17, options))) == expected)
        #expect(Self.reason(Self.v6(next: 0, chain: Self.optionsHeader(next: 17, options))) == expected)
    }

    @Test func optionCountBound() {
        let eight = [UInt8]((0..<8).flatMap { _ in [0x1e, 0] }) + [1, 4, 0, 0, 0, 0]  // 8 options + PadN: 22 bytes
        #expect(Self.reason(Self.v6(next: 60, chain: Self.optionsHeader(next: 17, eight))) == "deliver")
        let nine = [UInt8]((0..<9).flatMap { _ in [0x1e, 0] }) + [1, 2, 0, 0]       // 9 options + PadN: 22 bytes
        #expect(Self.reason(Self.v6(next: 60, chain: Self.optionsHeader(next: 17, nine))) == "bad_ipv6_option")
    }

    @Test func hopByHopOptions() {
        func hbh(_ options: [UInt8], payloadLength: Int? = nil) -> String {
            Self.reason(Self.v6(next: 0, payloadLength: payloadLength, chain: Self.optionsHeader(next: 17, options)))
        }
        #expect(hbh([5, 2, 0, 0, 1, 0]) == "deliver")                    // router alert (MLD)
        #expect(hbh([5, 3, 0, 0, 0, 0]) == "bad_ipv6_option")            // router alert of 3 bytes
        #expect(hbh([7, 4, 0, 0, 0, 0]) == "bad_ipv6_option")            // CALIPSO: no domain
        #expect(hbh([0xc2, 4, 0, 1, 0, 0]) == "bad_ipv6_option")         // jumbo with a payload length
        // Destination options: a home address option without a binding.
        let hao = [0xc9, 16] + Self.v6addr("2001:db8::5") + [1, 2, 0, 0]
        #expect(Self.reason(Self.v6(next: 60, chain: Self.optionsHeader(next: 17, hao))) == "bad_ipv6_option")
    }

    @Test func jumbogram() throws {
        // RFC 2675: payload length 0, hop-by-hop jumbo option at 4n+2, UDP
        // length 0. A snaplen-cut capture of a 70000-byte payload.
        let jumboLength = 70_000
        let hbh = Self.optionsHeader(next: 17, [0xc2, 4] + P.be32(UInt32(jumboLength)))
        let head = Self.eth(type: 0x86dd, P.ipv6(next: 0, payloadLength: 0,
                                                 payload: hbh + P.udp(length: 0, checksum: 0xbeef, payload: [1, 2, 3])))
        let wire = 14 + 40 + jumboLength
        let p = try #require(P.parse(head, wire: wire).packet)
        #expect(p.payloadLength == jumboLength - 8 - 8)
        #expect(p.isTruncated)
        // Not above 65535, misaligned, or longer than the frame: refused.
        let small = Self.optionsHeader(next: 17, [0xc2, 4] + P.be32(65_535))
        #expect(Self.reason(Self.eth(type: 0x86dd, P.ipv6(next: 0, payloadLength: 0, payload: small + Self.udp6)),
                            wire: wire) == "bad_ipv6_option")
        let misaligned = Self.optionsHeader(next: 17, [0, 0xc2, 4] + P.be32(UInt32(jumboLength)) + [0, 0, 0, 0, 0, 0, 0])
        #expect(Self.reason(Self.eth(type: 0x86dd, P.ipv6(next: 0, payloadLength: 0, payload: misaligned + Self.udp6)),
                            wire: wire) == "bad_ipv6_option")
        #expect(Self.reason(head, wire: wire - 1) == "bad_ipv6_option")
    }

    @Test(arguments: [
        (UInt8(0), UInt8(0), "deliver"),        // type 0, nothing left: passed over
        (0, 1, "ipv6_routing_header"),          // segments left: to be forwarded
        (4, 0, "ipv6_routing_header"),          // SRv6: seg6_enabled off
        (4, 2, "ipv6_routing_header"),
        (3, 0, "ipv6_routing_header"),          // RPL: rpl_seg_enabled off
        (2, 0, "ipv6_routing_header"),          // type 2 not processed by us
        (2, 1, "ipv6_routing_header"),
        (200, 0, "deliver"),                    // unknown type, nothing left
    ])
    func routingHeaders(_ type: UInt8, _ left: UInt8, _ expected: String) {
        #expect(Self.reason(Self.v6(next: 43, chain: Self.routingHeader(next: 17, type: type, segmentsLeft: left))) == expected)
    }

    @Test func ipv6Fragments() {
        let first = P.fragmentHeader(next: 17, offset: 0, more: true)
        #expect(Self.reason(Self.v6(next: 44, chain: first, l4: P.udp(length: 900, checksum: 1, payload: [1]))) == "ipv6_fragment")
        #expect(Self.reason(Self.v6(next: 44, chain: P.fragmentHeader(next: 17, offset: 100, more: false))) == "ipv6_fragment")
        #expect(Self.reason(Self.v6(next: 44, chain: P.fragmentHeader(next: 6, offset: 1, more: true), l4: P.tcp())) == "ipv6_fragment")
        // Atomic (offset 0, no more fragments; the reserved bits do not count).
        #expect(Self.reason(Self.v6(next: 44, chain: P.fragmentHeader(next: 17, offset: 0, more: false))) == "deliver")
        var reserved = P.fragmentHeader(next: 17, offset: 0, more: false)
        reserved[3] |= 0x06
        #expect(Self.reason(Self.v6(next: 44, chain: reserved)) == "deliver")
    }

    @Test func extensionHeaderShorterThanEightBytes() {
        // Linux pulls 8 bytes of an extension header before its length.
        let frame = Self.v6(next: 60, chain: [17, 0, 1, 2], l4: [])
        #expect(Self.reason(frame) == "bad_ipv6_extension")
    }

    // MARK: UDP: __udp4_lib_rcv, __udp6_lib_rcv

    @Test func udpLengths() throws {
        #expect(Self.reason(Self.v4(l4: P.udp(length: 12, payload: [1, 2, 3]))) == "bad_udp_length")  // past the IP payload
        #expect(Self.reason(Self.v4(l4: P.udp(length: 7, payload: [1, 2, 3]))) == "bad_udp_length")
        #expect(Self.reason(Self.v4(l4: P.udp(length: 0, payload: [1, 2, 3]))) == "bad_udp_length")
        // IPv6: length 0 means the rest of the payload.
        let zero = try #require(P.parse(Self.v6(l4: P.udp(length: 0, checksum: 1, payload: [1, 2, 3]))).packet)
        #expect(zero.payloadLength == 3)
        #expect(Self.reason(Self.v6(l4: P.udp(length: 12, checksum: 1, payload: [1, 2, 3]))) == "bad_udp_length")
    }

    @Test func udpZeroChecksum() {
        #expect(Self.reason(Self.v6(l4: P.udp(payload: [1]))) == "udp_zero_checksum_ipv6")
        #expect(Self.reason(Self.v4(l4: P.udp(payload: [1]))) == "deliver")
    }

    // MARK: TCP: tcp_v4_rcv

    @Test func tcpDataOffset() {
        #expect(Self.reason(Self.v4(proto: 6, l4: P.tcp(dataOffset: 4))) == "bad_tcp_data_offset")
        #expect(Self.reason(Self.v4(proto: 6, l4: P.tcp(dataOffset: 6))) == "bad_tcp_data_offset")  // past the segment
        #expect(Self.reason(Self.v4(proto: 6, l4: P.tcp(dataOffset: 6, payload: [1, 1, 1, 0]))) == "deliver")
    }

    // MARK: Counters

    @Test func everyReasonHasASlotAndASummary() {
        #expect(DropReason.count <= DemuxStats().parseDrops.count)
        for r in DropReason.allCases {
            #expect(!r.summary.isEmpty && !r.summary.contains("\n"), "\(r)")
        }
        #expect(DropReason.ipv4Fragment.summary.contains("reassembly not implemented"))
        #expect(DemuxDropReason(.ipv4Fragment) == .unsupported)
        #expect(DemuxDropReason(.multicastDestination) == .unsupported)
        #expect(DemuxDropReason(.martianSource) == .malformed)
    }
}
