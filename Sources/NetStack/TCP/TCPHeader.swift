import FastDemux

/// The fields of one TCP header (RFC 9293 §3.1), parsed or to be built:
/// what the engine consumes and produces. Payload bytes travel beside it
/// (an `UnsafeRawBufferPointer` on input, a ``TCPPayload`` on output), so
/// the header stays a `BitwiseCopyable` value that no one reference-counts.
@frozen
public struct TCPHeader: Sendable, BitwiseCopyable, Hashable {
    /// The sender's port.
    public var sourcePort: UInt16
    /// The receiver's port.
    public var destinationPort: UInt16
    /// SEG.SEQ.
    public var sequenceNumber: UInt32
    /// SEG.ACK (meaningful when the flags include ACK).
    public var acknowledgmentNumber: UInt32
    /// The control bits.
    public var flags: TCPFlags
    /// SEG.WND as carried (unscaled).
    public var window: UInt16
    /// The options.
    public var options: TCPOptions

    /// A header from its fields (a plain value: any thread).
    public init(sourcePort: UInt16, destinationPort: UInt16, sequenceNumber: UInt32,
                acknowledgmentNumber: UInt32, flags: TCPFlags, window: UInt16, options: TCPOptions = TCPOptions()) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.sequenceNumber = sequenceNumber
        self.acknowledgmentNumber = acknowledgmentNumber
        self.flags = flags
        self.window = window
        self.options = options
    }

    /// The header's length on the wire: 20 bytes plus the options.
    public var encodedLength: Int { 20 + options.encodedLength }

    /// SEG.LEN for `payloadLength` bytes of data: SYN and FIN each count one
    /// (RFC 9293 §3.4).
    @inline(__always)
    public func sequenceLength(payloadLength: Int) -> UInt32 {
        UInt32(truncatingIfNeeded: payloadLength) &+ (flags.contains(.syn) ? 1 : 0) &+ (flags.contains(.fin) ? 1 : 0)
    }

    /// Parses a TCP segment (the bytes from the TCP header to the end of the
    /// IP payload) and returns its header and where its payload starts.
    ///
    /// Checks, each a counted ``TCPDropReason``: at least 20 bytes
    /// (``TCPDropReason/truncatedHeader``); data offset ≥ 5 words and within
    /// the segment (RFC 9293 §3.1, ``TCPDropReason/badDataOffset``); the
    /// options well-formed (``TCPOptions/parse(_:)``). The checksum is
    /// checked separately (``verifyChecksum(_:source:destination:)``),
    /// because the input path may have had it verified by the device.
    ///
    /// Concurrency: a pure function; no allocation.
    public static func parse(_ segment: UnsafeRawBufferPointer) throws(TCPDropReason) -> (header: TCPHeader, payloadOffset: Int) {
        guard segment.count >= 20 else { throw .truncatedHeader }
        let offset = Int(segment[12] >> 4) * 4
        guard offset >= 20, offset <= segment.count else { throw .badDataOffset }
        let options = try TCPOptions.parse(UnsafeRawBufferPointer(rebasing: segment[20..<offset]))
        let flagBits = (UInt16(segment[12] & 1) << 8) | UInt16(segment[13])
        let h = TCPHeader(
            sourcePort: segment.loadUnaligned(fromByteOffset: 0, as: UInt16.self).bigEndian,
            destinationPort: segment.loadUnaligned(fromByteOffset: 2, as: UInt16.self).bigEndian,
            sequenceNumber: segment.loadUnaligned(fromByteOffset: 4, as: UInt32.self).bigEndian,
            acknowledgmentNumber: segment.loadUnaligned(fromByteOffset: 8, as: UInt32.self).bigEndian,
            flags: TCPFlags(rawValue: flagBits),
            window: segment.loadUnaligned(fromByteOffset: 14, as: UInt16.self).bigEndian,
            options: options)
        return (h, offset)
    }

    /// True if the segment's checksum over the pseudo-header of `source` and
    /// `destination` (RFC 9293 §3.1; RFC 8200 §8.1 for IPv6) is correct.
    public static func verifyChecksum(_ segment: UnsafeRawBufferPointer, source: IPAddress, destination: IPAddress) -> Bool {
        var sum = Checksum.sum(segment, from: 0, count: segment.count)
        sum = Checksum.partial(sum) &+ Checksum.pseudoHeader(
            addressSum: source.checksumWords &+ destination.checksumWords, protocol: 6, length: segment.count)
        return Checksum.fold16(sum) == 0xffff
    }

    /// Writes this header and `payload` as one TCP segment at the start of
    /// `buffer`, with its checksum over the pseudo-header of `source` and
    /// `destination`, and returns the segment's length. The caller puts the
    /// IP header in front (`IPv4Output.writeHeader` or
    /// `IPv6Output.writeHeader` of the output path).
    ///
    /// Concurrency: a pure function of its arguments; one copy of the
    /// payload and one checksum pass, no allocation.
    public func write(payload: TCPPayload, into buffer: UnsafeMutableRawBufferPointer,
                      source: IPAddress, destination: IPAddress) throws(OutputError) -> Int {
        try write(payload: payload, into: buffer, source: source, destination: destination, partialChecksum: false)
    }

    /// ``write(payload:into:source:destination:)``, or with
    /// `partialChecksum` the checksum left to the kernel (Linux's
    /// CHECKSUM_PARTIAL): the field holds the folded pseudo-header sum,
    /// length included, not complemented (what __tcp_v4_send_check and
    /// tcp_v6_send_check leave for the device), and the payload is copied
    /// but not summed. For a super-segment behind a virtio-net header with
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
    public func write(payload: TCPPayload, into buffer: UnsafeMutableRawBufferPointer,
                      source: IPAddress, destination: IPAddress, partialChecksum: Bool) throws(OutputError) -> Int {
        let hl = encodedLength
        let total = hl + payload.count
        guard buffer.count >= total else { throw .bufferTooSmall }
        guard total <= 65535 - 40 else { throw .datagramTooLarge }
        buffer.storeBytes(of: sourcePort.bigEndian, toByteOffset: 0, as: UInt16.self)
        buffer.storeBytes(of: destinationPort.bigEndian, toByteOffset: 2, as: UInt16.self)
        buffer.storeBytes(of: sequenceNumber.bigEndian, toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: acknowledgmentNumber.bigEndian, toByteOffset: 8, as: UInt32.self)
        buffer[12] = UInt8(hl / 4) << 4 | UInt8(truncatingIfNeeded: flags.rawValue >> 8) & 1
        buffer[13] = UInt8(truncatingIfNeeded: flags.rawValue)
        buffer.storeBytes(of: window.bigEndian, toByteOffset: 14, as: UInt16.self)
        buffer.storeBytes(of: UInt32(0), toByteOffset: 16, as: UInt32.self)  // checksum 0, urgent pointer 0
        options.write(into: UnsafeMutableRawBufferPointer(rebasing: buffer[20..<hl]))
        payload.copy(into: UnsafeMutableRawBufferPointer(rebasing: buffer[hl..<total]))
        if partialChecksum {
            let pseudo = Checksum.pseudoHeader(addressSum: source.checksumWords &+ destination.checksumWords,
                                               protocol: 6, length: total)
            buffer.storeBytes(of: Checksum.fold16(pseudo).bigEndian, toByteOffset: 16, as: UInt16.self)
            return total
        }
        let bytes = UnsafeRawBufferPointer(buffer)
        var sum = Checksum.sum(bytes, from: 0, count: total)
        sum = Checksum.partial(sum) &+ Checksum.pseudoHeader(
            addressSum: source.checksumWords &+ destination.checksumWords, protocol: 6, length: total)
        buffer.storeBytes(of: Checksum.fold(sum).bigEndian, toByteOffset: 16, as: UInt16.self)
        return total
    }
}

