#if canImport(Glibc)
import Glibc
#endif

/// Why ``ICMPInput/decode(_:_:)`` refused an ICMP or ICMPv6 message.
@frozen
public enum ICMPDropReason: UInt8, CaseIterable, Sendable, BitwiseCopyable, CustomStringConvertible {
    /// Not an unfragmented ICMP/ICMPv6 `NetworkPacket`.
    case notICMP = 0
    /// The capture was cut short (snaplen): the checksum cannot be verified.
    case truncated
    /// Shorter than the 8-byte ICMP header (Linux: icmp_rcv / icmpv6_rcv,
    /// `pskb_pull(skb, sizeof(*icmph))`).
    case tooShort
    /// The checksum is wrong (ICMPv6 with the pseudo-header, RFC 4443 §2.3;
    /// Linux: skb_checksum_simple_validate, skb_checksum_validate).
    case checksum
    /// An ICMPv4 type above 18 (Linux: `icmph->type > NR_ICMP_TYPES`).
    case unknownType
    /// An error message whose quoted datagram is too short for an IP
    /// header plus 8 bytes of its upper layer, or whose quoted IP header is
    /// not one (Linux: icmp_unreach's `pskb_may_pull(iph->ihl * 4 + 8)`,
    /// `iph->ihl < 5`; icmpv6_notify's `pskb_may_pull(inner_offset + 8)`).
    case malformedQuote

    /// Number of reasons; raw values are `0..<count`.
    public static let count = ICMPDropReason.allCases.count

    /// A stable snake_case name for statistics.
    public var description: String {
        switch self {
        case .notICMP: return "not_icmp"
        case .truncated: return "truncated"
        case .tooShort: return "too_short"
        case .checksum: return "checksum"
        case .unknownType: return "unknown_type"
        case .malformedQuote: return "malformed_quote"
        }
    }
}

/// An echo request or reply (ICMP types 8/0, ICMPv6 128/129).
@frozen
public struct ICMPEcho: Sendable, BitwiseCopyable, Hashable {
    /// The Identifier (host order).
    public var identifier: UInt16
    /// The Sequence Number (host order).
    public var sequence: UInt16
    /// Offset of the echo data in the frame.
    public var dataOffset: Int
    /// Bytes of echo data.
    public var dataLength: Int
}

/// The datagram an ICMP error quotes: the one this host sent, so its
/// source is local and its destination the remote peer.
@frozen
public struct ICMPQuote: Sendable, BitwiseCopyable {
    /// Offset of the quoted IP header in the frame.
    public var networkOffset: Int
    /// The quoted source (this host).
    public var source: IPAddress
    /// The quoted destination (the peer).
    public var destination: IPAddress
    /// The quoted upper-layer protocol (after IPv6 extension headers).
    public var upperLayerProtocol: UInt8
    /// Offset of the quoted upper-layer header (8 bytes of it are present).
    public var upperLayerOffset: Int
    /// The quoted TCP/UDP flow as it was sent (local → peer); nil for
    /// another protocol or a quoted non-first fragment (no ports).
    public var sentFlow: FlowKey?

    /// The key under which the socket of the quoted flow receives: the
    /// reverse of ``sentFlow`` (peer → local), what `FastDemux` looks up.
    @inlinable public var socketFlow: FlowKey? { sentFlow?.reversed }
}

/// A decoded ICMP or ICMPv6 message.
@frozen
public enum ICMPMessage: Sendable, BitwiseCopyable {
    /// Echo request: the stack owes an echo reply with the same identifier,
    /// sequence and data (RFC 792; RFC 4443 §4.1).
    case echoRequest(ICMPEcho)
    /// Echo reply.
    case echoReply(ICMPEcho)
    /// Destination unreachable (ICMP 3 except code 4; ICMPv6 1), with its
    /// code.
    case destinationUnreachable(code: UInt8, quote: ICMPQuote)
    /// Packet too big: ICMPv6 2 (RFC 4443 §3.2), or ICMP 3 code 4,
    /// "fragmentation needed and DF set" with the next-hop MTU of RFC 1191
    /// (0 from routers older than RFC 1191).
    case packetTooBig(mtu: UInt32, quote: ICMPQuote)
    /// Time exceeded (ICMP 11, ICMPv6 3): code 0 hop limit, 1 reassembly.
    case timeExceeded(code: UInt8, quote: ICMPQuote)
    /// Parameter problem (ICMP 12, ICMPv6 4) with the pointer.
    case parameterProblem(code: UInt8, pointer: UInt32, quote: ICMPQuote)
    /// Any other type the stack does not act on (redirect, timestamp,
    /// neighbour discovery, ...): checksum verified, nothing decoded.
    case other(type: UInt8, code: UInt8)

