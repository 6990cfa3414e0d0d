import Testing
@testable import NetStack

/// An ICMPv4 echo request from `source` to `destination`, assembled here
/// field by field (not by the code under test).
func echoRequestV4(from source: IPAddress, to destination: IPAddress, identifier: UInt16 = 0x1234,
                   sequence: UInt16 = 7, data: [UInt8]) -> [UInt8] {
    let total = 28 + data.count
    var p: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0xab, 0xcd, 0x40, 0, 64, 1, 0, 0]
    for a in [source, destination] { withUnsafeBytes(of: a.ipv4Value.bigEndian) { p += $0 } }
    let h = ~onesComplementSum(p[0..<20])
    p[10] = UInt8(h >> 8); p[11] = UInt8(h & 0xff)
    var icmp: [UInt8] = [8, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xff),
                         UInt8(sequence >> 8), UInt8(sequence & 0xff)] + data
    let c = ~onesComplementSum(icmp)
    icmp[2] = UInt8(c >> 8); icmp[3] = UInt8(c & 0xff)
    return p + icmp
}

/// An ICMPv6 echo request, assembled field by field.
func echoRequestV6(from source: IPAddress, to destination: IPAddress, data: [UInt8]) -> [UInt8] {
    let length = 8 + data.count
    var p: [UInt8] = [0x60, 0, 0, 0, UInt8(length >> 8), UInt8(length & 0xff), 58, 64]
    for a in [source, destination] {
        withUnsafeBytes(of: a.high.bigEndian) { p += $0 }
        withUnsafeBytes(of: a.low.bigEndian) { p += $0 }
    }
    var icmp: [UInt8] = [128, 0, 0, 0, 0x12, 0x34, 0, 7] + data
    let c = ~onesComplementSum(icmp, initial: pseudoHeaderSum(p, protocol: 58, length: length))
    icmp[2] = UInt8(c >> 8); icmp[3] = UInt8(c & 0xff)
    return p + icmp
}

