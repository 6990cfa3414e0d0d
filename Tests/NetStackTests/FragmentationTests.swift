import Testing
@testable import NetStack

/// Sends through the pool and returns the packets' bytes (the buffers go
/// back to the cache), or the error.
func sendPackets(pool: PacketPool, slots: Int = 64,
                 _ body: (inout IPIdentificationGenerator, inout PacketPool.Cache, UnsafeMutableBufferPointer<PacketRef>) throws(OutputError) -> Int)
    -> Result<[[UInt8]], OutputError> {
    var ids = IPIdentificationGenerator(seed: 42)
    var cache = PacketPool.Cache(pool: pool)
    let out = UnsafeMutableBufferPointer<PacketRef>.allocate(capacity: slots)
    defer { out.deallocate() }
    do {
        let n = try body(&ids, &cache, out)
        var packets: [[UInt8]] = []
        for i in 0..<n {
            packets.append(Array(pool.bytes(out[i])))
            cache.free(out[i])
        }
        return .success(packets)
    } catch {
        return .failure(error)
    }
}

/// Reassembles IPv4 fragments the simple way (in order, no gaps allowed)
/// into one datagram with a fresh header checksum.
func reassembleIPv4(_ fragments: [[UInt8]]) -> [UInt8] {
    var header = Array(fragments[0][0..<20])
    var payload: [UInt8] = []
    for f in fragments {
        #expect(be16(f, 6) & 0x1fff * 8 == payload.count)
        payload += f[20...]
    }
    let total = 20 + payload.count
    header[2] = UInt8(total >> 8); header[3] = UInt8(total & 0xff)
    header[6] = 0; header[7] = 0; header[10] = 0; header[11] = 0
    let c = ~onesComplementSum(header)
    header[10] = UInt8(c >> 8); header[11] = UInt8(c & 0xff)
    return header + payload
}

/// The same for IPv6: the fixed header with the Fragment header removed.
func reassembleIPv6(_ fragments: [[UInt8]]) -> [UInt8] {
    var header = Array(fragments[0][0..<40])
    var payload: [UInt8] = []
    for f in fragments {
        #expect(be16(f, 42) & 0xfff8 == payload.count)
        payload += f[48...]
    }
    header[6] = fragments[0][40]
    header[4] = UInt8(payload.count >> 8); header[5] = UInt8(payload.count & 0xff)
    return header + payload
}

