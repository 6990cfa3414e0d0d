/// Why ``PacketParser`` did not deliver a frame to a TCP or UDP socket.
///
/// Every reason has a stable ``name`` (snake_case) used in `fastdemux
/// classify` output, statistics and JSON; names never change once released.
/// ``summary`` is a short human explanation for reports. Raw values are
/// dense from 0 so that per-reason counters can be a plain array indexed by
/// `rawValue` (see ``DropReason/count``).
///
/// The receive rules behind each reason, with the Linux function each one
/// follows, are listed in docs/ParsingRules.md.
@frozen
public enum DropReason: UInt8, CaseIterable, Sendable, BitwiseCopyable, CustomStringConvertible {
    // Link layer.
    /// The link type is not one ``PacketParser`` decodes.
    case unsupportedLinkType = 0
    /// Shorter than an Ethernet header (or a VLAN tag it announces).
    case truncatedEthernet
    /// Shorter than the Linux cooked (SLL/SLL2) header.
    case truncatedCooked
    /// Shorter than the 4-byte BSD loopback header.
    case truncatedLoopback
    /// The link layer carries something other than IPv4/IPv6 (ARP, LLC,
    /// an unknown address family, ...).
    case notIP

    // IPv4.
    /// The capture ends inside the IPv4 header (before 20 bytes or before
    /// the length its IHL gives).
    case truncatedIPv4
    /// The IPv4 header's version field is not 4 (with an Ethernet type, cooked
    /// protocol or loopback family that announced IPv4).
    case badIPv4Version
    /// IHL < 5.
    case badIPv4HeaderLength
    /// Total length shorter than the header, or longer than the frame.
    case badIPv4TotalLength

    // IPv6.
    /// The capture ends inside the 40-byte IPv6 header or an extension
    /// header the parser must read.
    case truncatedIPv6
    /// The IPv6 header's version field is not 6 (with a link layer that
    /// announced IPv6).
    case badIPv6Version
    /// An extension header that runs past the packet, or too long a chain.
    case badIPv6Extension

    // Transport.
    /// The (outermost) IP header carries neither TCP nor UDP: ICMP (also
    /// ICMP errors quoting a TCP/UDP header), IP-in-IP, GRE, "no next
    /// header", ...
    case notTCPUDP
    /// AH or ESP: the transport header is behind IPsec processing, which a
    /// demultiplexer without security associations cannot do.
    case ipsec
    /// The capture ends inside the TCP header (before 20 bytes or before its
    /// data offset).
    case truncatedTCP
    /// TCP data offset < 5 or past the end of the segment.
    case badTCPDataOffset
    /// The capture ends inside the 8-byte UDP header.
    case truncatedUDP
    /// UDP length < 8 or longer than the IP payload.
    case badUDPLength
    /// A TCP or UDP checksum failed (only with
    /// ``ParserOptions/verifyChecksums``).
    case checksum

