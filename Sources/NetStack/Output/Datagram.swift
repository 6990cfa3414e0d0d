// The shared core of every builder: an 8-byte upper-layer header (UDP,
// ICMP, ICMPv6 all have one) plus a body, sealed with its checksum and
// written behind an IPv4 or IPv6 header, into one buffer or, when it
// exceeds the MTU, as fragments into several pool buffers (RFC 791 §3.2,
// RFC 8200 §4.5). Internal; the public builders are thin wrappers.

enum Datagram {
    /// Upper-layer header length: every message this stack sends starts
    /// with 8 bytes (UDP header, ICMP/ICMPv6 type-code-checksum-word).
    static let headLength = 8

    /// Copies bytes `start ..< start + count` of the message `head ++ body`
    /// to `offset` in `buffer`.
    @inline(__always)
    static func copyMessage(head: UInt64, body: UnsafeRawBufferPointer, from start: Int, count: Int,
                            into buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        var s = start, o = offset, remaining = count
        if s == 0 && remaining >= headLength {
            buffer.put64(head, at: o)
            s = headLength; o += headLength; remaining -= headLength
        }
        while s < headLength && remaining > 0 {
            buffer[o] = UInt8(truncatingIfNeeded: head >> (56 - 8 * UInt64(s)))
            s += 1; o += 1; remaining -= 1
        }
        if remaining > 0 {
            buffer.copy(UnsafeRawBufferPointer(rebasing: body[(s - headLength) ..< (s - headLength + remaining)]), to: o)
        }
    }

    // MARK: One buffer

    /// IPv4 header + sealed head + body into `buffer`; the total length.
    static func buildIPv4(into buffer: UnsafeMutableRawBufferPointer, protocol proto: UInt8,
                          head: UInt64, checksum: UpperChecksum, body: UnsafeRawBufferPointer,
                          source: IPAddress, destination: IPAddress, identification: UInt16,
                          dontFragment: Bool, ttl: UInt8) throws(OutputError) -> Int {
        let total = IPv4Output.headerLength + headLength + body.count
        guard total <= IPv4Output.maximumDatagramLength else { throw .datagramTooLarge }
        guard total <= buffer.count else { throw .bufferTooSmall }
        let sealed = checksum.seal(head, body: body, protocol: proto, source: source, destination: destination)
        writeIPv4(into: buffer, protocol: proto, sealed: sealed, body: body, source: source,
                  destination: destination, identification: identification, dontFragment: dontFragment, ttl: ttl)
        return total
    }

    /// The unfragmented IPv4 packet of an already sealed head; the caller
    /// has checked that it fits.
    @inline(__always)
    static func writeIPv4(into buffer: UnsafeMutableRawBufferPointer, protocol proto: UInt8, sealed: UInt64,
                          body: UnsafeRawBufferPointer, source: IPAddress, destination: IPAddress,
                          identification: UInt16, dontFragment: Bool, ttl: UInt8) {
        IPv4Output.writeHeader(into: buffer, source: source, destination: destination, protocol: proto,
                               totalLength: IPv4Output.headerLength + headLength + body.count,
                               identification: identification, dontFragment: dontFragment, ttl: ttl)
        buffer.put64(sealed, at: IPv4Output.headerLength)
        buffer.copy(body, to: IPv4Output.headerLength + headLength)
    }

    /// IPv6 header + sealed head + body into `buffer`; the total length.
    static func buildIPv6(into buffer: UnsafeMutableRawBufferPointer, nextHeader: UInt8,
                          head: UInt64, checksum: UpperChecksum, body: UnsafeRawBufferPointer,
                          source: IPAddress, destination: IPAddress, flowLabel: UInt32,
                          hopLimit: UInt8) throws(OutputError) -> Int {
        let payload = headLength + body.count
        guard payload <= IPv6Output.maximumPayloadLength else { throw .datagramTooLarge }
        let total = IPv6Output.headerLength + payload
        guard total <= buffer.count else { throw .bufferTooSmall }
        let sealed = checksum.seal(head, body: body, protocol: nextHeader, source: source, destination: destination)
        writeIPv6(into: buffer, nextHeader: nextHeader, sealed: sealed, body: body, source: source,
                  destination: destination, flowLabel: flowLabel, hopLimit: hopLimit)
        return total
    }

