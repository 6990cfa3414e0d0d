

/// Writes synthetic Ethernet frames (IPv4 or IPv6, UDP or TCP) for tests,
/// demos and benchmarks. Checksums: the IPv4 header checksum is correct;
/// TCP/UDP checksums are left zero (NIC offload assumed).
///
/// Stateless: any thread, any number at once. Writing a frame touches only
/// the caller's buffer and allocates nothing.
public enum SyntheticFrame {
    /// Bytes of a frame for `flow` with `payloadLength` payload bytes.
    public static func length(for flow: FlowKey, payloadLength: Int) -> Int {
        14 + (flow.family == .ipv4 ? 20 : 40) + (flow.transport == .tcp ? 20 : 8) + payloadLength
    }

    /// Writes one frame into `buffer` and returns its length.
    ///
    /// - Parameters:
    ///   - buffer: at least ``length(for:payloadLength:)`` bytes.
    ///   - flow: the frame's 5-tuple (source = sender).
    ///   - tcp: the segment's header fields for a TCP flow (nil: a PSH|ACK
    ///     segment with sequence 0); ignored for UDP.
    ///   - payloadLength: payload bytes after the transport header.
    ///   - ipID: the IPv4 identification field (unused for IPv6).
    ///   - payloadByte: payload byte `i` (by default `i` truncated to a
    ///     byte).
    @discardableResult
    public static func write(into buffer: UnsafeMutableRawBufferPointer, flow: FlowKey,
                             tcp: TCPSegmentInfo? = nil, payloadLength: Int,
                             ipID: UInt16 = 0, payloadByte: (Int) -> UInt8 = { UInt8(truncatingIfNeeded: $0) }) -> Int {
        let total = length(for: flow, payloadLength: payloadLength)
        precondition(buffer.count >= total, "buffer too small for the frame")
        var b = FrameWriter(base: buffer.baseAddress!)
        // Ethernet: locally administered MACs.
        b.bytes([0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02])
        let l4len = flow.transport == .tcp ? 20 : 8
        if flow.family == .ipv4 {
            b.be16(0x0800)
            let ipStart = b.offset
            b.bytes([0x45, 0])
            b.be16(UInt16(20 + l4len + payloadLength))
            b.be16(ipID)
            b.be16(0x4000)  // DF
            b.bytes([64, flow.transport.rawValue])
            b.be16(0)  // checksum, patched below
            b.be32(flow.source.ipv4Value)
            b.be32(flow.destination.ipv4Value)
            let cs = ipv4HeaderChecksum(UnsafeRawBufferPointer(start: buffer.baseAddress! + ipStart, count: 20))
            (buffer.baseAddress! + ipStart + 10).storeBytes(of: cs.bigEndian, as: UInt16.self)
        } else {
            b.be16(0x86dd)
            b.be32(0x6000_0000)
            b.be16(UInt16(l4len + payloadLength))
            b.bytes([flow.transport.rawValue, 64])
            b.be64(flow.source.high)
            b.be64(flow.source.low)
            b.be64(flow.destination.high)
            b.be64(flow.destination.low)
        }
        b.be16(flow.sourcePort)
        b.be16(flow.destinationPort)
        if flow.transport == .udp {
            b.be16(UInt16(8 + payloadLength))
            b.be16(0)
        } else {
            let t = tcp ?? TCPSegmentInfo(sequenceNumber: 0, acknowledgmentNumber: 0, flags: [.psh, .ack], window: 0xffff)
            b.be32(t.sequenceNumber)
            b.be32(t.acknowledgmentNumber)
            b.be16(5 << 12 | t.flags.rawValue)
            b.be16(t.window)
            b.be32(0)  // checksum, urgent pointer
        }
        for i in 0..<payloadLength { b.bytes([payloadByte(i)]) }
        return total
    }

    /// The one's-complement checksum of an IPv4 header (checksum field zero),
    /// by the parser's RFC 1071 code (`Checksum`). Any thread.
    public static func ipv4HeaderChecksum(_ header: UnsafeRawBufferPointer) -> UInt16 {
        Checksum.fold(Checksum.sum(header, from: 0, count: header.count))
    }

    struct FrameWriter {
        let base: UnsafeMutableRawPointer
        var offset = 0
        mutating func bytes(_ v: [UInt8]) {
            for x in v {
                base.storeBytes(of: x, toByteOffset: offset, as: UInt8.self)
                offset += 1
            }
        }
        mutating func be16(_ v: UInt16) { base.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt16.self); offset += 2 }
        mutating func be32(_ v: UInt32) { base.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt32.self); offset += 4 }
        mutating func be64(_ v: UInt64) { base.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt64.self); offset += 8 }
    }
}
