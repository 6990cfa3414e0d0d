import Benchmark
import NetStack

/// NetStack's output path: building a reply into a pool buffer, the
/// per-packet work of an endpoint answering. Both must allocate nothing.
func outputBenchmarks() {
    // A 64-byte UDP payload to 4,096 destinations, into one pool buffer.
    Benchmark("Output.buildUDPv4") { benchmark in
        let pool = PacketPool(bufferCount: 1)
        let packet = pool.allocate()!
        let buffer = pool.buffer(packet)
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
        defer { payload.deallocate() }
        payload.initializeMemory(as: UInt8.self, repeating: 0x42)
        let source = IPAddress(ipv4: 0xC0A8_0001)
        var bytes = 0
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            let destination = IPAddress(ipv4: 0x0A00_0000 | UInt32(i & 4095))
            bytes &+= (try? UDPOutput.buildIPv4(
                into: buffer, source: source, sourcePort: 53, destination: destination,
                destinationPort: UInt16(truncatingIfNeeded: i) | 1024, payload: UnsafeRawBufferPointer(payload))) ?? 0
        }
        benchmark.stopMeasurement()
        blackHole(bytes)
    }
    // The reply to a 56-byte-data ping (what `ping` sends by default), with
    // a per-destination ID, into one pool buffer.
    Benchmark("Output.buildICMPEchoReply") { benchmark in
        let pool = PacketPool(bufferCount: 2)
        let requestRef = pool.allocate()!, replyRef = pool.allocate()!
        let data = UnsafeMutableRawBufferPointer.allocate(byteCount: 56, alignment: 8)
        defer { data.deallocate() }
        data.initializeMemory(as: UInt8.self, repeating: 7)
        // An echo request: build the "reply" shape, then make it a request.
        let requestBuffer = pool.buffer(requestRef)
        let length = 84
        requestBuffer.initializeMemory(as: UInt8.self, repeating: 0)
        requestBuffer.copyBytes(from: [0x45, 0, 0, UInt8(length), 0, 1, 0x40, 0, 64, 1, 0, 0,
                                       10, 0, 0, 2, 192, 168, 0, 1, 8, 0, 0, 0, 0x12, 0x34, 0, 1])
        UnsafeMutableRawBufferPointer(rebasing: requestBuffer[28..<84]).copyMemory(from: UnsafeRawBufferPointer(data))
        let request = UnsafeRawBufferPointer(rebasing: requestBuffer[0..<length])
        let reply = pool.buffer(replyRef)
        var ids = IPIdentificationGenerator(seed: 1)
        var bytes = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            let id = ids.nextIPv4(source: IPAddress(ipv4: 0xC0A8_0001), destination: IPAddress(ipv4: 0x0A00_0002),
                                  protocol: 1)
            bytes &+= (try? ICMPv4Output.buildEchoReply(into: reply, request: request, identification: id)) ?? 0
        }
        benchmark.stopMeasurement()
        blackHole(bytes)
    }
    // A 3,000-byte UDP datagram over a 1500-byte MTU: three fragments from
    // a pool cache, returned to it after each send (the all-or-nothing
    // emit loop and its closure must not allocate either).
    Benchmark("Output.sendUDPv4Fragmented") { benchmark in
        let pool = PacketPool(bufferCount: 64, batchSize: 16)
        var cache = PacketPool.Cache(pool: pool)
        var ids = IPIdentificationGenerator(seed: 1)
        let out = UnsafeMutableBufferPointer<PacketRef>.allocate(capacity: 8)
        defer { out.deallocate() }
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: 3000, alignment: 8)
        defer { payload.deallocate() }
        payload.initializeMemory(as: UInt8.self, repeating: 0x42)
        let source = IPAddress(ipv4: 0xC0A8_0001), destination = IPAddress(ipv4: 0x0A00_0002)
        var fragments = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            let n = (try? UDPOutput.sendIPv4(
                source: source, sourcePort: 53, destination: destination, destinationPort: 4000,
                payload: UnsafeRawBufferPointer(payload), mtu: 1500, identifications: &ids, cache: &cache,
                into: out)) ?? 0
            for i in 0..<n { cache.free(out[i]) }
            fragments &+= n
        }
        benchmark.stopMeasurement()
        blackHole(fragments)
    }
}
