/// The link-layer header type of a captured frame, as a pcap/pcapng
/// `LINKTYPE_` value (the number stored in capture files).
///
/// A struct rather than an enum so that every value a file can carry is
/// representable; ``isSupported`` says whether ``PacketParser`` decodes it.
/// Values are immutable and freely shareable between threads.
@frozen
public struct LinkType: RawRepresentable, Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    /// The `LINKTYPE_` number as stored in the capture file.
    public var rawValue: UInt32

    /// Wraps any `LINKTYPE_` number, supported or not (see ``isSupported``).
    @inlinable
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// BSD loopback (`DLT_NULL`): a 4-byte address family in the capturing
    /// host's byte order.
    public static let null = LinkType(rawValue: 0)
    /// Ethernet II (`DLT_EN10MB`), with optional 802.1Q / 802.1ad tags.
    public static let ethernet = LinkType(rawValue: 1)
    /// `DLT_RAW` as numbered on most BSDs and Linux (libpcap reports it for
    /// `LINKTYPE_RAW`); the packet starts with an IPv4 or IPv6 header.
    public static let rawBSD = LinkType(rawValue: 12)
    /// `DLT_RAW` as numbered on OpenBSD.
    public static let rawOpenBSD = LinkType(rawValue: 14)
    /// `LINKTYPE_RAW`: the packet starts with an IPv4 or IPv6 header.
    public static let raw = LinkType(rawValue: 101)
    /// OpenBSD loopback (`DLT_LOOP`): a 4-byte address family, big-endian.
    public static let loop = LinkType(rawValue: 108)
    /// Linux "cooked" capture v1 (`DLT_LINUX_SLL`, 16-byte header).
    public static let linuxSLL = LinkType(rawValue: 113)
    /// Raw IPv4 only (`LINKTYPE_IPV4`).
    public static let ipv4 = LinkType(rawValue: 228)
    /// Raw IPv6 only (`LINKTYPE_IPV6`).
    public static let ipv6 = LinkType(rawValue: 229)
    /// Linux "cooked" capture v2 (`DLT_LINUX_SLL2`, 20-byte header).
    public static let linuxSLL2 = LinkType(rawValue: 276)

    /// Whether ``PacketParser`` understands this link type. Frames of any
    /// other type are dropped with ``DropReason/unsupportedLinkType``.
    @inlinable
    public var isSupported: Bool {
        switch rawValue {
        case 0, 1, 12, 14, 101, 108, 113, 228, 229, 276: return true
        default: return false
        }
    }

    /// The `DLT_`/`LINKTYPE_` name without its prefix (`EN10MB`,
    /// `LINUX_SLL2`, ...), or `LINKTYPE_<number>` for a type without a name
    /// here. For tools and logs.
    public var description: String {
        switch rawValue {
        case 0: return "NULL"
        case 1: return "EN10MB"
        case 12, 14, 101: return "RAW"
        case 108: return "LOOP"
        case 113: return "LINUX_SLL"
        case 228: return "IPV4"
        case 229: return "IPV6"
        case 276: return "LINUX_SLL2"
        default: return "LINKTYPE_\(rawValue)"
        }
    }
}
