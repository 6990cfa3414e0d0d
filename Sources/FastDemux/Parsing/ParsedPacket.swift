/// TCP flag bits (the low 9 bits of header bytes 12...13).
@frozen
public struct TCPFlags: OptionSet, Sendable, BitwiseCopyable, Hashable {
    /// The flag bits, FIN in bit 0 up to AE (the former NS) in bit 8.
    public var rawValue: UInt16
    /// Flags from their bits (bits above 8 are kept, but no header carries
    /// them).
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// FIN: the sender has finished sending.
    public static let fin = TCPFlags(rawValue: 0x001)
    /// SYN: synchronize sequence numbers (connection set-up).
    public static let syn = TCPFlags(rawValue: 0x002)
    /// RST: reset the connection.
    public static let rst = TCPFlags(rawValue: 0x004)
    /// PSH: push the data to the receiving application.
    public static let psh = TCPFlags(rawValue: 0x008)
    /// ACK: the acknowledgment number is valid.
    public static let ack = TCPFlags(rawValue: 0x010)
    /// URG: the urgent pointer is valid.
    public static let urg = TCPFlags(rawValue: 0x020)
    /// ECE: ECN echo (RFC 3168).
    public static let ece = TCPFlags(rawValue: 0x040)
    /// CWR: congestion window reduced (RFC 3168).
    public static let cwr = TCPFlags(rawValue: 0x080)
    /// AE, the former NS (the ECN nonce of RFC 3540): bit 8.
    public static let ae = TCPFlags(rawValue: 0x100)
}

/// The TCP header fields the demultiplexer's fast path needs.
@frozen
public struct TCPSegmentInfo: Sendable, BitwiseCopyable, Hashable {
    /// The segment's sequence number (host order).
    public var sequenceNumber: UInt32
    /// The acknowledgment number (host order; meaningful with
    /// ``TCPFlags/ack``).
    public var acknowledgmentNumber: UInt32
    /// The flag bits.
    public var flags: TCPFlags
    /// The advertised receive window, unscaled (host order).
    public var window: UInt16

    /// Creates the fields of a segment (a plain value: any thread).
    @inlinable
    public init(sequenceNumber: UInt32, acknowledgmentNumber: UInt32, flags: TCPFlags, window: UInt16) {
        self.sequenceNumber = sequenceNumber
        self.acknowledgmentNumber = acknowledgmentNumber
        self.flags = flags
        self.window = window
    }
}

/// A frame that carries a TCP segment or UDP datagram directly in its
/// outermost IP header, with the offsets needed to hand its payload to a
/// socket. All offsets are from the start of the captured frame. Never a
/// fragment: until reassembly exists the parser drops every fragment.
///
/// A plain value (`BitwiseCopyable`); it refers to the frame's bytes only
/// by offset, so it stays valid however the bytes are moved.
@frozen
public struct ParsedPacket: Sendable, BitwiseCopyable {
    /// The directed 5-tuple.
    public var flow: FlowKey
    /// Offset of the outermost IPv4/IPv6 header.
    public var networkOffset: Int
    /// Offset of the TCP/UDP header.
    public var transportOffset: Int
    /// Offset of the transport payload.
    public var payloadOffset: Int
    /// Payload length according to the headers (IP total length, UDP
    /// length); may exceed ``capturedPayloadLength`` in a snaplen-truncated
    /// capture.
    public var payloadLength: Int
    /// Payload bytes actually present in the frame, from ``payloadOffset``.
    public var capturedPayloadLength: Int
    /// TCP header fields; `nil` for UDP.
    public var tcp: TCPSegmentInfo?
    /// The frame was cut short by the capture snaplen (caplen < len) within
    /// the IP datagram.
    public var isTruncated: Bool

    /// Creates a parsed packet from its parts (for tests and synthetic traffic;
    /// ``PacketParser`` is the usual source). A plain value: any thread.
    @inlinable
    public init(flow: FlowKey, networkOffset: Int, transportOffset: Int, payloadOffset: Int,
                payloadLength: Int, capturedPayloadLength: Int, tcp: TCPSegmentInfo?,
                isTruncated: Bool) {
        self.flow = flow
        self.networkOffset = networkOffset
        self.transportOffset = transportOffset
        self.payloadOffset = payloadOffset
        self.payloadLength = payloadLength
        self.capturedPayloadLength = capturedPayloadLength
        self.tcp = tcp
        self.isTruncated = isTruncated
    }
}

/// The outcome of ``PacketParser/parse(_:linkType:wireLength:)``.
@frozen
public enum ParseResult: Sendable, BitwiseCopyable {
    /// To be delivered to the TCP/UDP socket matching `packet.flow`.
    case packet(ParsedPacket)
    /// Not for a TCP/UDP socket, or malformed; count it under the reason.
    case dropped(DropReason)

    /// The parsed packet, or `nil` if dropped.
    @inlinable
    public var packet: ParsedPacket? {
        if case .packet(let p) = self { return p }
        return nil
    }

    /// The drop reason, or `nil` if delivered.
    @inlinable
    public var dropReason: DropReason? {
        if case .dropped(let r) = self { return r }
        return nil
    }
}