/// The payload of an outgoing segment: at most two contiguous pieces of a
/// connection's send ring (the second is non-empty when the data wraps).
/// Valid only during the ``TCPSegmentSink/send(_:payload:endpoints:)`` call that
/// receives it: the ring may be overwritten afterwards.
@frozen
public struct TCPPayload {
    /// The first piece.
    public var first: UnsafeRawBufferPointer
    /// The second piece (empty unless the data wraps around the ring).
    public var second: UnsafeRawBufferPointer

    /// A payload of one or two pieces.
    public init(first: UnsafeRawBufferPointer, second: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        self.first = first
        self.second = second
    }

    /// No data.
    public static var empty: TCPPayload { TCPPayload(first: UnsafeRawBufferPointer(start: nil, count: 0)) }

    /// The total length.
    public var count: Int { first.count + second.count }

    /// The `count` bytes from `offset` (within ``count``), as one or two
    /// pieces. A plain value; no copy.
    public func slice(offset: Int, count n: Int) -> TCPPayload {
        precondition(offset >= 0 && n >= 0 && offset + n <= count)
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        func piece(_ p: UnsafeRawBufferPointer, _ from: Int, _ to: Int) -> UnsafeRawBufferPointer {
            let a = Swift.max(from, 0), b = Swift.min(to, p.count)
            return a < b ? UnsafeRawBufferPointer(rebasing: p[a..<b]) : empty
        }
        let f = piece(first, offset, offset + n)
        let s = piece(second, offset - first.count, offset + n - first.count)
        return f.isEmpty ? TCPPayload(first: s) : TCPPayload(first: f, second: s)
    }

