/// Where the parts of a received IP datagram are, as the ICMP builders and
/// the error policy need them. Internal.
struct ReceivedDatagram {
    var source: IPAddress
    var destination: IPAddress
    /// The upper-layer protocol (after IPv6 extension headers).
    var upperProtocol: UInt8
    /// Offset of the upper-layer header (valid only if `isFirstFragment`).
    var upperOffset: Int
    /// End of the datagram: its length fields, cut to the bytes present.
    var end: Int
    /// Part of a fragmented datagram (MF set or a non-zero offset).
    var isFragment: Bool
    /// Offset 0: the fragment (or whole datagram) holding the upper-layer header.
    var isFirstFragment: Bool

    /// Reads an IPv4 header; nil if the bytes are not one.
    static func ipv4(_ d: UnsafeRawBufferPointer) -> ReceivedDatagram? {
        guard d.count >= 20, d[0] >> 4 == 4 else { return nil }
        let ihl = Int(d[0] & 0x0f) * 4
        let total = Int(d.u16(2))
        guard ihl >= 20, ihl <= d.count, total >= ihl else { return nil }
        let fragment = d.u16(6)
        return ReceivedDatagram(
            source: IPAddress(ipv4: d.u32(12)), destination: IPAddress(ipv4: d.u32(16)),
            upperProtocol: d[9], upperOffset: ihl, end: min(total, d.count),
            isFragment: fragment & 0x3fff != 0, isFirstFragment: fragment & 0x1fff == 0)
    }

    /// Reads an IPv6 header and walks the extension headers (hop-by-hop,
    /// routing, destination options, fragment; at most
    /// `PacketParser.maxIPv6ExtensionHeaders`) to the upper
    /// layer, as Linux's ipv6_skip_exthdr does; nil if the bytes are not an
    /// IPv6 header or a header runs past the end.
    static func ipv6(_ d: UnsafeRawBufferPointer) -> ReceivedDatagram? {
        guard d.count >= 40, d[0] >> 4 == 6 else { return nil }
        var r = ReceivedDatagram(
            source: IPAddress(ipv6High: d.u64(8), low: d.u64(16)),
            destination: IPAddress(ipv6High: d.u64(24), low: d.u64(32)),
            upperProtocol: d[6], upperOffset: 40, end: min(40 + Int(d.u16(4)), d.count),
            isFragment: false, isFirstFragment: true)
        for _ in 0 ..< PacketParser.maxIPv6ExtensionHeaders {
            let o = r.upperOffset
            switch r.upperProtocol {
            case 0, 43, 60:
                guard o + 2 <= r.end else { return nil }
                r.upperProtocol = d[o]
                r.upperOffset = o + (Int(d[o + 1]) + 1) * 8
            case 44:
                guard o + 8 <= r.end else { return nil }
                let field = d.u16(o + 2)
                r.upperProtocol = d[o]
                r.upperOffset = o + 8
                // RFC 6946: offset 0 without M is an atomic fragment, the
                // whole datagram.
                r.isFragment = field & 0xfff9 != 0
                r.isFirstFragment = field & 0xfff8 == 0
                if !r.isFirstFragment { return r }  // the rest is not a header
            default:
                return r.upperOffset <= r.end ? r : nil
            }
        }
        return nil
    }
}

/// ICMP for IPv4 (RFC 792): echo replies and error messages.
///
/// Replies go out with DF clear and an ID from the caller's
/// ``IPIdentificationGenerator`` (Linux's ICMP socket uses
/// IP_PMTUDISC_DONT), TTL 64, no IP options.
///
/// Concurrency: pure functions of their arguments, callable from any
/// thread; `send` mutates only its `inout` arguments. No allocation.
public enum ICMPv4Output {
    /// The largest ICMP error packet: 576 bytes in all (RFC 1812 §4.3.2.3,
    /// what Linux's icmp_send quotes up to); RFC 1122 §3.2.2 requires at
    /// least the IP header and 8 bytes of data.
    public static let maximumErrorLength = 576

    /// The echo request in `request`, checked: a whole IPv4 datagram
    /// carrying ICMP type 8 code 0, to a unicast address.
    @inline(__always)
    static func echoRequest(_ request: UnsafeRawBufferPointer) throws(OutputError)
        -> (head: UInt64, body: UnsafeRawBufferPointer, source: IPAddress, destination: IPAddress) {
        guard let d = ReceivedDatagram.ipv4(request), d.upperProtocol == 1, !d.isFragment,
              d.end - d.upperOffset >= 8, request[d.upperOffset] == 8, request[d.upperOffset + 1] == 0
        else { throw .malformedInput }
        // RFC 1122 §3.2.2.6: the reply's source is the request's specific
        // destination; a broadcast or multicast request gets no reply here.
        guard d.destination.isUnicastSource else { throw .notUnicast }
        // Type 0, code 0, checksum 0 (sealed later), identifier and
        // sequence number copied.
        let head = UInt64(request.u32(d.upperOffset + 4))
        return (head, UnsafeRawBufferPointer(rebasing: request[(d.upperOffset + 8) ..< d.end]),
                d.destination, d.source)
    }