    /// The errno Linux reports to the socket of the quoted flow
    /// (icmp_err_convert and icmp_err for ICMP, icmpv6_err_convert for
    /// ICMPv6), e.g. ECONNREFUSED for port unreachable; nil for messages
    /// that are not errors. `ipv6` selects the table.
    public func socketError(ipv6: Bool) -> Int32? {
        switch self {
        case .echoRequest, .echoReply, .other: return nil
        case .packetTooBig: return EMSGSIZE
        case .timeExceeded: return EHOSTUNREACH
        case .parameterProblem: return EPROTO
        case .destinationUnreachable(let code, _):
            if ipv6 {
                switch code {
                case 0: return ENETUNREACH
                case 1, 5, 6: return EACCES
                case 4: return ECONNREFUSED
                default: return EHOSTUNREACH
                }
            }
            switch code {
            case 0, 6, 9, 11: return ENETUNREACH
            case 2: return ENOPROTOOPT
            case 3: return ECONNREFUSED
            case 4: return EMSGSIZE
            case 5: return EOPNOTSUPP
            case 7: return EHOSTDOWN
            case 8: return ENONET
            default: return EHOSTUNREACH
            }
        }
    }
}

/// The outcome of ``ICMPInput/decode(_:_:)``.
@frozen
public enum ICMPDecodeResult: Sendable, BitwiseCopyable {
    /// A valid message.
    case message(ICMPMessage)
    /// Refused; count it under the reason.
    case dropped(ICMPDropReason)
}

/// ICMP (RFC 792) and ICMPv6 (RFC 4443) input: checksum verification and
/// the decoding the stack acts on — echo requests to answer, and the
/// errors whose quoted datagram names a local socket (Linux: icmp_rcv,
/// icmp_unreach, icmpv6_rcv, icmpv6_notify).
///
/// Concurrency and cost: stateless; call from any thread. No allocation:
/// one pass over the message for the checksum, then a few bounds-checked
/// loads. Results are offsets into the frame given.
public enum ICMPInput {
    /// Decodes the ICMP or ICMPv6 message of `frame`, which
    /// `PacketParser/parseNetwork(_:linkType:wireLength:)`
    /// described as `info` (an unfragmented packet with upper-layer
    /// protocol 1 or 58; reassembled datagrams qualify once parsed again).
    public static func decode(_ frame: UnsafeRawBufferPointer, _ info: NetworkPacket) -> ICMPDecodeResult {
        let ipv6 = info.family == .ipv6
        guard info.fragment == nil, info.upperLayerProtocol == (ipv6 ? 58 : 1),
              info.upperLayerOffset >= 0, info.end >= info.upperLayerOffset else { return .dropped(.notICMP) }
        guard !info.isTruncated, info.end <= frame.count else { return .dropped(.truncated) }
        let m = info.upperLayerOffset
        let length = info.end - m
        guard length >= 8 else { return .dropped(.tooShort) }
        // RFC 4443 §2.3: ICMPv6 sums the pseudo-header of RFC 8200 §8.1
        // (addresses, upper-layer length, next header 58); ICMPv4 only the
        // message (RFC 792).
        let pseudo = ipv6 ? Checksum.pseudoHeader(addressSum: Checksum.sum(frame, from: info.networkOffset + 8, count: 32),
                                                  protocol: 58, length: length) : 0
        guard Checksum.fold(pseudo &+ Checksum.sum(frame, from: m, count: length)) == 0 else {
            return .dropped(.checksum)
        }
        let type = frame[m], code = frame[m + 1]
        @inline(__always) func u16(_ at: Int) -> UInt16 { frame.loadUnaligned(fromByteOffset: at, as: UInt16.self).bigEndian }
        @inline(__always) func u32(_ at: Int) -> UInt32 { frame.loadUnaligned(fromByteOffset: at, as: UInt32.self).bigEndian }
        func echo() -> ICMPEcho {
            ICMPEcho(identifier: u16(m + 4), sequence: u16(m + 6), dataOffset: m + 8, dataLength: length - 8)
        }
        func error(_ make: (ICMPQuote) -> ICMPMessage) -> ICMPDecodeResult {
            let q = ipv6 ? quoteIPv6(frame, at: m + 8, end: info.end) : quoteIPv4(frame, at: m + 8, end: info.end)
            guard let q else { return .dropped(.malformedQuote) }
            return .message(make(q))
        }
        if ipv6 {
            switch type {
            case 128: return .message(.echoRequest(echo()))
            case 129: return .message(.echoReply(echo()))
            case 1: return error { .destinationUnreachable(code: code, quote: $0) }
            case 2: return error { .packetTooBig(mtu: u32(m + 4), quote: $0) }
            case 3: return error { .timeExceeded(code: code, quote: $0) }
            case 4: return error { .parameterProblem(code: code, pointer: u32(m + 4), quote: $0) }
            default: return .message(.other(type: type, code: code))
            }
        }
        switch type {
        case 8: return .message(.echoRequest(echo()))
        case 0: return .message(.echoReply(echo()))
        case 3 where code == 4: return error { .packetTooBig(mtu: UInt32(u16(m + 6)), quote: $0) }
        case 3: return error { .destinationUnreachable(code: code, quote: $0) }
        case 11: return error { .timeExceeded(code: code, quote: $0) }
        case 12: return error { .parameterProblem(code: code, pointer: UInt32(frame[m + 4]), quote: $0) }
        case 19...: return .dropped(.unknownType)
        default: return .message(.other(type: type, code: code))
        }
    }