@Suite struct UDPOutputTests {
    @Test func ipv4RoundTripsThroughTheParser() throws {
        let payload = [UInt8](repeating: 0x5a, count: 333)
        let packet = try payload.withUnsafeBytes { p throws(OutputError) in
            try build { b throws(OutputError) in
                try UDPOutput.buildIPv4(into: b, source: v4a, sourcePort: 5353, destination: v4b,
                                        destinationPort: 40000, payload: p)
            }
        }
        #expect(packet.count == 20 + 8 + 333)
        let parsed = try #require(parseRaw(packet).packet)
        #expect(parsed.flow == FlowKey(transport: .udp, source: v4a, sourcePort: 5353,
                                       destination: v4b, destinationPort: 40000))
        #expect(parsed.payloadOffset == 28)
        #expect(parsed.payloadLength == 333)
        #expect(Array(packet[28...]) == payload)
        #expect(packet[6] == 0x40 && packet[7] == 0)  // DF, offset 0
        #expect(packet[8] == 64)                       // TTL
        #expect(onesComplementSum(packet[0..<20]) == 0xffff)
    }

    @Test func ipv6RoundTripsThroughTheParser() throws {
        let payload = [UInt8]((0..<1001).map { UInt8(truncatingIfNeeded: $0) })
        let packet = try payload.withUnsafeBytes { p throws(OutputError) in
            try build { b throws(OutputError) in
                try UDPOutput.buildIPv6(into: b, source: v6a, sourcePort: 53, destination: v6b,
                                        destinationPort: 33333, payload: p, flowLabel: 0xabcde)
            }
        }
        let parsed = try #require(parseRaw(packet).packet)
        #expect(parsed.flow == FlowKey(transport: .udp, source: v6a, sourcePort: 53,
                                       destination: v6b, destinationPort: 33333))
        #expect(parsed.payloadOffset == 48)
        #expect(parsed.payloadLength == 1001)
        #expect(Array(packet[48...]) == payload)
        #expect(packet[0..<4] == [0x60, 0x0a, 0xbc, 0xde])  // version, class 0, flow label
        #expect(packet[7] == 64)                             // hop limit
    }

    /// RFC 768: a computed checksum of 0 is sent as all ones (for IPv6 the
    /// zero value is forbidden outright, RFC 8200 §8.1). The payload's last
    /// word is chosen to make the sum come out 0xffff.
    @Test(arguments: [v4a, v6a])
    func zeroChecksumIsSentAsOnes(source: IPAddress) throws {
        let destination = source.family == .ipv4 ? v4b : v6b
        func make(_ payload: [UInt8]) throws -> [UInt8] {
            try payload.withUnsafeBytes { p throws(OutputError) in
                try build { b throws(OutputError) in
                    source.family == .ipv4
                        ? try UDPOutput.buildIPv4(into: b, source: source, sourcePort: 1, destination: destination,
                                                  destinationPort: 2, payload: p)
                        : try UDPOutput.buildIPv6(into: b, source: source, sourcePort: 1, destination: destination,
                                                  destinationPort: 2, payload: p)
                }
            }
        }
        var payload: [UInt8] = [1, 2, 3, 4, 0, 0]
        let first = try make(payload)
        let at = source.family == .ipv4 ? 26 : 46
        payload[4] = first[at]; payload[5] = first[at + 1]
        let second = try make(payload)
        #expect(second[at] == 0xff && second[at + 1] == 0xff)
        #expect(parseRaw(second).packet != nil)
    }

    /// Known answer: the bytes come from a Python script using `struct`
    /// and its own RFC 1071 sum (in the commit that added this test):
    /// 192.0.2.1:5353 > 198.51.100.7:40000, "hello, tun", ID 0, DF, TTL 64.
    @Test func ipv4KnownAnswer() throws {
        let expected = hexBytes("450000260000400040114e8bc0000201c633640714e99c400012888368656c6c6f2c2074756e")
        let packet = try Array("hello, tun".utf8).withUnsafeBytes { p throws(OutputError) in
            try build { b throws(OutputError) in
                try UDPOutput.buildIPv4(into: b, source: v4a, sourcePort: 5353, destination: v4b,
                                        destinationPort: 40000, payload: p)
            }
        }
        #expect(packet == expected)
    }

    @Test func sizeErrors() {
        let big = [UInt8](repeating: 0, count: 65_508)
        big.withUnsafeBytes { p in
            #expect(throws: OutputError.datagramTooLarge) {
                _ = try build(70_000) { b throws(OutputError) in
                    try UDPOutput.buildIPv4(into: b, source: v4a, sourcePort: 1, destination: v4b,
                                            destinationPort: 2, payload: p)
                }
            }
            #expect(throws: OutputError.bufferTooSmall) {
                _ = try build(100) { b throws(OutputError) in
                    try UDPOutput.buildIPv6(into: b, source: v6a, sourcePort: 1, destination: v6b,
                                            destinationPort: 2, payload: UnsafeRawBufferPointer(rebasing: p[0..<60]))
                }
            }
        }
    }

    @Test func flowLabelIsAStableKeyedHash() {
        let a = IPv6Output.flowLabel(source: v6a, destination: v6b, nextHeader: 17, sourcePort: 1, destinationPort: 2, seed: 9)
        let b = IPv6Output.flowLabel(source: v6a, destination: v6b, nextHeader: 17, sourcePort: 1, destinationPort: 2, seed: 9)
        let c = IPv6Output.flowLabel(source: v6a, destination: v6b, nextHeader: 17, sourcePort: 1, destinationPort: 3, seed: 9)
        let d = IPv6Output.flowLabel(source: v6a, destination: v6b, nextHeader: 17, sourcePort: 1, destinationPort: 2, seed: 10)
        #expect(a == b && a <= 0xfffff)
        #expect(a != c && a != d)
    }
}

@Suite struct ICMPOutputTests {
    @Test func ipv4EchoReplyMirrorsTheRequest() throws {
        let data = [UInt8]((0..<56).map { UInt8($0) })
        let request = echoRequestV4(from: v4b, to: v4a, data: data)
        let reply = try request.withUnsafeBytes { r throws(OutputError) in
            try build { b throws(OutputError) in try ICMPv4Output.buildEchoReply(into: b, request: r, identification: 0x0102) }
        }
        #expect(reply.count == request.count)
        #expect(reply[0] == 0x45 && be16(reply, 2) == reply.count)
        #expect(be16(reply, 4) == 0x0102 && reply[6] & 0x40 == 0)  // ID given, DF clear
        #expect(reply[8] == 64 && reply[9] == 1)
        #expect(Array(reply[12..<16]) == Array(request[16..<20]))  // source = request destination
        #expect(Array(reply[16..<20]) == Array(request[12..<16]))
        #expect(onesComplementSum(reply[0..<20]) == 0xffff)
        #expect(reply[20] == 0 && reply[21] == 0)                  // echo reply, code 0
        #expect(Array(reply[24..<28]) == Array(request[24..<28]))  // identifier, sequence (RFC 1122 3.2.2.6)
        #expect(Array(reply[28...]) == data)
        #expect(onesComplementSum(reply[20...]) == 0xffff)        // RFC 792: no pseudo-header
    }

