/// Options for ``PacketParser``.
@frozen
public struct ParserOptions: Sendable, BitwiseCopyable, Hashable {
    /// Verify the TCP/UDP checksums (with the pseudo-header, IPv4 and IPv6)
    /// and drop failures as ``DropReason/checksum``; implies
    /// ``verifyIPv4HeaderChecksum``. Off by default: captured loopback and
    /// offloaded traffic carries transport checksums the NIC never filled
    /// in. Snaplen-truncated segments cannot be verified and pass.
    public var verifyChecksums: Bool

    /// Verify the IPv4 header checksum and drop failures as
    /// ``DropReason/badIPv4HeaderChecksum``, as Linux's ip_rcv_core always
    /// does. On by default: Linux computes the header checksum in software
    /// (ip_send_check) before a frame reaches a capture point, offload or
    /// not. Turn it off for captures of outgoing traffic from hosts that
    /// offload it (Windows TSO captures carry 0).
    public var verifyIPv4HeaderChecksum: Bool

    /// Options with transport checksum verification off and IPv4 header
    /// checksum verification on by default.
    @inlinable
    public init(verifyChecksums: Bool = false, verifyIPv4HeaderChecksum: Bool = true) {
        self.verifyChecksums = verifyChecksums
        self.verifyIPv4HeaderChecksum = verifyIPv4HeaderChecksum
    }
}

/// Decodes a captured frame down to its outermost TCP or UDP header and
/// applies Linux's receive checks (docs/ParsingRules.md lists every rule and
/// the Linux function it follows).
///
/// Supported link types: see ``LinkType/isSupported``. The *outermost*
/// IPv4/IPv6 header decides: TCP or UDP directly behind it (after IPv6
/// hop-by-hop, routing, destination-options and atomic-fragment headers) is
/// delivered; anything else — ARP, ICMP (including ICMP errors quoting a
/// TCP/UDP header), IP-in-IP, GRE, AH/ESP, fragments, multicast and
/// broadcast destinations (no group membership), martian addresses — is
/// dropped with a ``DropReason``; ``parseNetwork(_:linkType:wireLength:)``
/// instead describes fragments and ICMP for the stack's reassembly and ICMP
/// input (the NetStack module). Malformed or truncated
/// input is always a drop, never a crash or an out-of-bounds read: every
/// load is preceded by a bounds check against the captured length.
///
/// The receiving device matters to Linux (127.0.0.0/8 and ::1 are accepted
/// only on a loopback device); the parser infers it from the link layer:
/// BSD loopback (NULL, LOOP), Linux cooked headers with ARPHRD_LOOPBACK,
/// and Ethernet frames whose two MAC addresses are zero (what Linux's
/// loopback device writes) come from a loopback device; raw IP and other
/// Ethernet frames do not.
///
/// Concurrency and cost: a stateless value; `parse` may be called from any
/// number of threads at once. It allocates nothing, takes no locks and
/// does no ARC traffic: a handful of bounds-checked loads per header plus
/// the 20-byte IPv4 header checksum.
@frozen
public struct PacketParser: Sendable, BitwiseCopyable {
    /// What the parser checks beyond the headers' structure (see
    /// ``ParserOptions``).
    public var options: ParserOptions

    /// Bound on the IPv6 extension-header chain walked before giving up
    /// (``DropReason/badIPv6Extension``): a frame cannot make us loop long.
    public static let maxIPv6ExtensionHeaders = 16

    /// Bound on the options (other than padding) in one IPv6 hop-by-hop or
    /// destination options header; more are ``DropReason/badIPv6Option``
    /// (Linux's default net.ipv6.max_hbh_opts_number and
    /// max_dst_opts_number).
    public static let maxIPv6OptionsPerHeader = 8

    /// A parser with the given options. A plain value: create it once and share
    /// it, or copy it, between threads.
    @inlinable
    public init(options: ParserOptions = ParserOptions()) {
        self.options = options
    }

    /// Parses one frame.
    ///
    /// - Parameters:
    ///   - frame: the captured bytes (`caplen` of them), starting at the
    ///     link-layer header. Only read during the call.
    ///   - linkType: the frame's link-layer header type.
    ///   - wireLength: the frame's original length on the wire (`len`);
    ///     `nil` (or anything below `frame.count`) means `frame.count`.
    ///     Used to tell snaplen truncation from malformed lengths.
    public func parse(_ frame: UnsafeRawBufferPointer, linkType: LinkType, wireLength: Int? = nil) -> ParseResult {
        parse(frame, linkType: linkType, wireLength: wireLength, network: nil)
    }

