import Testing
@testable import NetStack

// Helpers for the output-path tests. The checksum here is written out
// independently of FastDemux's Checksum, byte by byte, so the tests do not
// check the implementation against itself.

/// The one's-complement sum of `bytes` as big-endian 16-bit words, folded
/// (RFC 1071); a message with a correct checksum sums to 0xffff.
func onesComplementSum(_ bytes: some Collection<UInt8>, initial: UInt32 = 0) -> UInt16 {
    var sum = initial
    var high = true
    for b in bytes {
        sum += high ? UInt32(b) << 8 : UInt32(b)
        high.toggle()
    }
    while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
    return UInt16(sum)
}

/// The pseudo-header sum (RFC 768, RFC 8200 §8.1) for the addresses in
/// `packet` (IPv4 bytes 12..<20, IPv6 8..<40), a protocol and a length.
func pseudoHeaderSum(_ packet: [UInt8], protocol proto: UInt8, length: Int) -> UInt32 {
    let addresses = packet[0] >> 4 == 4 ? packet[12..<20] : packet[8..<40]
    return UInt32(onesComplementSum(addresses)) + UInt32(proto) + UInt32(length >> 16) + UInt32(length & 0xffff)
}

func hexBytes(_ text: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = text.filter { !$0.isWhitespace }.makeIterator()
    while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
    return out
}

func be16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) << 8 | Int(b[o + 1]) }

/// Runs `body` with a zeroed scratch buffer of `count` bytes and returns the
/// first `length` bytes it reports as written.
func build(_ count: Int = 2048, _ body: (UnsafeMutableRawBufferPointer) throws(OutputError) -> Int) throws(OutputError) -> [UInt8] {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
    let n = try body(buffer)
    return Array(buffer[0..<n])
}

/// Parses raw IP bytes (a TUN packet) with checksum verification.
func parseRaw(_ packet: [UInt8]) -> ParseResult {
    packet.withUnsafeBytes {
        PacketParser(options: ParserOptions(verifyChecksums: true)).parse($0, linkType: .raw)
    }
}

let v4a = IPAddress("192.0.2.1")!
let v4b = IPAddress("198.51.100.7")!
let v6a = IPAddress("2001:db8::1")!
let v6b = IPAddress("2001:db8::2")!

/// A UDP datagram (valid checksums) as raw bytes, for the tests that need
/// something to answer or to quote.
func udpPacket(_ source: IPAddress, _ destination: IPAddress, payload: Int) -> [UInt8] {
    let data = [UInt8]((0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7) })
    return try! data.withUnsafeBytes { p throws(OutputError) in
        try build(70_000) { b throws(OutputError) in
            source.family == .ipv4
                ? try UDPOutput.buildIPv4(into: b, source: source, sourcePort: 1234, destination: destination,
                                          destinationPort: 9, payload: p)
                : try UDPOutput.buildIPv6(into: b, source: source, sourcePort: 1234, destination: destination,
                                          destinationPort: 9, payload: p)
        }
    }
}