    // Receive rules (Linux's input checks beyond the header structure).
    /// The IPv4 header checksum is wrong (Linux: ip_rcv_core).
    case badIPv4HeaderChecksum
    /// Malformed IPv4 options (Linux: ip_options_compile).
    case badIPv4Options
    /// An IPv4 loose or strict source route option (Linux: ip_rcv_options
    /// drops them unless accept_source_route, off by default).
    case ipv4SourceRoute
    /// An IPv4 fragment (first or later): this stack has no reassembly yet,
    /// so no fragment may reach a socket (Linux: ip_local_deliver
    /// reassembles).
    case ipv4Fragment
    /// A source address Linux never accepts from that device: IPv4
    /// multicast, limited broadcast, 0.0.0.0/8 or 127.0.0.0/8 off a
    /// loopback device (ip_route_input_slow); IPv6 multicast or ::1 off a
    /// loopback device (ip6_rcv_core).
    case martianSource
    /// A destination address Linux never accepts from that device: IPv4
    /// 0.0.0.0/8 or 127.0.0.0/8 off a loopback device (ip_route_input_slow);
    /// IPv6 ::1 off a loopback device, the unspecified address, multicast of
    /// scope 0, or interface-local multicast off a loopback device
    /// (ip6_rcv_core).
    case martianDestination
    /// The IPv4 limited broadcast 255.255.255.255 (or 0.0.0.0 to
    /// 0.0.0.0, which Linux treats as broadcast): this stack has only
    /// unicast sockets.
    case broadcastDestination
    /// An IPv4 or IPv6 multicast destination: Linux delivers it only to
    /// sockets of groups the host joined; this stack has no group
    /// membership yet.
    case multicastDestination
    /// A frame the capture device received for another host (Linux cooked
    /// packet type PACKET_OTHERHOST; ip_rcv_core and ip6_rcv_core drop it).
    case otherHost
    /// The IPv6 payload length runs past the frame, or is 0 without a
    /// jumbo payload option (Linux: ip6_rcv_core).
    case badIPv6PayloadLength
    /// A hop-by-hop options header anywhere but directly after the IPv6
    /// header (RFC 8200 4.1; Linux has no handler for it there).
    case ipv6HopByHopNotFirst
    /// A malformed or rejected option in an IPv6 hop-by-hop or destination
    /// options header (Linux: ip6_parse_tlv).
    case badIPv6Option
    /// An IPv6 routing header Linux does not deliver locally: segments left
    /// (the packet is to be forwarded), a segment routing header (SRv6,
    /// RPL: off by default) or an unprocessed type 2 header
    /// (ipv6_rthdr_rcv).
    case ipv6RoutingHeader
    /// An IPv6 fragment (first or later; an atomic fragment is a whole
    /// datagram and is delivered): no reassembly yet.
    case ipv6Fragment
    /// TCP over IPv6 from an IPv4-mapped source (::ffff:0:0/96; Linux:
    /// tcp_v6_conn_request).
    case v4MappedSource
    /// TCP in a link-layer broadcast or multicast frame (Linux: tcp_v4_rcv
    /// and tcp_v6_rcv accept only PACKET_HOST).
    case tcpLinkBroadcast
    /// UDP over IPv6 with checksum 0 (RFC 8200 8.1; Linux accepts it only
    /// for sockets that set UDP_NO_CHECK6_RX, which this stack does not
    /// offer).
    case udpZeroChecksumIPv6

    /// Number of reasons; valid raw values are `0..<count`.
    public static let count = DropReason.allCases.count

    /// The stable snake_case name.
    public var name: String {
        switch self {
        case .unsupportedLinkType: return "unsupported_link_type"
        case .truncatedEthernet: return "truncated_ethernet"
        case .truncatedCooked: return "truncated_cooked"
        case .truncatedLoopback: return "truncated_loopback"
        case .notIP: return "not_ip"
        case .truncatedIPv4: return "truncated_ipv4"
        case .badIPv4Version: return "bad_ipv4_version"
        case .badIPv4HeaderLength: return "bad_ipv4_header_length"
        case .badIPv4TotalLength: return "bad_ipv4_total_length"
        case .truncatedIPv6: return "truncated_ipv6"
        case .badIPv6Version: return "bad_ipv6_version"
        case .badIPv6Extension: return "bad_ipv6_extension"
        case .notTCPUDP: return "not_tcp_udp"
        case .ipsec: return "ipsec"
        case .truncatedTCP: return "truncated_tcp"
        case .badTCPDataOffset: return "bad_tcp_data_offset"
        case .truncatedUDP: return "truncated_udp"
        case .badUDPLength: return "bad_udp_length"
        case .checksum: return "checksum"
        case .badIPv4HeaderChecksum: return "bad_ipv4_header_checksum"
        case .badIPv4Options: return "bad_ipv4_options"
        case .ipv4SourceRoute: return "ipv4_source_route"
        case .ipv4Fragment: return "ipv4_fragment"
        case .martianSource: return "martian_source"
        case .martianDestination: return "martian_destination"
        case .broadcastDestination: return "broadcast_destination"
        case .multicastDestination: return "multicast_destination"
        case .otherHost: return "other_host"
        case .badIPv6PayloadLength: return "bad_ipv6_payload_length"
        case .ipv6HopByHopNotFirst: return "ipv6_hop_by_hop_not_first"
        case .badIPv6Option: return "bad_ipv6_option"
        case .ipv6RoutingHeader: return "ipv6_routing_header"
        case .ipv6Fragment: return "ipv6_fragment"
        case .v4MappedSource: return "v4_mapped_source"
        case .tcpLinkBroadcast: return "tcp_link_broadcast"
        case .udpZeroChecksumIPv6: return "udp_zero_checksum_ipv6"
        }
    }