    /// Parses one frame for the stack: as ``parse(_:linkType:wireLength:)``
    /// (same checks, same order, same results for TCP and UDP), except that
    /// a fragment (IPv4 MF or offset; IPv6 Fragment header with M or an
    /// offset) and an ICMP / ICMPv6 message that passed every check before
    /// the point where `parse` drops it as ``DropReason/ipv4Fragment``,
    /// ``DropReason/ipv6Fragment`` or ``DropReason/notTCPUDP`` come back as
    /// ``NetworkParseResult/network(_:)`` instead. One parser, not two: the
    /// frames that `parse` delivers or drops for any other reason are
    /// delivered or dropped here identically.
    ///
    /// An IPv6 fragment's walk ends at its Fragment header: the headers
    /// behind it belong to the fragmentable part and are parsed after
    /// reassembly (Linux: ipv6_frag_rcv). An IPv6 fragment of a jumbogram
    /// stays dropped (RFC 2675 §3: jumbograms are never fragmented).
    ///
    /// Concurrency and cost: as `parse` (stateless, any thread, no
    /// allocation); the extra work is confined to the frames it returns as
    /// `.network`.
    public func parseNetwork(_ frame: UnsafeRawBufferPointer, linkType: LinkType,
                             wireLength: Int? = nil) -> NetworkParseResult {
        var network: NetworkPacket? = nil
        let result = withUnsafeMutablePointer(to: &network) {
            parse(frame, linkType: linkType, wireLength: wireLength, network: $0)
        }
        if let network { return .network(network) }
        switch result {
        case .packet(let p): return .transport(p)
        case .dropped(let r): return .dropped(r)
        }
    }

    /// The one parser behind `parse` and `parseNetwork`: `network` is nil
    /// for `parse`, so that the TCP/UDP path is the same code either way
    /// and the only extra work is a nil test on the drop paths of
    /// fragments and non-TCP/UDP protocols.
    @inline(__always)
    func parse(_ frame: UnsafeRawBufferPointer, linkType: LinkType, wireLength: Int?,
               network: UnsafeMutablePointer<NetworkPacket?>?) -> ParseResult {
        let wire = max(wireLength ?? frame.count, frame.count)
        var cursor = Cursor(frame: frame, wireEnd: wire)
        cursor.network = network
        let family: AddressFamily
        switch linkType.rawValue {
        case 1:
            guard let f = cursor.ethernet() else { return .dropped(cursor.reason) }
            family = f
        case 12, 14, 101:
            guard cursor.available >= 1 else { return .dropped(.truncatedIPv4) }
            switch frame[0] >> 4 {
            case 4: family = .ipv4
            case 6: family = .ipv6
            default: return .dropped(.notIP)
            }
        case 228:
            family = .ipv4
        case 229:
            family = .ipv6
        case 113:
            guard let f = cursor.linuxSLL() else { return .dropped(cursor.reason) }
            family = f
        case 276:
            guard let f = cursor.linuxSLL2() else { return .dropped(cursor.reason) }
            family = f
        case 0, 108:
            guard let f = cursor.loopback() else { return .dropped(cursor.reason) }
            family = f
        default:
            return .dropped(.unsupportedLinkType)
        }
        switch family {
        case .ipv4: return cursor.ipv4(options)
        case .ipv6: return cursor.ipv6(options)
        }
    }
}

/// The parse state: a position in the frame plus the end of the current
/// protocol data unit on the wire. Internal; all reads are bounds-checked
/// against `frame.count` first.
@usableFromInline
struct Cursor {
    let frame: UnsafeRawBufferPointer
    /// Offset of the current header.
    var offset = 0
    /// End of the current unit on the wire (may exceed `frame.count` when
    /// the capture was truncated by the snaplen).
    var wireEnd: Int
    /// Set when a link-layer step fails.
    var reason = DropReason.unsupportedLinkType
    /// The frame came in on a loopback device (Linux: IFF_LOOPBACK), as far
    /// as the link layer tells; see ``PacketParser``.
    var loopbackDevice = false
    /// The frame was sent to a link-layer broadcast or multicast address
    /// (Linux: skb->pkt_type PACKET_BROADCAST or PACKET_MULTICAST).
    var linkMulticast = false
    /// Where ``PacketParser/parseNetwork(_:linkType:wireLength:)`` wants
    /// fragments and ICMP described; nil for ``PacketParser/parse(_:linkType:wireLength:)``.
    var network: UnsafeMutablePointer<NetworkPacket?>? = nil

