/// The fragment fields of an IPv4 header or an IPv6 Fragment header, as
/// ``PacketParser/parseNetwork(_:linkType:wireLength:)`` validated them.
///
/// A plain value (`BitwiseCopyable`); offsets are from the start of the
/// captured frame.
@frozen
public struct FragmentInfo: Sendable, BitwiseCopyable, Hashable {
    /// The Identification: IPv4's 16 bits (zero-extended), IPv6's 32.
    public var identification: UInt32
    /// The fragment offset in bytes (the header's 8-byte units × 8).
    public var offset: Int
    /// MF (IPv4) / M (IPv6): more fragments follow.
    public var moreFragments: Bool
    /// IPv4 DF; always false for IPv6 (no such bit: IPv6 routers never
    /// fragment).
    public var dontFragment: Bool
    /// IPv6: offset of the Fragment header, which is where the
    /// unfragmentable part (IPv6 header plus the extension headers before
    /// the Fragment header, RFC 8200 §4.5) ends. IPv4: the IP header's
    /// offset (the whole header is repeated in every fragment).
    public var headerOffset: Int
    /// Offset of the byte that names the fragmented protocol: IPv4's
    /// Protocol field; for IPv6 the Next Header field that holds 44 (in
    /// the IPv6 header or the last unfragmentable extension header), which
    /// reassembly rewrites when it removes the Fragment header.
    public var nextHeaderFieldOffset: Int

    /// Creates fragment fields from their parts (tests, synthetic traffic).
    /// A plain value: any thread.
    @inlinable
    public init(identification: UInt32, offset: Int, moreFragments: Bool, dontFragment: Bool,
                headerOffset: Int, nextHeaderFieldOffset: Int) {
        self.identification = identification
        self.offset = offset
        self.moreFragments = moreFragments
        self.dontFragment = dontFragment
        self.headerOffset = headerOffset
        self.nextHeaderFieldOffset = nextHeaderFieldOffset
    }
}

/// The validated network-layer facts of a frame the parser does not hand
/// to a TCP/UDP socket but the stack itself handles: an IPv4 or IPv6
/// fragment (for reassembly) or an unfragmented ICMP / ICMPv6 message.
///
/// Produced only by ``PacketParser/parseNetwork(_:linkType:wireLength:)``,
/// after every check ``PacketParser/parse(_:linkType:wireLength:)`` makes
/// up to the point where it would have dropped the frame (header,
/// checksum, lengths, martians, options, extension-header order): a
/// `NetworkPacket` is a frame that Linux's ip_local_deliver /
/// ip6_input_finish would hand to ip_defrag / ipv6_frag_rcv, icmp_rcv or
/// icmpv6_rcv.
///
/// A plain value (`BitwiseCopyable`), offsets only, from the start of the
/// captured frame; valid for wherever the frame's bytes are moved.
@frozen
public struct NetworkPacket: Sendable, BitwiseCopyable {
    /// The IP source address (its family is the packet's).
    public var source: IPAddress
    /// The IP destination address.
    public var destination: IPAddress
    /// Offset of the IPv4/IPv6 header.
    public var networkOffset: Int
    /// The upper-layer protocol: for an unfragmented packet 1 (ICMP) or
    /// 58 (ICMPv6); for a fragment IPv4's Protocol field or the Fragment
    /// header's Next Header (the first header of the fragmentable part,
    /// which may itself be an extension header).
    public var upperLayerProtocol: UInt8
    /// Offset of the upper-layer header (unfragmented) or of the fragment's
    /// data (behind the IPv4 header or the IPv6 Fragment header).
    public var upperLayerOffset: Int
    /// End of the datagram on the wire: the IP header plus its total
    /// (IPv4) or payload (IPv6) length. May exceed the frame when
    /// ``isTruncated``.
    public var end: Int
    /// The capture was cut short (snaplen) inside the datagram.
    public var isTruncated: Bool
    /// The frame arrived on a loopback device as far as the link layer
    /// tells (see ``PacketParser``).
    public var loopbackDevice: Bool
    /// The fragment fields; `nil` for a whole datagram (ICMP, ICMPv6,
    /// including an IPv6 atomic fragment, RFC 6946).
    public var fragment: FragmentInfo?

    /// Creates a network packet from its parts (tests, synthetic traffic;
    /// ``PacketParser/parseNetwork(_:linkType:wireLength:)`` is the usual
    /// source). A plain value: any thread.
    @inlinable
    public init(source: IPAddress, destination: IPAddress, networkOffset: Int, upperLayerProtocol: UInt8,
                upperLayerOffset: Int, end: Int, isTruncated: Bool, loopbackDevice: Bool,
                fragment: FragmentInfo?) {
        self.source = source
        self.destination = destination
        self.networkOffset = networkOffset
        self.upperLayerProtocol = upperLayerProtocol
        self.upperLayerOffset = upperLayerOffset
        self.end = end
        self.isTruncated = isTruncated
        self.loopbackDevice = loopbackDevice
        self.fragment = fragment
    }

    /// IPv4 or IPv6.
    @inlinable public var family: AddressFamily { source.family }

    /// Bytes of upper-layer data (or fragment data) on the wire.
    @inlinable public var upperLayerLength: Int { end - upperLayerOffset }
}

/// The outcome of ``PacketParser/parseNetwork(_:linkType:wireLength:)``.
@frozen
public enum NetworkParseResult: Sendable, BitwiseCopyable {
    /// A TCP segment or UDP datagram, exactly as ``ParseResult/packet(_:)``.
    case transport(ParsedPacket)
    /// A fragment or an ICMP/ICMPv6 message, for the stack itself.
    case network(NetworkPacket)
    /// Dropped, exactly as ``ParseResult/dropped(_:)`` (fragments and
    /// ICMP are never dropped for being fragments or ICMP here).
    case dropped(DropReason)
}