    /// icmp_unreach: the quoted IPv4 header (IHL ≥ 5) and 8 bytes behind it.
    static func quoteIPv4(_ frame: UnsafeRawBufferPointer, at ip: Int, end: Int) -> ICMPQuote? {
        guard ip + 20 <= end, frame[ip] >> 4 == 4 else { return nil }
        let ihl = Int(frame[ip] & 0xf) * 4
        guard ihl >= 20, ip + ihl + 8 <= end else { return nil }
        let source = IPAddress(ipv4: frame.loadUnaligned(fromByteOffset: ip + 12, as: UInt32.self).bigEndian)
        let destination = IPAddress(ipv4: frame.loadUnaligned(fromByteOffset: ip + 16, as: UInt32.self).bigEndian)
        let fragmentOffset = frame.loadUnaligned(fromByteOffset: ip + 6, as: UInt16.self).bigEndian & 0x1fff
        return quote(frame, ip: ip, source: source, destination: destination, proto: frame[ip + 9],
                     upper: ip + ihl, hasPorts: fragmentOffset == 0)
    }

    /// icmpv6_notify: the quoted IPv6 header, its extension headers
    /// skipped (ipv6_skip_exthdr), and 8 bytes of the upper layer.
    static func quoteIPv6(_ frame: UnsafeRawBufferPointer, at ip: Int, end: Int) -> ICMPQuote? {
        guard ip + 40 <= end, frame[ip] >> 4 == 6 else { return nil }
        let source = IPAddress(ipv6High: frame.loadUnaligned(fromByteOffset: ip + 8, as: UInt64.self).bigEndian,
                               low: frame.loadUnaligned(fromByteOffset: ip + 16, as: UInt64.self).bigEndian)
        let destination = IPAddress(ipv6High: frame.loadUnaligned(fromByteOffset: ip + 24, as: UInt64.self).bigEndian,
                                    low: frame.loadUnaligned(fromByteOffset: ip + 32, as: UInt64.self).bigEndian)
        var next = frame[ip + 6]
        var o = ip + 40
        var hasPorts = true
        var chained = 0
        while next == 0 || next == 43 || next == 60 || next == 44 || next == 51 {
            chained += 1
            guard chained <= PacketParser.maxIPv6ExtensionHeaders, o + 8 <= end else { return nil }
            let length: Int
            switch next {
            case 44:
                length = 8
                // A non-first fragment carries no upper-layer header.
                if frame.loadUnaligned(fromByteOffset: o + 2, as: UInt16.self).bigEndian & 0xfff8 != 0 { hasPorts = false }
            case 51: length = (Int(frame[o + 1]) + 2) * 4
            default: length = (Int(frame[o + 1]) + 1) * 8
            }
            next = frame[o]
            o += length
        }
        guard o + 8 <= end else { return nil }
        return quote(frame, ip: ip, source: source, destination: destination, proto: next, upper: o,
                     hasPorts: hasPorts)
    }

    static func quote(_ frame: UnsafeRawBufferPointer, ip: Int, source: IPAddress, destination: IPAddress,
                      proto: UInt8, upper: Int, hasPorts: Bool) -> ICMPQuote {
        var flow: FlowKey? = nil
        if hasPorts && (proto == 6 || proto == 17) {
            flow = FlowKey(transport: proto == 6 ? .tcp : .udp, source: source,
                           sourcePort: frame.loadUnaligned(fromByteOffset: upper, as: UInt16.self).bigEndian,
                           destination: destination,
                           destinationPort: frame.loadUnaligned(fromByteOffset: upper + 2, as: UInt16.self).bigEndian)
        }
        return ICMPQuote(networkOffset: ip, source: source, destination: destination, upperLayerProtocol: proto,
                         upperLayerOffset: upper, sentFlow: flow)
    }
}