    /// Copies both pieces to the start of `destination` (which holds
    /// ``count`` bytes).
    public func copy(into destination: UnsafeMutableRawBufferPointer) {
        if let b = first.baseAddress, !first.isEmpty {
            destination.baseAddress!.copyMemory(from: b, byteCount: first.count)
        }
        if let b = second.baseAddress, !second.isEmpty {
            (destination.baseAddress! + first.count).copyMemory(from: b, byteCount: second.count)
        }
    }
}

/// Where the engine puts the segments it wants sent. The integrator frames
/// each one (IP header in front, ``TCPHeader/write(payload:into:source:destination:)``)
/// into a packet buffer and queues it for the device; a test pushes it into
/// a simulated channel.
///
/// Called synchronously from inside the engine's calls, on the thread that
/// owns the connection; the payload is valid only for the call.
public protocol TCPSegmentSink {
    /// One segment to send from `endpoints.local`/`localPort` to
    /// `endpoints.remote`/`remotePort` (the header's ports are the same).
    mutating func send(_ header: TCPHeader, payload: TCPPayload, endpoints: TCPEndpoints)

    /// A super-segment (``TCPConfiguration/maximumSegmentsPerSend`` above
    /// 1): `payload` is longer than `segmentSize` (the send MSS) and is to
    /// go out as segments of `segmentSize` bytes, the last one shorter,
    /// each with this header's sequence number advanced, PSH and FIN on
    /// the last only (what Linux's tcp_gso_segment does with a GSO packet).
    /// The default sends it as one segment through
    /// ``send(_:payload:endpoints:)`` (a simulated channel that does not
    /// care about the MTU).
    mutating func send(_ header: TCPHeader, payload: TCPPayload, endpoints: TCPEndpoints, segmentSize: Int)
}

extension TCPSegmentSink {
    /// Sends the super-segment whole (see the requirement).
    public mutating func send(_ header: TCPHeader, payload: TCPPayload, endpoints: TCPEndpoints, segmentSize: Int) {
        send(header, payload: payload, endpoints: endpoints)
    }
}

/// The two ends of a connection as this host sees them.
@frozen
public struct TCPEndpoints: Sendable, BitwiseCopyable, Hashable {
    /// This host's address.
    public var local: IPAddress
    /// This host's port.
    public var localPort: UInt16
    /// The peer's address (same family as ``local``).
    public var remote: IPAddress
    /// The peer's port.
    public var remotePort: UInt16

    /// The endpoints of a connection.
    public init(local: IPAddress, localPort: UInt16, remote: IPAddress, remotePort: UInt16) {
        self.local = local
        self.localPort = localPort
        self.remote = remote
        self.remotePort = remotePort
    }
}
