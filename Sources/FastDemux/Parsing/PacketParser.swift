/// Options for ``PacketParser``.
@frozen
public struct ParserOptions: Sendable, BitwiseCopyable, Hashable {
    /// Verify the IPv4 header checksum and the TCP/UDP checksums (with the
    /// pseudo-header, IPv4 and IPv6) and drop failures as
    /// ``DropReason/checksum``. Off by default: captured loopback and
    /// offloaded traffic carries checksums the NIC never filled in. Segments
    /// that are fragments or snaplen-truncated cannot be verified and pass.
    public var verifyChecksums: Bool

    /// Options with checksum verification on or off (off by default).
    @inlinable
    public init(verifyChecksums: Bool = false) {
        self.verifyChecksums = verifyChecksums
    }
}

/// Decodes a captured frame down to its outermost TCP or UDP header.
///
/// Supported link types: see ``LinkType/isSupported``. The *outermost*
/// IPv4/IPv6 header decides: TCP or UDP directly behind it (after IPv6
/// hop-by-hop, routing, fragment and destination-options headers) is
/// delivered; anything else — ARP, ICMP (including ICMP errors quoting a
/// TCP/UDP header), IP-in-IP, GRE, AH/ESP, non-first fragments — is
/// dropped with a ``DropReason``. Malformed or truncated input is always a
/// drop, never a crash or an out-of-bounds read: every load is preceded by
/// a bounds check against the captured length.
///
/// Concurrency and cost: a stateless value; `parse` may be called from any
/// number of threads at once. It allocates nothing, takes no locks and
/// does no ARC traffic: a handful of bounds-checked loads per header.
@frozen
public struct PacketParser: Sendable, BitwiseCopyable {
    /// What the parser checks beyond the headers' structure (see
    /// ``ParserOptions``).
    public var options: ParserOptions