    init(frame: UnsafeRawBufferPointer, wireEnd: Int) {
        self.frame = frame
        self.wireEnd = wireEnd
    }

    /// Captured bytes from `offset` on.
    var available: Int { frame.count - offset }

    @inline(__always)
    func u8(_ at: Int) -> UInt8 { frame[at] }

    @inline(__always)
    func u16(_ at: Int) -> UInt16 { frame.loadUnaligned(fromByteOffset: at, as: UInt16.self).bigEndian }

    @inline(__always)
    func u32(_ at: Int) -> UInt32 { frame.loadUnaligned(fromByteOffset: at, as: UInt32.self).bigEndian }

    // MARK: Link layer

    /// Maps an EtherType to an IP family, or records why not.
    @inline(__always)
    mutating func family(ofEtherType type: UInt16) -> AddressFamily? {
        switch type {
        case 0x0800: return .ipv4
        case 0x86DD: return .ipv6
        default:
            reason = .notIP
            return nil
        }
    }

    /// Ethernet II with any number of 802.1Q (0x8100), 802.1ad (0x88A8) or
    /// legacy QinQ (0x9100) tags. 802.3 length frames (LLC/SNAP) are not IP
    /// for us.
    mutating func ethernet() -> AddressFamily? {
        guard available >= 14 else { reason = .truncatedEthernet; return nil }
        // The group bit of the destination is what eth_type_trans turns into
        // PACKET_BROADCAST / PACKET_MULTICAST. Linux's loopback device has an
        // all-zero hardware address and writes it as both addresses.
        linkMulticast = u8(0) & 1 != 0
        loopbackDevice = u32(0) | u32(4) | u32(8) == 0
        var type = u16(12)
        offset = 14
        while type == 0x8100 || type == 0x88A8 || type == 0x9100 {
            guard available >= 4 else { reason = .truncatedEthernet; return nil }
            type = u16(offset + 2)
            offset += 4
        }
        return family(ofEtherType: type)
    }

    /// Linux cooked v1: packet type, ARPHRD type, address length, 8 address
    /// bytes, protocol.
    mutating func linuxSLL() -> AddressFamily? {
        guard available >= 16 else { reason = .truncatedCooked; return nil }
        let packetType = u16(0), hatype = u16(2), proto = u16(14)
        offset = 16
        return cooked(hatype: hatype, protocol: proto, packetType: packetType)
    }

    /// Linux cooked v2: protocol, reserved, ifindex, ARPHRD type, packet
    /// type, address length, 8 address bytes.
    mutating func linuxSLL2() -> AddressFamily? {
        guard available >= 20 else { reason = .truncatedCooked; return nil }
        let proto = u16(0), hatype = u16(8), packetType = UInt16(u8(10))
        offset = 20
        return cooked(hatype: hatype, protocol: proto, packetType: packetType)
    }

    /// The cooked header's ARPHRD type and skb->pkt_type tell the device and
    /// the link-layer destination class.
    @inline(__always)
    mutating func cooked(hatype: UInt16, protocol proto: UInt16, packetType: UInt16) -> AddressFamily? {
        switch hatype {
        case 770, 803, 824:  // Frame Relay, radiotap, netlink: "protocol" is not an EtherType
            reason = .notIP
            return nil
        default:
            guard let f = family(ofEtherType: proto) else { return nil }
            // PACKET_OTHERHOST (3): ip_rcv_core / ip6_rcv_core drop it first thing.
            if packetType == 3 { reason = .otherHost; return nil }
            linkMulticast = packetType == 1 || packetType == 2  // PACKET_BROADCAST, PACKET_MULTICAST
            loopbackDevice = hatype == 772  // ARPHRD_LOOPBACK
            return f
        }
    }

    /// BSD NULL / OpenBSD LOOP: a 32-bit address family in either byte
    /// order (a value with upper 16 bits set is byte-swapped, as tshark
    /// does). AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD, OpenBSD),
    /// 28 (FreeBSD, DragonFly) or 30 (Darwin). Linux's 10 is not a BSD
    /// value and is not recognised (tshark does not either).
    mutating func loopback() -> AddressFamily? {
        guard available >= 4 else { reason = .truncatedLoopback; return nil }
        var af = u32(0)
        if af & 0xFFFF_0000 != 0 { af = af.byteSwapped }
        offset = 4
        loopbackDevice = true
        switch af {
        case 2: return .ipv4
        case 24, 28, 30: return .ipv6
        default:
            reason = .notIP
            return nil
        }
    }

    // MARK: IPv4