    /// Builds the echo reply to an echo request (RFC 792; RFC 1122
    /// §3.2.2.6): same identifier, sequence number and data, source and
    /// destination swapped, into one buffer.
    ///
    /// The request's checksum is not verified here (the input path does).
    /// Record-route and timestamp options of the request are not copied
    /// (the stack sends no options).
    ///
    /// - Parameters:
    ///   - buffer: where to write; the packet starts at offset 0.
    ///   - request: the whole received IPv4 datagram, from its IP header.
    ///   - identification: the IPv4 Identification (from the generator).
    ///   - ttl: time to live.
    /// - Returns: the reply's length.
    /// - Throws: ``OutputError/malformedInput`` (not an unfragmented echo
    ///   request), ``OutputError/notUnicast`` (sent to a multicast or
    ///   broadcast address), ``OutputError/bufferTooSmall``.
    public static func buildEchoReply(
        into buffer: UnsafeMutableRawBufferPointer, request: UnsafeRawBufferPointer,
        identification: UInt16, ttl: UInt8 = IPv4Output.defaultTTL
    ) throws(OutputError) -> Int {
        let r = try echoRequest(request)
        return try Datagram.buildIPv4(
            into: buffer, protocol: 1, head: r.head, checksum: .icmpv4, body: r.body, source: r.source,
            destination: r.destination, identification: identification, dontFragment: false, ttl: ttl)
    }

    /// Sends the echo reply to an (already reassembled) echo request into
    /// pool buffers, fragmenting it if it exceeds the MTU; all-or-nothing
    /// as ``UDPOutput/sendIPv4(source:sourcePort:destination:destinationPort:payload:mtu:ttl:identifications:cache:into:)``.
    ///
    /// - Parameters:
    ///   - request: the whole received IPv4 datagram.
    ///   - mtu: the device MTU (≥ 68).
    ///   - ttl: time to live.
    ///   - identifications: the executor's ID generator.
    ///   - cache: the executor's pool cache.
    ///   - out: receives the packets, in order.
    /// - Returns: how many entries of `out` were filled.
    /// - Throws: as ``buildEchoReply(into:request:identification:ttl:)``
    ///   and the UDP `send`.
    public static func sendEchoReply(
        request: UnsafeRawBufferPointer, mtu: Int, ttl: UInt8 = IPv4Output.defaultTTL,
        identifications: inout IPIdentificationGenerator, cache: inout PacketPool.Cache,
        into out: UnsafeMutableBufferPointer<PacketRef>
    ) throws(OutputError) -> Int {
        let r = try echoRequest(request)
        return try Datagram.sendIPv4(
            protocol: 1, head: r.head, checksum: .icmpv4, body: r.body, source: r.source,
            destination: r.destination, mtu: mtu, dontFragmentIfFits: false, ttl: ttl,
            identifications: &identifications, cache: &cache, into: out)
    }

    /// Builds an ICMP error about `offending` (RFC 792): the error's IP
    /// source is the offending datagram's destination (this host), its
    /// destination the offending source; the data quotes the offending IP
    /// header and as much of its payload as keeps the error within
    /// ``maximumErrorLength``.
    ///
    /// Consult ``ICMPErrorPolicy/suppression(ofErrorAboutIPv4:linkLayerBroadcast:)``
    /// and the ``ICMPRateLimiter`` first: this builder does not.
    ///
    /// - Parameters:
    ///   - buffer: where to write; the packet starts at offset 0.
    ///   - type: the ICMP type (3 destination unreachable, 11 time
    ///     exceeded, 12 parameter problem).
    ///   - code: the ICMP code.
    ///   - rest: the header's second word (0 "unused"; the next-hop MTU
    ///     for type 3 code 4, RFC 1191; the pointer << 24 for type 12).
    ///   - offending: the received datagram, from its IP header.
    ///   - identification: the IPv4 Identification (from the generator).
    ///   - ttl: time to live.
    /// - Returns: the error's length.
    /// - Throws: ``OutputError/malformedInput`` (no IPv4 header),
    ///   ``OutputError/notUnicast`` (the offending destination is not a
    ///   unicast address), ``OutputError/bufferTooSmall``.
    public static func buildError(
        into buffer: UnsafeMutableRawBufferPointer, type: UInt8, code: UInt8, rest: UInt32 = 0,
        offending: UnsafeRawBufferPointer, identification: UInt16, ttl: UInt8 = IPv4Output.defaultTTL
    ) throws(OutputError) -> Int {
        guard let d = ReceivedDatagram.ipv4(offending) else { throw .malformedInput }
        guard d.destination.isUnicastSource else { throw .notUnicast }
        let quoted = min(d.end, maximumErrorLength - IPv4Output.headerLength - Datagram.headLength)
        let head = UInt64(type) << 56 | UInt64(code) << 48 | UInt64(rest)
        return try Datagram.buildIPv4(
            into: buffer, protocol: 1, head: head, checksum: .icmpv4,
            body: UnsafeRawBufferPointer(rebasing: offending[0 ..< quoted]), source: d.destination,
            destination: d.source, identification: identification, dontFragment: false, ttl: ttl)
    }