@Suite struct FragmentationTests {
    @Test(arguments: [(1500, 2048), (576, 2048), (1500, 512)])
    func ipv4FragmentsReassembleToTheDatagram(mtu: Int, bufferSize: Int) throws {
        let pool = PacketPool(bufferCount: 64, bufferSize: bufferSize, batchSize: 8)
        let payload = [UInt8]((0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        let fragments = try payload.withUnsafeBytes { p in
            sendPackets(pool: pool) { ids, cache, out throws(OutputError) in
                try UDPOutput.sendIPv4(source: v4a, sourcePort: 7, destination: v4b, destinationPort: 8, payload: p,
                                       mtu: mtu, identifications: &ids, cache: &cache, into: out)
            }
        }.get()
        let limit = min(mtu, bufferSize)
        #expect(fragments.count == (3008 + (limit - 20) / 8 * 8 - 1) / ((limit - 20) / 8 * 8))
        for (i, f) in fragments.enumerated() {
            #expect(f.count <= limit && be16(f, 2) == f.count)
            #expect(be16(f, 4) == be16(fragments[0], 4))           // one ID
            #expect(f[6] & 0x40 == 0)                               // DF clear
            #expect((f[6] & 0x20 != 0) == (i < fragments.count - 1)) // MF on all but the last
            if i < fragments.count - 1 { #expect((f.count - 20) % 8 == 0) }
            #expect(onesComplementSum(f[0..<20]) == 0xffff)
        }
        #expect(parseRaw(fragments[0]).dropReason == .ipv4Fragment)
        let whole = reassembleIPv4(fragments)
        let parsed = try #require(parseRaw(whole).packet)  // the UDP checksum covers the whole datagram
        #expect(parsed.flow == FlowKey(transport: .udp, source: v4a, sourcePort: 7, destination: v4b, destinationPort: 8))
        #expect(parsed.payloadOffset == 28 && parsed.payloadLength == 3000)
        #expect(Array(whole[28...]) == payload)
        #expect(pool.globalFreeCount == 64)
    }

    @Test func ipv4DatagramThatFitsIsAtomic() throws {
        let pool = PacketPool(bufferCount: 8)
        let packets = try [UInt8](repeating: 1, count: 1472).withUnsafeBytes { p in
            sendPackets(pool: pool) { ids, cache, out throws(OutputError) in
                try UDPOutput.sendIPv4(source: v4a, sourcePort: 7, destination: v4b, destinationPort: 8, payload: p,
                                       mtu: 1500, identifications: &ids, cache: &cache, into: out)
            }
        }.get()
        #expect(packets.count == 1 && packets[0].count == 1500)
        #expect(be16(packets[0], 4) == 0 && packets[0][6] == 0x40)  // ID 0, DF (RFC 6864 4.1)
        #expect(parseRaw(packets[0]).packet?.payloadLength == 1472)
    }

    @Test func ipv6FragmentsReassembleToTheDatagram() throws {
        let pool = PacketPool(bufferCount: 64)
        let payload = [UInt8]((0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 3) })
        let fragments = try payload.withUnsafeBytes { p in
            sendPackets(pool: pool) { ids, cache, out throws(OutputError) in
                try UDPOutput.sendIPv6(source: v6a, sourcePort: 7, destination: v6b, destinationPort: 8, payload: p,
                                       mtu: 1280, flowLabel: 5, identifications: &ids, cache: &cache, into: out)
            }
        }.get()
        #expect(fragments.map(\.count) == [1280, 1280, 48 + 3008 - 2 * 1232])
        for (i, f) in fragments.enumerated() {
            #expect(f[6] == 44 && f[40] == 17 && f[41] == 0)
            #expect(be16(f, 4) == f.count - 40)
            #expect(Array(f[44..<48]) == Array(fragments[0][44..<48]))  // one 32-bit ID
            #expect((f[43] & 1 != 0) == (i < fragments.count - 1))     // M flag
            #expect(Array(f[0..<4]) == [0x60, 0, 0, 5])
        }
        #expect(parseRaw(fragments[0]).dropReason == .ipv6Fragment)
        let whole = reassembleIPv6(fragments)
        let parsed = try #require(parseRaw(whole).packet)
        #expect(parsed.flow == FlowKey(transport: .udp, source: v6a, sourcePort: 7, destination: v6b, destinationPort: 8))
        #expect(parsed.payloadOffset == 48 && parsed.payloadLength == 3000)
    }

    @Test func ipv4EchoReplyToAReassembledRequestIsFragmented() throws {
        let pool = PacketPool(bufferCount: 16)
        let data = [UInt8]((0..<4000).map { UInt8(truncatingIfNeeded: $0) })
        let request = echoRequestV4(from: v4b, to: v4a, data: data)
        let fragments = try request.withUnsafeBytes { r in
            sendPackets(pool: pool) { ids, cache, out throws(OutputError) in
                try ICMPv4Output.sendEchoReply(request: r, mtu: 1500, identifications: &ids, cache: &cache, into: out)
            }
        }.get()
        #expect(fragments.count == 3)
        let whole = reassembleIPv4(fragments)
        #expect(whole[20] == 0 && Array(whole[28...]) == data)
        #expect(onesComplementSum(whole[20...]) == 0xffff)
    }

    @Test func ipv6EchoReplyFitsOneBuffer() throws {
        let pool = PacketPool(bufferCount: 4)
        let request = echoRequestV6(from: v6b, to: v6a, data: [9, 8, 7])
        let packets = try request.withUnsafeBytes { r in
            sendPackets(pool: pool) { ids, cache, out throws(OutputError) in
                try ICMPv6Output.sendEchoReply(request: r, mtu: 1500, identifications: &ids, cache: &cache, into: out)
            }
        }.get()
        let single = try request.withUnsafeBytes { r throws(OutputError) in
            try build { b throws(OutputError) in try ICMPv6Output.buildEchoReply(into: b, request: r) }
        }
        #expect(packets == [single])
    }

    /// The pool runs dry at the third fragment: the two taken go back, the
    /// caller sees the error, no buffer leaks.
    @Test func poolRunningDryFreesWhatWasTaken() {
        let pool = PacketPool(bufferCount: 2, bufferSize: 2048, batchSize: 1)
        var ids = IPIdentificationGenerator(seed: 1)
        var cache = PacketPool.Cache(pool: pool)
        let out = UnsafeMutableBufferPointer<PacketRef>.allocate(capacity: 8)
        defer { out.deallocate() }
        let payload = [UInt8](repeating: 0, count: 4000)
        payload.withUnsafeBytes { p in
            #expect(throws: OutputError.poolExhausted) {
                _ = try UDPOutput.sendIPv4(source: v4a, sourcePort: 1, destination: v4b, destinationPort: 2, payload: p,
                                           mtu: 1500, identifications: &ids, cache: &cache, into: out)
            }
            #expect(pool.globalFreeCount + cache.cachedCount == 2)
            #expect(throws: OutputError.poolExhausted) {
                _ = try UDPOutput.sendIPv6(source: v6a, sourcePort: 1, destination: v6b, destinationPort: 2, payload: p,
                                           mtu: 1280, identifications: &ids, cache: &cache, into: out)
            }
            #expect(pool.globalFreeCount + cache.cachedCount == 2)
            // Too few output slots: refused before any buffer is taken.
            #expect(throws: OutputError.tooManyFragments) {
                _ = try UDPOutput.sendIPv4(source: v4a, sourcePort: 1, destination: v4b, destinationPort: 2, payload: p,
                                           mtu: 1500, identifications: &ids, cache: &cache,
                                           into: UnsafeMutableBufferPointer(rebasing: out[0..<2]))
            }
            #expect(pool.globalFreeCount + cache.cachedCount == 2)
        }
    }

    @Test func mtuBelowTheMinimum() {
        let pool = PacketPool(bufferCount: 2)
        let r4 = sendPackets(pool: pool) { ids, cache, out throws(OutputError) in
            try UDPOutput.sendIPv4(source: v4a, sourcePort: 1, destination: v4b, destinationPort: 2,
                                   payload: UnsafeRawBufferPointer(start: nil, count: 0), mtu: 67,
                                   identifications: &ids, cache: &cache, into: out)
        }
        let r6 = sendPackets(pool: pool) { ids, cache, out throws(OutputError) in
            try UDPOutput.sendIPv6(source: v6a, sourcePort: 1, destination: v6b, destinationPort: 2,
                                   payload: UnsafeRawBufferPointer(start: nil, count: 0), mtu: 1279,
                                   identifications: &ids, cache: &cache, into: out)
        }
        #expect(throws: OutputError.mtuTooSmall) { try r4.get() }
        #expect(throws: OutputError.mtuTooSmall) { try r6.get() }
    }

    @Test func identificationsArePerDestinationCounters() {
        var a = IPIdentificationGenerator(seed: 77)
        var b = IPIdentificationGenerator(seed: 77)
        let first = a.nextIPv4(source: v4a, destination: v4b, protocol: 17)
        let second = a.nextIPv4(source: v4a, destination: v4b, protocol: 17)
        let again = b.nextIPv4(source: v4a, destination: v4b, protocol: 17)
        #expect(second == first &+ 1)
        #expect(again == first)  // seeded: reproducible
        let v6 = a.nextIPv6(source: v6a, destination: v6b)
        let v6next = a.nextIPv6(source: v6a, destination: v6b)
        #expect(v6next == v6 &+ 1)
    }
}