    mutating func ipv4(_ options: ParserOptions) -> ParseResult {
        let ip = offset
        // ip_rcv_core: header present, version 4, IHL >= 5, the IHL's bytes
        // present, header checksum, then total length against the frame.
        guard available >= 20 else { return .dropped(.truncatedIPv4) }
        let vihl = u8(ip)
        guard vihl >> 4 == 4 else { return .dropped(.badIPv4Version) }
        let headerLength = Int(vihl & 0x0f) * 4
        guard headerLength >= 20 else { return .dropped(.badIPv4HeaderLength) }
        guard available >= headerLength else { return .dropped(.truncatedIPv4) }
        if (options.verifyIPv4HeaderChecksum || options.verifyChecksums)
            && !Checksum.ipv4HeaderVerifies(frame, from: ip, length: headerLength) {
            return .dropped(.badIPv4HeaderChecksum)
        }
        let wireAvailable = wireEnd - ip
        let proto = u8(ip + 9)
        var totalLength = Int(u16(ip + 2))
        if totalLength == 0 && proto == 6 {
            // A capture of a TSO / BIG TCP super-segment, whose length does
            // not fit 16 bits: Linux's iph_totlen reads such a GSO TCP skb's
            // length from the skb, so use the frame (tshark does too).
            totalLength = wireAvailable
        }
        guard totalLength >= headerLength, totalLength <= wireAvailable else {
            return .dropped(.badIPv4TotalLength)
        }
        let sourceValue = u32(ip + 12), destinationValue = u32(ip + 16)
        // One test on the first octets keeps the common case cheap: only
        // 0/8, 127/8 and 224/3 (multicast, class E, broadcast) need a look.
        let sh = sourceValue >> 24, dh = destinationValue >> 24
        if sh == 0 || sh == 127 || sh >= 224 || dh == 0 || dh == 127 || dh >= 224,
           let r = ipv4AddressRule(source: sourceValue, destination: destinationValue) {
            return .dropped(r)
        }
        // ip_rcv_finish_core: options are compiled after routing.
        if headerLength > 20, let r = ipv4OptionsRule(ip: ip, headerLength: headerLength) {
            return .dropped(r)
        }
        // ip_local_deliver: MF or an offset means reassembly (ip_defrag);
        // no fragment may reach a socket. parseNetwork describes it for
        // the stack's reassembly.
        if u16(ip + 6) & 0x3fff != 0 {
            if network != nil { describeIPv4Fragment(ip: ip, headerLength: headerLength, totalLength: totalLength) }
            return .dropped(.ipv4Fragment)
        }
        let source = IPAddress(ipv4: sourceValue)
        let destination = IPAddress(ipv4: destinationValue)
        wireEnd = ip + totalLength
        offset = ip + headerLength
        let addressSum = options.verifyChecksums ? Checksum.sum(frame, from: ip + 12, count: 8) : 0
        return transport(proto, source: source, destination: destination, networkOffset: ip,
                         addressSum: addressSum, options)
    }

    /// The address checks of ip_route_input_rcu / ip_route_input_slow (in
    /// their order) plus this stack's lack of multicast and broadcast
    /// sockets. Off a loopback device only, Linux routes the packet and
    /// rejects martians (route_localnet off); on loopback the dst of the
    /// sender is kept and no martian check runs.
    @inline(never)  // cold: only unusual addresses and headers get here
    func ipv4AddressRule(source s: UInt32, destination d: UInt32) -> DropReason? {
        @inline(__always) func isMulticast(_ a: UInt32) -> Bool { a >> 28 == 0xe }
        let limitedBroadcast: UInt32 = 0xffff_ffff
        if !loopbackDevice && (isMulticast(s) || s == limitedBroadcast) { return .martianSource }
        if d == limitedBroadcast || (s == 0 && d == 0) { return .broadcastDestination }
        if isMulticast(d) { return .multicastDestination }
        guard !loopbackDevice else { return nil }
        if s >> 24 == 0 { return .martianSource }
        if d >> 24 == 0 || d >> 24 == 127 { return .martianDestination }
        if s >> 24 == 127 { return .martianSource }
        return nil
    }