    /// Builds a destination unreachable message (type 3, RFC 792): code 3
    /// for a port without a socket, 2 for an unknown protocol (RFC 1122
    /// §3.2.2.1). See ``buildError(into:type:code:rest:offending:identification:ttl:)``.
    ///
    /// - Parameters:
    ///   - buffer: where to write.
    ///   - code: the unreachable code (3 port, 2 protocol).
    ///   - offending: the received datagram, from its IP header.
    ///   - identification: the IPv4 Identification.
    ///   - ttl: time to live.
    /// - Returns: the error's length.
    /// - Throws: as ``buildError(into:type:code:rest:offending:identification:ttl:)``.
    public static func buildDestinationUnreachable(
        into buffer: UnsafeMutableRawBufferPointer, code: UInt8 = 3, offending: UnsafeRawBufferPointer,
        identification: UInt16, ttl: UInt8 = IPv4Output.defaultTTL
    ) throws(OutputError) -> Int {
        try buildError(into: buffer, type: 3, code: code, offending: offending,
                       identification: identification, ttl: ttl)
    }
}

/// ICMPv6 (RFC 4443): echo replies and error messages, checksummed over
/// the pseudo-header (RFC 4443 §2.3, RFC 8200 §8.1).
///
/// Concurrency: pure functions of their arguments, callable from any
/// thread; `send` mutates only its `inout` arguments. No allocation.
public enum ICMPv6Output {
    /// The largest ICMPv6 error packet: the IPv6 minimum MTU (RFC 4443
    /// §2.4(c)).
    public static let maximumErrorLength = IPv6Output.minimumMTU

    @inline(__always)
    static func echoRequest(_ request: UnsafeRawBufferPointer) throws(OutputError)
        -> (head: UInt64, body: UnsafeRawBufferPointer, source: IPAddress, destination: IPAddress) {
        guard let d = ReceivedDatagram.ipv6(request), d.upperProtocol == 58, !d.isFragment,
              d.end - d.upperOffset >= 8, request[d.upperOffset] == 128, request[d.upperOffset + 1] == 0
        else { throw .malformedInput }
        // RFC 4443 §4.2: a reply to a multicast request must come from a
        // unicast address of the interface; this builder does not pick one.
        guard d.destination.isUnicastSource else { throw .notUnicast }
        let head = 129 << 56 | UInt64(request.u32(d.upperOffset + 4))
        return (head, UnsafeRawBufferPointer(rebasing: request[(d.upperOffset + 8) ..< d.end]),
                d.destination, d.source)
    }

    /// Builds the echo reply to an ICMPv6 echo request (RFC 4443 §4.2):
    /// type 129, the request's identifier, sequence number and data, the
    /// request's destination as source.
    ///
    /// - Parameters:
    ///   - buffer: where to write; the packet starts at offset 0.
    ///   - request: the whole received IPv6 datagram (extension headers
    ///     are walked; none are echoed).
    ///   - flowLabel: the flow label.
    ///   - hopLimit: the hop limit.
    /// - Returns: the reply's length.
    /// - Throws: ``OutputError/malformedInput``, ``OutputError/notUnicast``,
    ///   ``OutputError/bufferTooSmall``.
    public static func buildEchoReply(
        into buffer: UnsafeMutableRawBufferPointer, request: UnsafeRawBufferPointer,
        flowLabel: UInt32 = 0, hopLimit: UInt8 = IPv6Output.defaultHopLimit
    ) throws(OutputError) -> Int {
        let r = try echoRequest(request)
        return try Datagram.buildIPv6(
            into: buffer, nextHeader: 58, head: r.head, checksum: .icmpv6, body: r.body, source: r.source,
            destination: r.destination, flowLabel: flowLabel, hopLimit: hopLimit)
    }