    /// The unfragmented IPv6 packet of an already sealed head; the caller
    /// has checked that it fits.
    @inline(__always)
    static func writeIPv6(into buffer: UnsafeMutableRawBufferPointer, nextHeader: UInt8, sealed: UInt64,
                          body: UnsafeRawBufferPointer, source: IPAddress, destination: IPAddress,
                          flowLabel: UInt32, hopLimit: UInt8) {
        IPv6Output.writeHeader(into: buffer, source: source, destination: destination, nextHeader: nextHeader,
                               payloadLength: headLength + body.count, flowLabel: flowLabel, hopLimit: hopLimit)
        buffer.put64(sealed, at: IPv6Output.headerLength)
        buffer.copy(body, to: IPv6Output.headerLength + headLength)
    }

    // MARK: Pool buffers, fragmenting

    /// Returns the first `count` buffers of `out` to the cache: a datagram
    /// is sent whole or not at all.
    @inline(never)  // cold: only when the pool runs dry
    static func release(_ out: UnsafeMutableBufferPointer<PacketRef>, count: Int, to cache: inout PacketPool.Cache) {
        for i in 0..<count { cache.free(out[i]) }
    }

    /// Takes `count` buffers from the cache into `out`, each filled by
    /// `fill(buffer, index)`, which returns the packet's length. All or
    /// nothing: too few slots is refused before any buffer is taken, and if
    /// the pool runs dry the buffers already taken go back. `fill` is a
    /// non-escaping closure: no context is allocated for it.
    @inline(__always)
    static func emit(_ count: Int, cache: inout PacketPool.Cache, into out: UnsafeMutableBufferPointer<PacketRef>,
                     _ fill: (UnsafeMutableRawBufferPointer, Int) -> Int) throws(OutputError) -> Int {
        guard count <= out.count else { throw .tooManyFragments }
        for i in 0..<count {
            guard let p = cache.allocate() else {
                release(out, count: i, to: &cache)
                throw .poolExhausted
            }
            // Through `cache.pool` each time, not a local copy of the
            // reference: a copy taken out of the inout cache, which the
            // loop goes on mutating, is retained and released (one of each
            // per datagram, the benchmark's ARC counts showed).
            let length = fill(cache.pool.buffer(p), i)
            cache.pool.setLength(length, of: p)
            out[i] = p
        }
        return count
    }