    /// ip_options_compile's checks on a received header's options, and
    /// ip_rcv_options' refusal of source routes (accept_source_route is off
    /// by default: net.ipv4.conf.all.accept_source_route = 0). CIPSO
    /// contents are not validated (only that there is one).
    @inline(never)  // cold: only unusual addresses and headers get here
    func ipv4OptionsRule(ip: Int, headerLength: Int) -> DropReason? {
        var o = ip + 20
        let end = ip + headerLength
        var seen: UInt8 = 0  // bit 0: source route, 1: record route, 2: timestamp, 3: CIPSO
        var sourceRoute = false
        while o < end {
            let type = u8(o)
            if type == 0 { break }        // end of option list
            if type == 1 { o += 1; continue }  // no-operation
            guard end - o >= 2 else { return .badIPv4Options }
            let length = Int(u8(o + 1))
            guard length >= 2, length <= end - o else { return .badIPv4Options }
            let pointer = length >= 3 ? Int(u8(o + 2)) : 0
            switch type {
            case 131, 137:  // loose, strict source route
                guard length >= 3, pointer >= 4, seen & 1 == 0 else { return .badIPv4Options }
                seen |= 1
                sourceRoute = true
            case 7:  // record route
                guard seen & 2 == 0, length >= 3, pointer >= 4 else { return .badIPv4Options }
                if pointer <= length && pointer + 3 > length { return .badIPv4Options }
                seen |= 2
            case 68:  // timestamp
                guard seen & 4 == 0, length >= 4, pointer >= 5 else { return .badIPv4Options }
                let flag = u8(o + 3) & 0xf
                if pointer <= length {
                    if pointer + 3 > length { return .badIPv4Options }
                    if (flag == 1 || flag == 3) && pointer + 7 > length { return .badIPv4Options }
                } else if flag != 3 && u8(o + 3) >> 4 == 15 {
                    return .badIPv4Options  // the overflow counter would overflow
                }
                seen |= 4
            case 148:  // router alert
                guard length >= 4 else { return .badIPv4Options }
            case 134:  // CIPSO: at most one
                guard seen & 8 == 0 else { return .badIPv4Options }
                seen |= 8
            default:
                break  // other options are accepted on receive
            }
            o += length
        }
        return sourceRoute ? .ipv4SourceRoute : nil
    }

    // MARK: IPv6

    mutating func ipv6(_ options: ParserOptions) -> ParseResult {
        let ip = offset
        guard available >= 40 else { return .dropped(.truncatedIPv6) }
        guard u8(ip) >> 4 == 6 else { return .dropped(.badIPv6Version) }
        let source = IPAddress(unchecked: frame, at: ip + 8, family: .ipv6)
        let destination = IPAddress(unchecked: frame, at: ip + 24, family: .ipv6)
        if let r = ipv6AddressRule(source: source, destination: destination) { return .dropped(r) }
        var next = u8(ip + 6)
        let wireAvailable = wireEnd - ip
        let payloadLength = Int(u16(ip + 4))
        if payloadLength == 0 && (next == 0 || next == 6) {
            // ip6_rcv_core: 0 with a hop-by-hop header may be a jumbogram
            // (RFC 2675; its option sets the length below, and without one
            // Linux keeps the whole frame). 0 with TCP: a capture of a BIG TCP
            // super-segment (ipv6_payload_len reads a GSO TCP skb's length
            // from the skb), as for IPv4.
            wireEnd = ip + wireAvailable
        } else if 40 + payloadLength > wireAvailable || payloadLength == 0 {
            // Longer than the frame: ip6_rcv_core drops it (tshark only
            // warns). 0 otherwise: Linux trims the packet to its 40-byte
            // header, leaving nothing for a transport header.
            return .dropped(.badIPv6PayloadLength)
        } else {
            wireEnd = ip + 40 + payloadLength
        }
        offset = ip + 40
        var chained = 0
        // The byte holding `next` (for a Fragment header: what reassembly
        // rewrites); only updated behind extension headers.
        var nextField = ip + 6
        while true {
            switch next {
            case 6, 17:
                let addressSum = options.verifyChecksums ? Checksum.sum(frame, from: ip + 8, count: 32) : 0
                return transport(next, source: source, destination: destination, networkOffset: ip,
                                 addressSum: addressSum, options)
            case 0, 43, 60, 44:
                chained += 1
                guard chained <= PacketParser.maxIPv6ExtensionHeaders else { return .dropped(.badIPv6Extension) }
                // Only ip6_rcv_core parses hop-by-hop options, directly after
                // the fixed header; elsewhere no protocol handler exists for it.
                if next == 0 && offset != ip + 40 { return .dropped(.ipv6HopByHopNotFirst) }
                // Linux pulls 8 bytes of every extension header before
                // reading its length.
                guard offset + 8 <= wireEnd else { return .dropped(.badIPv6Extension) }
                guard offset + 8 <= frame.count else { return .dropped(.truncatedIPv6) }
                let length = next == 44 ? 8 : (Int(u8(offset + 1)) + 1) * 8
                guard offset + length <= wireEnd else { return .dropped(.badIPv6Extension) }
                guard offset + length <= frame.count else { return .dropped(.truncatedIPv6) }
                switch next {
                case 44:
                    // ipv6_frag_rcv: offset 0 without "more fragments" is an
                    // atomic fragment (RFC 6946), the whole datagram.
                    if u16(offset + 2) & 0xfff9 != 0 {
                        if network != nil && payloadLength != 0 {
                            describeIPv6Fragment(ip: ip, fragmentHeader: offset, nextField: nextField)
                        }
                        return .dropped(.ipv6Fragment)
                    }
                case 43:
                    if let r = routingHeaderRule(at: offset) { return .dropped(r) }
                default:
                    var jumbo = -1
                    if let r = ipv6OptionsRule(at: offset, length: length, hopByHop: next == 0, ip: ip,
                                               payloadLength: payloadLength, jumbo: &jumbo) {
                        return .dropped(r)
                    }
                    if jumbo >= 0 { wireEnd = ip + 40 + jumbo }
                }
                next = u8(offset)
                nextField = offset
                offset += length
            case 50, 51:
                return .dropped(.ipsec)
            default:
                if next == 58 && network != nil { describeICMP(ip: ip, proto: 58) }
                return .dropped(.notTCPUDP)
            }
        }
    }

