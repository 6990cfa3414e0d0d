/// Why ``PacketParser`` did not deliver a frame to a TCP or UDP socket.
///
/// Every reason has a stable ``name`` (snake_case) used in `fastdemux
/// classify` output, statistics and JSON; names never change once released.
/// Raw values are dense from 0 so that per-reason counters can be a plain
/// array indexed by `rawValue` (see ``DropReason/count``).
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
    /// A fragment whose offset is not 0: it carries no transport header.
    case fragmentNoPorts

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
    /// A checksum failed (only with ``ParserOptions/verifyChecksums``).
    case checksum

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
        case .fragmentNoPorts: return "fragment_no_ports"
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
