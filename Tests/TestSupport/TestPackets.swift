import FastDemux

/// Hand-built frames for the parser tests: every header is written byte by
/// byte here, independently of the parser, so the tests check the parser
/// against the wire formats rather than against itself.
package enum TestPacket {
    package static let v4a: [UInt8] = [10, 0, 0, 1]
    package static let v4b: [UInt8] = [192, 168, 7, 2]
    package static let v6a: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    package static let v6b: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0xbc]

    package static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    package static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
    package static func le32(_ v: UInt32) -> [UInt8] { be32(v).reversed() }

    /// RFC 1071 checksum of `bytes` (plus an initial partial sum).
    package static func checksum(_ bytes: [UInt8], initial: UInt32 = 0) -> UInt16 {
        var sum = initial
        var i = 0
        while i < bytes.count {
            let hi = UInt32(bytes[i]) << 8
            let lo = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            sum += hi | lo
            i += 2
        }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }

    package static func ethernet(type: UInt16, tags: [(tpid: UInt16, tci: UInt16)] = [], payload: [UInt8]) -> [UInt8] {
        var f: [UInt8] = [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]
        for t in tags { f += be16(t.tpid) + be16(t.tci) }
        return f + be16(type) + payload
    }

    /// An IPv4 header (checksum filled in) plus payload. `options` must be a
    /// multiple of 4 bytes unless `ihl` overrides the header length field.
    package static func ipv4(proto: UInt8, src: [UInt8] = v4a, dst: [UInt8] = v4b, options: [UInt8] = [],
                     fragment: UInt16 = 0x4000, totalLength: Int? = nil, ihl: UInt8? = nil,
                     version: UInt8 = 4, payload: [UInt8]) -> [UInt8] {
        let hl = ihl ?? UInt8((20 + options.count) / 4)
        let total = totalLength ?? (20 + options.count + payload.count)
        var h: [UInt8] = [version << 4 | hl, 0] + be16(UInt16(total)) + [0x12, 0x34] + be16(fragment)
            + [64, proto, 0, 0] + src + dst + options
        let c = checksum(h)
        h[10] = UInt8(c >> 8)
        h[11] = UInt8(c & 0xff)
        return h + payload
    }

    package static func ipv6(next: UInt8, src: [UInt8] = v6a, dst: [UInt8] = v6b, payloadLength: Int? = nil,
                     version: UInt8 = 6, payload: [UInt8]) -> [UInt8] {
        [version << 4, 0, 0, 0] + be16(UInt16(payloadLength ?? payload.count)) + [next, 64] + src + dst + payload
    }

    /// A generic IPv6 extension header (hop-by-hop, routing, destination
    /// options) of `8 * (lengthUnits + 1)` bytes.
    package static func ext(next: UInt8, lengthUnits: UInt8 = 0, fill: UInt8 = 0) -> [UInt8] {
        [next, lengthUnits] + [UInt8](repeating: fill, count: 6 + 8 * Int(lengthUnits))
    }

    package static func fragmentHeader(next: UInt8, offset: UInt16, more: Bool) -> [UInt8] {
        [next, 0] + be16(offset << 3 | (more ? 1 : 0)) + be32(0xabcd)
    }

    package static func tcp(sport: UInt16 = 1234, dport: UInt16 = 80, seq: UInt32 = 0x0102_0304, ack: UInt32 = 0x0a0b_0c0d,
                    flags: UInt16 = 0x018, window: UInt16 = 0xfedc, dataOffset: UInt8? = nil,
                    options: [UInt8] = [], payload: [UInt8] = []) -> [UInt8] {
        let doff = dataOffset ?? UInt8((20 + options.count) / 4)
        return be16(sport) + be16(dport) + be32(seq) + be32(ack)
            + [doff << 4 | UInt8(flags >> 8), UInt8(flags & 0xff)] + be16(window) + [0, 0, 0, 0] + options + payload
    }

    /// A UDP header plus payload. The checksum field is `checksum` as
    /// given (0, "none", by default: valid over IPv4 only; IPv6 tests pass
    /// any non-zero value, which is not verified by default).
    package static func udp(sport: UInt16 = 5353, dport: UInt16 = 53, length: Int? = nil, checksum: UInt16 = 0,
                            payload: [UInt8] = []) -> [UInt8] {
        be16(sport) + be16(dport) + be16(UInt16(length ?? 8 + payload.count)) + be16(checksum) + payload
    }

    /// Fills in the TCP or UDP checksum of a bare IPv4/IPv6 packet whose
    /// transport header starts at `l4` and runs to the end.
    package static func withTransportChecksum(_ ip: [UInt8], l4: Int, proto: UInt8) -> [UInt8] {
        var p = ip
        let v6 = p[0] >> 4 == 6
        let addresses = v6 ? Array(p[8..<40]) : Array(p[12..<20])
        let segment = Array(p[l4...])
        let length = proto == 17 ? (Int(segment[4]) << 8 | Int(segment[5])) : segment.count
        var pseudo: UInt32 = 0
        var i = 0
        while i < addresses.count { pseudo += UInt32(addresses[i]) << 8 | UInt32(addresses[i + 1]); i += 2 }
        pseudo += UInt32(proto) + UInt32(length >> 16) + UInt32(length & 0xffff)
        let at = l4 + (proto == 6 ? 16 : 6)
        p[at] = 0
        p[at + 1] = 0
        var c = checksum(Array(p[l4..<(l4 + length)]), initial: pseudo)
        if proto == 17 && c == 0 { c = 0xffff }
        p[at] = UInt8(c >> 8)
        p[at + 1] = UInt8(c & 0xff)
        return p
    }

    package static func parse(_ frame: [UInt8], _ link: LinkType = .ethernet, wire: Int? = nil,
                      verify: Bool = false) -> ParseResult {
        let parser = PacketParser(options: ParserOptions(verifyChecksums: verify))
        // An exact-size copy, so a read past the end is an ASan error.
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: frame.count, alignment: 1)
        defer { copy.deallocate() }
        frame.withUnsafeBytes { copy.copyMemory(from: $0) }
        return parser.parse(UnsafeRawBufferPointer(copy), linkType: link, wireLength: wire)
    }
}

package func v4(_ s: String) -> IPAddress { IPAddress(s)! }

/// The key an arriving packet carries.
package func packetKey(_ t: TransportProtocol, from src: String, _ sport: UInt16, to dst: String, _ dport: UInt16) -> FlowKey {
    FlowKey(transport: t, source: IPAddress(src)!, sourcePort: sport, destination: IPAddress(dst)!, destinationPort: dport)
}