    /// ip6_rcv_core's address checks (RFC 4291 2.5.3, 2.7 and erratum 3480),
    /// the unspecified destination, which no route delivers locally, and
    /// this stack's lack of multicast group membership.
    /// The IPv4-mapped source check is TCP's (tcp_v6_conn_request); UDP
    /// accepts it.
    @inline(never)  // cold: only unusual addresses and headers get here
    func ipv6AddressRule(source: IPAddress, destination: IPAddress) -> DropReason? {
        let loopbackHigh: UInt64 = 0, loopbackLow: UInt64 = 1
        if !loopbackDevice {
            if source.high == loopbackHigh && source.low == loopbackLow { return .martianSource }
            if destination.high == loopbackHigh && destination.low == loopbackLow { return .martianDestination }
        }
        if destination.high >> 56 == 0xff {
            let scope = (destination.high >> 48) & 0xf
            if scope == 0 || (scope == 1 && !loopbackDevice) { return .martianDestination }
        }
        if source.high >> 56 == 0xff { return .martianSource }
        if destination.high == 0 && destination.low == 0 { return .martianDestination }
        // ip6_mc_input (and ip6_protocol_deliver_rcu) deliver a multicast
        // destination only for a group the device joined; none are.
        if destination.high >> 56 == 0xff { return .multicastDestination }
        return nil
    }

    /// ipv6_rthdr_rcv: a routing header is passed over for local delivery
    /// only with no segments left; segment routing (type 4, SRv6) and RPL
    /// (type 3) are refused while seg6_enabled / rpl_seg_enabled are off
    /// (their default); a type 2 header with no segments left was not
    /// processed by this host and is discarded. The caller has checked that
    /// 8 bytes are present.
    @inline(never)  // cold: only unusual addresses and headers get here
    func routingHeaderRule(at rh: Int) -> DropReason? {
        let type = u8(rh + 2), segmentsLeft = u8(rh + 3)
        if type == 3 || type == 4 || type == 2 || segmentsLeft != 0 { return .ipv6RoutingHeader }
        return nil
    }