    /// Bound on the IPv6 extension-header chain walked before giving up
    /// (``DropReason/badIPv6Extension``): a frame cannot make us loop long.
    public static let maxIPv6ExtensionHeaders = 16

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
        let wire = max(wireLength ?? frame.count, frame.count)
        var cursor = Cursor(frame: frame, wireEnd: wire)
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
        let hatype = u16(2), proto = u16(14)
        offset = 16
        return cooked(hatype: hatype, protocol: proto)
    }

    /// Linux cooked v2: protocol, reserved, ifindex, ARPHRD type, packet
    /// type, address length, 8 address bytes.
    mutating func linuxSLL2() -> AddressFamily? {
        guard available >= 20 else { reason = .truncatedCooked; return nil }
        let proto = u16(0), hatype = u16(8)
        offset = 20
        return cooked(hatype: hatype, protocol: proto)
    }

    @inline(__always)
    mutating func cooked(hatype: UInt16, protocol proto: UInt16) -> AddressFamily? {
        switch hatype {
        case 770, 803, 824:  // Frame Relay, radiotap, netlink: "protocol" is not an EtherType
            reason = .notIP
            return nil
        default:
            return family(ofEtherType: proto)
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
        switch af {
        case 2: return .ipv4
        case 24, 28, 30: return .ipv6
        default:
            reason = .notIP
            return nil
        }
    }

    // MARK: Network layer

    mutating func ipv4(_ options: ParserOptions) -> ParseResult {
        let ip = offset
        guard available >= 20 else { return .dropped(.truncatedIPv4) }
        let vihl = u8(ip)
        guard vihl >> 4 == 4 else { return .dropped(.badIPv4Version) }
        let headerLength = Int(vihl & 0x0f) * 4
        guard headerLength >= 20 else { return .dropped(.badIPv4HeaderLength) }
        guard available >= headerLength else { return .dropped(.truncatedIPv4) }
        let wireAvailable = wireEnd - ip
        var totalLength = Int(u16(ip + 2))
        if totalLength == 0 {
            // TSO / BIG TCP captures: the stack hands the capture point a
            // super-segment whose length does not fit 16 bits. Use the frame.
            totalLength = wireAvailable
        }
        guard totalLength >= headerLength, totalLength <= wireAvailable else {
            return .dropped(.badIPv4TotalLength)
        }
        if options.verifyChecksums && Checksum.fold(Checksum.sum(frame, from: ip, count: headerLength)) != 0 {
            return .dropped(.checksum)
        }
        let fragment = u16(ip + 6)
        if fragment & 0x1fff != 0 { return .dropped(.fragmentNoPorts) }
        let moreFragments = fragment & 0x2000 != 0
        let source = IPAddress(unchecked: frame, at: ip + 12, family: .ipv4)
        let destination = IPAddress(unchecked: frame, at: ip + 16, family: .ipv4)
        wireEnd = ip + totalLength
        offset = ip + headerLength
        let addressSum = options.verifyChecksums ? Checksum.sum(frame, from: ip + 12, count: 8) : 0
        return transport(u8(ip + 9), source: source, destination: destination, networkOffset: ip,
                         firstFragment: moreFragments, addressSum: addressSum, options)
    }

    mutating func ipv6(_ options: ParserOptions) -> ParseResult {
        let ip = offset
        guard available >= 40 else { return .dropped(.truncatedIPv6) }
        guard u8(ip) >> 4 == 6 else { return .dropped(.badIPv6Version) }
        let wireAvailable = wireEnd - ip
        let payloadLength = Int(u16(ip + 4))
        if payloadLength == 0 || 40 + payloadLength > wireAvailable {
            // 0: jumbogram (RFC 2675) or TSO/BIG TCP, the payload is the
            // rest of the frame. Longer than the frame: tshark (our oracle)
            // only warns and decodes what the frame holds; so do we, and
            // the transport length checks still catch a datagram that does
            // not fit.
            wireEnd = ip + wireAvailable
        } else {
            wireEnd = ip + 40 + payloadLength
        }
        let source = IPAddress(unchecked: frame, at: ip + 8, family: .ipv6)
        let destination = IPAddress(unchecked: frame, at: ip + 24, family: .ipv6)
        // The checksum pseudo-header uses the final destination, which a
        // routing header with segments left names instead of the IPv6 header.
        var finalDestination = destination
        var next = u8(ip + 6)
        var firstFragment = false
        offset = ip + 40
        var chained = 0
        while true {
            switch next {
            case 6, 17:
                let addressSum = options.verifyChecksums
                    ? Checksum.sum(frame, from: ip + 8, count: 16) &+ Checksum.sum(address: finalDestination) : 0
                return transport(next, source: source, destination: destination, networkOffset: ip,
                                 firstFragment: firstFragment, addressSum: addressSum, options)
            case 0, 43, 60, 44:
                chained += 1
                guard chained <= PacketParser.maxIPv6ExtensionHeaders else { return .dropped(.badIPv6Extension) }
                let fixed = next == 44 ? 8 : 2
                guard offset + fixed <= wireEnd else { return .dropped(.badIPv6Extension) }
                guard offset + fixed <= frame.count else { return .dropped(.truncatedIPv6) }
                let length = next == 44 ? 8 : (Int(u8(offset + 1)) + 1) * 8
                guard offset + length <= wireEnd else { return .dropped(.badIPv6Extension) }
                if next == 44 {
                    let word = u16(offset + 2)
                    if word >> 3 != 0 { return .dropped(.fragmentNoPorts) }
                    // Offset 0 without "more fragments" is an atomic
                    // fragment (RFC 6946): the whole datagram.
                    firstFragment = word & 1 != 0
                } else if next == 43 && options.verifyChecksums {
                    guard offset + length <= frame.count else { return .dropped(.truncatedIPv6) }
                    if let d = routingFinalDestination(at: offset, length: length) { finalDestination = d }
                }
                next = u8(offset)
                offset += length
            case 50, 51:
                return .dropped(.ipsec)
            default:
                return .dropped(.notTCPUDP)
            }
        }
    }

    /// The final destination named by a routing header with segments left
    /// (types 0 and 2: the last address; type 4, SRH: segment list [0]).
    func routingFinalDestination(at rh: Int, length: Int) -> IPAddress? {
        let type = u8(rh + 2), segmentsLeft = u8(rh + 3)
        guard segmentsLeft > 0, length >= 24 else { return nil }
        switch type {
        case 0, 2: return IPAddress(unchecked: frame, at: rh + length - 16, family: .ipv6)
        case 4: return IPAddress(unchecked: frame, at: rh + 8, family: .ipv6)
        default: return nil
        }
    }

    // MARK: Transport layer

    @inline(__always)
    mutating func transport(_ proto: UInt8, source: IPAddress, destination: IPAddress, networkOffset: Int,
                            firstFragment: Bool, addressSum: UInt32, _ options: ParserOptions) -> ParseResult {
        switch proto {
        case 6:
            return tcp(source: source, destination: destination, networkOffset: networkOffset,
                       firstFragment: firstFragment, addressSum: addressSum, options)
        case 17:
            return udp(source: source, destination: destination, networkOffset: networkOffset,
                       firstFragment: firstFragment, addressSum: addressSum, options)
        case 50, 51:
            return .dropped(.ipsec)
        default:
            return .dropped(.notTCPUDP)
        }
    }

    mutating func tcp(source: IPAddress, destination: IPAddress, networkOffset: Int,
                      firstFragment: Bool, addressSum: UInt32, _ options: ParserOptions) -> ParseResult {
        let t = offset
        let capturedEnd = min(wireEnd, frame.count)
        guard t + 20 <= capturedEnd else { return .dropped(.truncatedTCP) }
        let headerLength = Int(u8(t + 12) >> 4) * 4
        guard headerLength >= 20, t + headerLength <= wireEnd else { return .dropped(.badTCPDataOffset) }
        guard t + headerLength <= capturedEnd else { return .dropped(.truncatedTCP) }
        let truncated = wireEnd > frame.count
        if options.verifyChecksums && !truncated && !firstFragment
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
            isFirstFragment: firstFragment, isTruncated: truncated))
    }

    mutating func udp(source: IPAddress, destination: IPAddress, networkOffset: Int,
                      firstFragment: Bool, addressSum: UInt32, _ options: ParserOptions) -> ParseResult {
        let t = offset
        let capturedEnd = min(wireEnd, frame.count)
        guard t + 8 <= capturedEnd else { return .dropped(.truncatedUDP) }
        var length = Int(u16(t + 4))
        let segment = wireEnd - t
        if length == 0 && source.family == .ipv6 && segment > 0xffff {
            length = segment  // RFC 2675 jumbogram
        }
        // A first fragment carries only part of the datagram UDP's length
        // describes, so only the lower bound can be checked.
        guard length >= 8, firstFragment || length <= segment else { return .dropped(.badUDPLength) }
        let end = firstFragment ? wireEnd : t + length
        let truncated = end > frame.count
        if options.verifyChecksums && !truncated && !firstFragment {
            let stored = u16(t + 6)
            if stored == 0 {
                // "No checksum" is allowed for UDP over IPv4 only.
                if source.family == .ipv6 { return .dropped(.checksum) }
            } else {
                // The pseudo-header length is UDP's own length field.
                let pseudo = Checksum.pseudoHeader(addressSum: addressSum, protocol: 17, length: length)
                if Checksum.fold(pseudo &+ Checksum.sum(frame, from: t, count: length)) != 0 {
                    return .dropped(.checksum)
                }
            }
        }
        let flow = FlowKey(transport: .udp, source: source, sourcePort: u16(t),
                           destination: destination, destinationPort: u16(t + 2))
        let payload = t + 8
        return .packet(ParsedPacket(
            flow: flow, networkOffset: networkOffset, transportOffset: t, payloadOffset: payload,
            payloadLength: firstFragment ? length - 8 : end - payload,
            capturedPayloadLength: min(end, frame.count) - payload, tcp: nil,
            isFirstFragment: firstFragment, isTruncated: truncated))
    }
}