    /// Known answer: request and reply come from a Python script using
    /// `struct` and its own RFC 1071 sum over the RFC 8200 §8.1
    /// pseudo-header (in the commit that added this test): 2001:db8::2 >
    /// 2001:db8::1, identifier 0x1234, sequence 7, data "0123456789abcdef!".
    @Test func ipv6EchoReplyKnownAnswer() throws {
        let request = hexBytes("""
            6000000000193a4020010db800000000000000000000000220010db8000000000000000000000001\
            8000c1c4123400073031323334353637383961626364656621
            """)
        let expected = hexBytes("""
            6000000000193a4020010db800000000000000000000000120010db8000000000000000000000002\
            8100c0c4123400073031323334353637383961626364656621
            """)
        #expect(request == echoRequestV6(from: v6b, to: v6a, data: Array("0123456789abcdef!".utf8)))
        let reply = try request.withUnsafeBytes { r throws(OutputError) in
            try build { b throws(OutputError) in try ICMPv6Output.buildEchoReply(into: b, request: r) }
        }
        #expect(reply == expected)
        #expect(onesComplementSum(reply[40...], initial: pseudoHeaderSum(reply, protocol: 58, length: reply.count - 40)) == 0xffff)
    }

    @Test func echoRequestsThatGetNoReply() {
        let multicast = echoRequestV4(from: v4b, to: IPAddress("224.0.0.1")!, data: [1, 2])
        var notEcho = echoRequestV4(from: v4b, to: v4a, data: [1, 2])
        notEcho[20] = 13  // timestamp request
        var fragment = echoRequestV4(from: v4b, to: v4a, data: [1, 2])
        fragment[6] |= 0x20  // MF
        let multicast6 = echoRequestV6(from: v6b, to: IPAddress("ff02::1")!, data: [1])
        for (request, error) in [(multicast, OutputError.notUnicast), (notEcho, .malformedInput), (fragment, .malformedInput)] {
            _ = request.withUnsafeBytes { r in
                #expect(throws: error) {
                    _ = try build { b throws(OutputError) in try ICMPv4Output.buildEchoReply(into: b, request: r, identification: 1) }
                }
            }
        }
        _ = multicast6.withUnsafeBytes { r in
            #expect(throws: OutputError.notUnicast) {
                _ = try build { b throws(OutputError) in try ICMPv6Output.buildEchoReply(into: b, request: r) }
            }
        }
    }

    /// RFC 792 / RFC 1812 §4.3.2.3: the IP header and as much data as keeps
    /// the error within 576 bytes; a short datagram is quoted whole.
    @Test(arguments: [1000, 10])
    func ipv4PortUnreachableQuotesTheDatagram(payload: Int) throws {
        let offending = udpPacket(v4b, v4a, payload: payload)
        let error = try offending.withUnsafeBytes { o throws(OutputError) in
            try build { b throws(OutputError) in
                try ICMPv4Output.buildDestinationUnreachable(into: b, offending: o, identification: 5)
            }
        }
        let quoted = min(offending.count, 548)
        #expect(error.count == 28 + quoted && error.count <= 576)
        #expect(Array(error[12..<16]) == Array(offending[16..<20]))  // from the address it was sent to
        #expect(Array(error[16..<20]) == Array(offending[12..<16]))
        #expect(error[9] == 1 && error[20] == 3 && error[21] == 3)
        #expect(Array(error[28...]) == Array(offending[0..<quoted]))
        #expect(onesComplementSum(error[0..<20]) == 0xffff)
        #expect(onesComplementSum(error[20...]) == 0xffff)
    }

    /// RFC 4443 §2.4(c): as much of the packet as fits the minimum MTU.
    @Test(arguments: [1400, 10])
    func ipv6PortUnreachableQuotesTheDatagram(payload: Int) throws {
        let offending = udpPacket(v6b, v6a, payload: payload)
        let error = try offending.withUnsafeBytes { o throws(OutputError) in
            try build { b throws(OutputError) in try ICMPv6Output.buildDestinationUnreachable(into: b, offending: o) }
        }
        let quoted = min(offending.count, 1232)
        #expect(error.count == 48 + quoted && error.count <= 1280)
        #expect(Array(error[8..<24]) == Array(offending[24..<40]))
        #expect(Array(error[24..<40]) == Array(offending[8..<24]))
        #expect(error[6] == 58 && error[40] == 1 && error[41] == 4)
        #expect(be16(error, 4) == error.count - 40)
        #expect(Array(error[48...]) == Array(offending[0..<quoted]))
        #expect(onesComplementSum(error[40...], initial: pseudoHeaderSum(error, protocol: 58, length: error.count - 40)) == 0xffff)
    }
}