    /// ip6_parse_tlv over one hop-by-hop or destination options header:
    /// padding of at most 7 bytes in a row and PadN of zeros only (RFC 4942
    /// 2.1.9.5), every option inside the header, at most
    /// ``PacketParser/maxIPv6OptionsPerHeader`` options, unknown options
    /// skipped only if their action bits are 00 (RFC 8200 4.2). Hop-by-hop:
    /// router alert must be 2 bytes long (ipv6_hop_ra); a jumbo payload
    /// option (ipv6_hop_jumbo) must be 4 bytes at 4n+2, above 65535, with
    /// payload length 0, inside the frame: its value goes to `jumbo`; CALIPSO
    /// is refused (no domain configured). Destination options: a home
    /// address option is refused (no Mobile IPv6 binding). The caller has
    /// checked that the header is present.
    @inline(never)  // cold: only unusual addresses and headers get here
    func ipv6OptionsRule(at header: Int, length: Int, hopByHop: Bool, ip: Int,
                         payloadLength: Int, jumbo: inout Int) -> DropReason? {
        var o = header + 2
        let end = header + length
        var padding = 0, count = 0
        while o < end {
            let type = u8(o)
            if type == 0 {  // Pad1
                padding += 1
                if padding > 7 { return .badIPv6Option }
                o += 1
                continue
            }
            guard end - o >= 2 else { return .badIPv6Option }
            let optionLength = Int(u8(o + 1)) + 2
            guard optionLength <= end - o else { return .badIPv6Option }
            if type == 1 {  // PadN
                padding += optionLength
                if padding > 7 { return .badIPv6Option }
                for i in 2..<optionLength where u8(o + i) != 0 { return .badIPv6Option }
            } else {
                count += 1
                if count > PacketParser.maxIPv6OptionsPerHeader { return .badIPv6Option }
                switch (hopByHop, type) {
                case (true, 0x05):  // router alert
                    if optionLength != 4 { return .badIPv6Option }
                case (true, 0xc2):  // jumbo payload
                    guard optionLength == 6, (o - ip) & 3 == 2, payloadLength == 0 else { return .badIPv6Option }
                    let value = Int(u32(o + 2))
                    guard value > 0xffff, value <= wireEnd - ip - 40 else { return .badIPv6Option }
                    jumbo = value
                case (true, 0x07), (false, 0xc9):  // CALIPSO, home address
                    return .badIPv6Option
                default:
                    // IOAM (0x11) is ignored with ioam6_enabled off, as any
                    // option whose action bits say "skip".
                    if type >> 6 != 0 { return .badIPv6Option }
                }
                padding = 0
            }
            o += optionLength
        }
        return nil
    }

    // MARK: Transport layer

    // @_transparent, not @inline(__always): with tcp and udp inlined into it
    // the optimizer declined the hint, and the ParseResult then went through
    // a stack copy per packet (about 7 ns of a 20 ns parse, measured).
    @_transparent
    mutating func transport(_ proto: UInt8, source: IPAddress, destination: IPAddress, networkOffset: Int,
                            addressSum: UInt32, _ options: ParserOptions) -> ParseResult {
        switch proto {
        case 6:
            return tcp(source: source, destination: destination, networkOffset: networkOffset,
                       addressSum: addressSum, options)
        case 17:
            return udp(source: source, destination: destination, networkOffset: networkOffset,
                       addressSum: addressSum, options)
        case 50, 51:
            return .dropped(.ipsec)
        default:
            // Only IPv4 gets here with a protocol other than TCP/UDP.
            if proto == 1 && network != nil { describeICMP(ip: networkOffset, proto: 1) }
            return .dropped(.notTCPUDP)
        }
    }

    // MARK: Network-layer descriptions (parseNetwork only)

    // Cold: reached only by parseNetwork, for frames `parse` drops anyway.
    // `offset` and `wireEnd` are where the checks left them.

    @inline(never)
    func describeIPv4Fragment(ip: Int, headerLength: Int, totalLength: Int) {
        let flags = u16(ip + 6)
        let end = ip + totalLength
        network!.pointee = NetworkPacket(
            source: IPAddress(ipv4: u32(ip + 12)), destination: IPAddress(ipv4: u32(ip + 16)),
            networkOffset: ip, upperLayerProtocol: u8(ip + 9), upperLayerOffset: ip + headerLength, end: end,
            isTruncated: end > frame.count, loopbackDevice: loopbackDevice,
            fragment: FragmentInfo(identification: UInt32(u16(ip + 4)), offset: Int(flags & 0x1fff) * 8,
                                   moreFragments: flags & 0x2000 != 0, dontFragment: flags & 0x4000 != 0,
                                   headerOffset: ip, nextHeaderFieldOffset: ip + 9))
    }

    @inline(never)
    func describeIPv6Fragment(ip: Int, fragmentHeader f: Int, nextField: Int) {
        let field = u16(f + 2)
        network!.pointee = NetworkPacket(
            source: IPAddress(unchecked: frame, at: ip + 8, family: .ipv6),
            destination: IPAddress(unchecked: frame, at: ip + 24, family: .ipv6),
            networkOffset: ip, upperLayerProtocol: u8(f), upperLayerOffset: f + 8, end: wireEnd,
            isTruncated: wireEnd > frame.count, loopbackDevice: loopbackDevice,
            fragment: FragmentInfo(identification: u32(f + 4), offset: Int(field & 0xfff8),
                                   moreFragments: field & 1 != 0, dontFragment: false,
                                   headerOffset: f, nextHeaderFieldOffset: nextField))
    }