    /// Sends `head ++ body` over IPv4: one buffer if it fits
    /// `min(mtu, bufferSize)`, else fragments (RFC 791 §3.2).
    ///
    /// A datagram that fits goes out with DF set and ID 0 when
    /// `dontFragmentIfFits` (an atomic datagram, RFC 6864 §4.1), otherwise
    /// with DF clear and an ID from `identifications`. Fragments always
    /// carry DF clear, a fresh ID, offsets in 8-byte units and MF on all
    /// but the last; the stack sends no options, so there are none to copy.
    static func sendIPv4(protocol proto: UInt8, head: UInt64, checksum: UpperChecksum,
                         body: UnsafeRawBufferPointer, source: IPAddress, destination: IPAddress,
                         mtu: Int, dontFragmentIfFits: Bool, ttl: UInt8,
                         identifications: inout IPIdentificationGenerator,
                         cache: inout PacketPool.Cache,
                         into out: UnsafeMutableBufferPointer<PacketRef>) throws(OutputError) -> Int {
        guard mtu >= IPv4Output.minimumMTU else { throw .mtuTooSmall }
        let message = headLength + body.count
        let header = IPv4Output.headerLength
        guard header + message <= IPv4Output.maximumDatagramLength else { throw .datagramTooLarge }
        let packetLimit = min(mtu, cache.pool.bufferSize)
        let sealed = checksum.seal(head, body: body, protocol: proto, source: source, destination: destination)
        if header + message <= packetLimit {
            let atomic = dontFragmentIfFits
            let id = atomic ? 0 : identifications.nextIPv4(source: source, destination: destination, protocol: proto)
            return try emit(1, cache: &cache, into: out) { buffer, _ in
                writeIPv4(into: buffer, protocol: proto, sealed: sealed, body: body, source: source,
                          destination: destination, identification: id, dontFragment: atomic, ttl: ttl)
                return header + message
            }
        }
        // RFC 791 §3.2: every fragment but the last carries a multiple of 8
        // bytes of the original payload.
        let chunk = (packetLimit - header) & ~7
        let count = (message + chunk - 1) / chunk
        let id = identifications.nextIPv4(source: source, destination: destination, protocol: proto)
        return try emit(count, cache: &cache, into: out) { buffer, i in
            let start = i * chunk
            let length = min(chunk, message - start)
            IPv4Output.writeHeader(into: buffer, source: source, destination: destination, protocol: proto,
                                   totalLength: header + length, identification: id, dontFragment: false,
                                   moreFragments: i < count - 1, fragmentOffset: start, ttl: ttl)
            copyMessage(head: sealed, body: body, from: start, count: length, into: buffer, at: header)
            return header + length
        }
    }

    /// Sends `head ++ body` over IPv6 as the source host: one buffer if it
    /// fits `min(mtu, bufferSize)`, else fragments behind a Fragment header
    /// (RFC 8200 §4.5): the unfragmentable part is the fixed header alone,
    /// the 8-byte upper-layer header travels in the first fragment (RFC
    /// 7112), every fragment but the last carries a multiple of 8 bytes,
    /// all share one 32-bit Identification, none exceeds the MTU.
    static func sendIPv6(nextHeader: UInt8, head: UInt64, checksum: UpperChecksum,
                         body: UnsafeRawBufferPointer, source: IPAddress, destination: IPAddress,
                         mtu: Int, flowLabel: UInt32, hopLimit: UInt8,
                         identifications: inout IPIdentificationGenerator,
                         cache: inout PacketPool.Cache,
                         into out: UnsafeMutableBufferPointer<PacketRef>) throws(OutputError) -> Int {
        guard mtu >= IPv6Output.minimumMTU else { throw .mtuTooSmall }
        let message = headLength + body.count
        guard message <= IPv6Output.maximumPayloadLength else { throw .datagramTooLarge }
        let header = IPv6Output.headerLength
        let packetLimit = min(mtu, cache.pool.bufferSize)
        let sealed = checksum.seal(head, body: body, protocol: nextHeader, source: source, destination: destination)
        if header + message <= packetLimit {
            return try emit(1, cache: &cache, into: out) { buffer, _ in
                writeIPv6(into: buffer, nextHeader: nextHeader, sealed: sealed, body: body, source: source,
                          destination: destination, flowLabel: flowLabel, hopLimit: hopLimit)
                return header + message
            }
        }
        let fragmentHeader = IPv6Output.fragmentHeaderLength
        let chunk = (packetLimit - header - fragmentHeader) & ~7
        let count = (message + chunk - 1) / chunk
        let id = identifications.nextIPv6(source: source, destination: destination)
        return try emit(count, cache: &cache, into: out) { buffer, i in
            let start = i * chunk
            let length = min(chunk, message - start)
            IPv6Output.writeHeader(into: buffer, source: source, destination: destination, nextHeader: 44,
                                   payloadLength: fragmentHeader + length, flowLabel: flowLabel, hopLimit: hopLimit)
            IPv6Output.writeFragmentHeader(into: buffer, at: header, nextHeader: nextHeader, fragmentOffset: start,
                                           moreFragments: i < count - 1, identification: id)
            copyMessage(head: sealed, body: body, from: start, count: length, into: buffer,
                        at: header + fragmentHeader)
            return header + fragmentHeader + length
        }
    }
}