    /// Sends the echo reply to an (already reassembled) ICMPv6 echo
    /// request, fragmenting it if it exceeds the MTU; all-or-nothing.
    ///
    /// - Parameters:
    ///   - request: the whole received IPv6 datagram.
    ///   - mtu: the device MTU (≥ 1280).
    ///   - flowLabel: the flow label.
    ///   - hopLimit: the hop limit.
    ///   - identifications: the executor's ID generator.
    ///   - cache: the executor's pool cache.
    ///   - out: receives the packets, in order.
    /// - Returns: how many entries of `out` were filled.
    /// - Throws: as ``buildEchoReply(into:request:flowLabel:hopLimit:)``
    ///   and ``UDPOutput/sendIPv6(source:sourcePort:destination:destinationPort:payload:mtu:flowLabel:hopLimit:identifications:cache:into:)``.
    public static func sendEchoReply(
        request: UnsafeRawBufferPointer, mtu: Int, flowLabel: UInt32 = 0,
        hopLimit: UInt8 = IPv6Output.defaultHopLimit,
        identifications: inout IPIdentificationGenerator, cache: inout PacketPool.Cache,
        into out: UnsafeMutableBufferPointer<PacketRef>
    ) throws(OutputError) -> Int {
        let r = try echoRequest(request)
        return try Datagram.sendIPv6(
            nextHeader: 58, head: r.head, checksum: .icmpv6, body: r.body, source: r.source,
            destination: r.destination, mtu: mtu, flowLabel: flowLabel, hopLimit: hopLimit,
            identifications: &identifications, cache: &cache, into: out)
    }

    /// Builds an ICMPv6 error about `offending` (RFC 4443 §2.4): source the
    /// offending destination, destination the offending source, the data
    /// as much of the offending packet as keeps the error within the
    /// minimum MTU (RFC 4443 §2.4(c)).
    ///
    /// Consult ``ICMPErrorPolicy/suppression(ofErrorAboutIPv6:type:code:linkLayerMulticast:)``
    /// and the ``ICMPRateLimiter`` first: this builder does not.
    ///
    /// - Parameters:
    ///   - buffer: where to write; the packet starts at offset 0.
    ///   - type: the ICMPv6 error type (1 destination unreachable, 2 packet
    ///     too big, 3 time exceeded, 4 parameter problem).
    ///   - code: the code.
    ///   - rest: the header's second word (0 unused; the MTU for type 2;
    ///     the pointer for type 4).
    ///   - offending: the received packet, from its IPv6 header.
    ///   - flowLabel: the flow label.
    ///   - hopLimit: the hop limit.
    /// - Returns: the error's length.
    /// - Throws: ``OutputError/malformedInput`` (no IPv6 header),
    ///   ``OutputError/notUnicast`` (multicast offending destination:
    ///   this builder has no interface address to use instead),
    ///   ``OutputError/bufferTooSmall``.
    public static func buildError(
        into buffer: UnsafeMutableRawBufferPointer, type: UInt8, code: UInt8, rest: UInt32 = 0,
        offending: UnsafeRawBufferPointer, flowLabel: UInt32 = 0, hopLimit: UInt8 = IPv6Output.defaultHopLimit
    ) throws(OutputError) -> Int {
        guard offending.count >= 40, offending[0] >> 4 == 6 else { throw .malformedInput }
        let source = IPAddress(ipv6High: offending.u64(24), low: offending.u64(32))
        let destination = IPAddress(ipv6High: offending.u64(8), low: offending.u64(16))
        guard source.isUnicastSource else { throw .notUnicast }
        let end = min(40 + Int(offending.u16(4)), offending.count)
        let quoted = min(end, maximumErrorLength - IPv6Output.headerLength - Datagram.headLength)
        let head = UInt64(type) << 56 | UInt64(code) << 48 | UInt64(rest)
        return try Datagram.buildIPv6(
            into: buffer, nextHeader: 58, head: head, checksum: .icmpv6,
            body: UnsafeRawBufferPointer(rebasing: offending[0 ..< quoted]), source: source,
            destination: destination, flowLabel: flowLabel, hopLimit: hopLimit)
    }

    /// Builds a destination unreachable message (type 1, RFC 4443 §3.1):
    /// code 4 for a port without a socket. See
    /// ``buildError(into:type:code:rest:offending:flowLabel:hopLimit:)``.
    ///
    /// - Parameters:
    ///   - buffer: where to write.
    ///   - code: the unreachable code (4 port unreachable).
    ///   - offending: the received packet, from its IPv6 header.
    ///   - flowLabel: the flow label.
    ///   - hopLimit: the hop limit.
    /// - Returns: the error's length.
    /// - Throws: as ``buildError(into:type:code:rest:offending:flowLabel:hopLimit:)``.
    public static func buildDestinationUnreachable(
        into buffer: UnsafeMutableRawBufferPointer, code: UInt8 = 4, offending: UnsafeRawBufferPointer,
        flowLabel: UInt32 = 0, hopLimit: UInt8 = IPv6Output.defaultHopLimit
    ) throws(OutputError) -> Int {
        try buildError(into: buffer, type: 1, code: code, offending: offending,
                       flowLabel: flowLabel, hopLimit: hopLimit)
    }
}