    /// A short human explanation (one line, for reports and JSON).
    public var summary: String {
        switch self {
        case .unsupportedLinkType: return "link type not decoded"
        case .truncatedEthernet: return "capture ends inside the Ethernet header"
        case .truncatedCooked: return "capture ends inside the Linux cooked header"
        case .truncatedLoopback: return "capture ends inside the loopback header"
        case .notIP: return "link layer carries neither IPv4 nor IPv6"
        case .truncatedIPv4: return "capture ends inside the IPv4 header"
        case .badIPv4Version: return "IPv4 version field is not 4"
        case .badIPv4HeaderLength: return "IPv4 header length below 20 bytes"
        case .badIPv4TotalLength: return "IPv4 total length shorter than the header or longer than the frame"
        case .truncatedIPv6: return "capture ends inside the IPv6 header chain"
        case .badIPv6Version: return "IPv6 version field is not 6"
        case .badIPv6Extension: return "IPv6 extension header runs past the packet, or chain too long"
        case .notTCPUDP: return "neither TCP nor UDP directly under the outer IP header"
        case .ipsec: return "AH/ESP: no security associations"
        case .truncatedTCP: return "capture ends inside the TCP header"
        case .badTCPDataOffset: return "TCP data offset below 5 or past the segment"
        case .truncatedUDP: return "capture ends inside the UDP header"
        case .badUDPLength: return "UDP length below 8 or past the IP payload"
        case .checksum: return "TCP/UDP checksum wrong"
        case .badIPv4HeaderChecksum: return "IPv4 header checksum wrong"
        case .badIPv4Options: return "malformed IPv4 options"
        case .ipv4SourceRoute: return "IPv4 source route option: not accepted (accept_source_route off)"
        case .ipv4Fragment: return "IPv4 fragment: reassembly not implemented"
        case .martianSource: return "martian source address"
        case .martianDestination: return "martian destination address"
        case .broadcastDestination: return "broadcast destination: no broadcast sockets"
        case .multicastDestination: return "multicast destination: no group membership"
        case .otherHost: return "frame for another host (PACKET_OTHERHOST)"
        case .badIPv6PayloadLength: return "IPv6 payload length past the frame, or 0 without a jumbo option"
        case .ipv6HopByHopNotFirst: return "IPv6 hop-by-hop header not directly after the IPv6 header"
        case .badIPv6Option: return "malformed or rejected IPv6 hop-by-hop/destination option"
        case .ipv6RoutingHeader: return "IPv6 routing header not for local delivery"
        case .ipv6Fragment: return "IPv6 fragment: reassembly not implemented"
        case .v4MappedSource: return "TCP from an IPv4-mapped IPv6 source"
        case .tcpLinkBroadcast: return "TCP in a link-layer broadcast/multicast frame"
        case .udpZeroChecksumIPv6: return "UDP over IPv6 with checksum 0"
        }
    }

    /// Looks a reason up by its stable ``name``.
    public init?(name: String) {
        guard let r = DropReason.allCases.first(where: { $0.name == name }) else { return nil }
        self = r
    }

    /// The stable ``name``.
    public var description: String { name }
}