    @inline(never)
    func describeICMP(ip: Int, proto: UInt8) {
        let family: AddressFamily = proto == 1 ? .ipv4 : .ipv6
        network!.pointee = NetworkPacket(
            source: IPAddress(unchecked: frame, at: ip + (proto == 1 ? 12 : 8), family: family),
            destination: IPAddress(unchecked: frame, at: ip + (proto == 1 ? 16 : 24), family: family),
            networkOffset: ip, upperLayerProtocol: proto, upperLayerOffset: offset, end: wireEnd,
            isTruncated: wireEnd > frame.count, loopbackDevice: loopbackDevice, fragment: nil)
    }

    @inline(__always)  // the common case: keep the result in registers, not a copy through memory
    mutating func tcp(source: IPAddress, destination: IPAddress, networkOffset: Int,
                      addressSum: UInt32, _ options: ParserOptions) -> ParseResult {
        // tcp_v4_rcv / tcp_v6_rcv: only PACKET_HOST frames, then the header
        // and its data offset.
        if linkMulticast { return .dropped(.tcpLinkBroadcast) }
        let t = offset
        let capturedEnd = min(wireEnd, frame.count)
        guard t + 20 <= capturedEnd else { return .dropped(.truncatedTCP) }
        let headerLength = Int(u8(t + 12) >> 4) * 4
        guard headerLength >= 20, t + headerLength <= wireEnd else { return .dropped(.badTCPDataOffset) }
        guard t + headerLength <= capturedEnd else { return .dropped(.truncatedTCP) }
        // tcp_v6_conn_request refuses a v4-mapped source; no other segment
        // from one can match an IPv6 connection (Linux carries v4-mapped
        // peers over IPv4).
        if source.family == .ipv6 && source.high == 0 && source.low >> 32 == 0xffff {
            return .dropped(.v4MappedSource)
        }
        let truncated = wireEnd > frame.count
        if options.verifyChecksums && !truncated
            && Checksum.fold(Checksum.pseudoHeader(addressSum: addressSum, protocol: 6, length: wireEnd - t)
                &+ Checksum.sum(frame, from: t, count: wireEnd - t)) != 0 {
            return .dropped(.checksum)
        }
        let flow = FlowKey(transport: .tcp, source: source, sourcePort: u16(t),
                           destination: destination, destinationPort: u16(t + 2))
        let info = TCPSegmentInfo(sequenceNumber: u32(t + 4), acknowledgmentNumber: u32(t + 8),
                                  flags: TCPFlags(rawValue: u16(t + 12) & 0x1ff), window: u16(t + 14))
        let payload = t + headerLength
        return .packet(ParsedPacket(
            flow: flow, networkOffset: networkOffset, transportOffset: t, payloadOffset: payload,
            payloadLength: wireEnd - payload, capturedPayloadLength: capturedEnd - payload, tcp: info,
            isTruncated: truncated))
    }

    @inline(__always)  // as tcp
    mutating func udp(source: IPAddress, destination: IPAddress, networkOffset: Int,
                      addressSum: UInt32, _ options: ParserOptions) -> ParseResult {
        let t = offset
        let capturedEnd = min(wireEnd, frame.count)
        guard t + 8 <= capturedEnd else { return .dropped(.truncatedUDP) }
        var length = Int(u16(t + 4))
        let segment = wireEnd - t
        let ipv6 = source.family == .ipv6
        // __udp6_lib_rcv: length 0 means the rest of the IPv6 payload (RFC
        // 2675 jumbograms); __udp4_lib_rcv has no such case.
        if length == 0 && ipv6 { length = segment }
        guard length >= 8, length <= segment else { return .dropped(.badUDPLength) }
        let stored = u16(t + 6)
        if stored == 0 && ipv6 { return .dropped(.udpZeroChecksumIPv6) }
        let end = t + length
        let truncated = end > frame.count
        // "No checksum" (0) is allowed for UDP over IPv4.
        if options.verifyChecksums && !truncated && stored != 0 {
            // The pseudo-header length is UDP's own length field.
            let pseudo = Checksum.pseudoHeader(addressSum: addressSum, protocol: 17, length: length)
            if Checksum.fold(pseudo &+ Checksum.sum(frame, from: t, count: length)) != 0 {
                return .dropped(.checksum)
            }
        }
        let flow = FlowKey(transport: .udp, source: source, sourcePort: u16(t),
                           destination: destination, destinationPort: u16(t + 2))
        let payload = t + 8
        return .packet(ParsedPacket(
            flow: flow, networkOffset: networkOffset, transportOffset: t, payloadOffset: payload,
            payloadLength: end - payload, capturedPayloadLength: min(end, frame.count) - payload, tcp: nil,
            isTruncated: truncated))
    }
}
