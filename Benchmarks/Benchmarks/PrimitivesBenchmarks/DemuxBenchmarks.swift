import Benchmark
import FastDemux
import SMPPrimitives

/// 4,096 distinct IPv4 UDP/TCP flows as Ethernet frames (64 to 127 bytes),
/// written by FastDemux's own frame writer, one frame per 128-byte slot.
final class BenchmarkFrames {
    static let count = 4096
    static let stride = 128
    let flows: [FlowKey]
    private let lengths: [Int]
    private let storage: UnsafeMutableRawBufferPointer

    init() {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {  // splitmix64: distinct, reproducible keys
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        storage = .allocate(byteCount: Self.count * Self.stride, alignment: 64)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        var flows: [FlowKey] = []
        var lengths: [Int] = []
        for i in 0..<Self.count {
            let r = next()
            let key = FlowKey(transport: i & 1 == 0 ? .udp : .tcp,
                              source: IPAddress(ipv4: 0x0A00_0000 | UInt32(i)), sourcePort: UInt16(truncatingIfNeeded: r),
                              destination: IPAddress(ipv4: 0xC0A8_0001), destinationPort: UInt16(truncatingIfNeeded: r >> 16) | 1)
            flows.append(key)
            lengths.append(SyntheticFrame.write(into: UnsafeMutableRawBufferPointer(rebasing: storage[(i * Self.stride)...]),
                                                flow: key, payloadLength: Int(r >> 32) % 40))
        }
        self.flows = flows
        self.lengths = lengths
    }

    deinit { storage.deallocate() }

    func frame(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: storage[(i * Self.stride)..<(i * Self.stride + lengths[i])])
    }
}

/// Parsing and PCB lookup, the per-packet work of the input thread before
/// the hand-off.
func demuxBenchmarks() {
    Benchmark("Demux.parseFrame") { benchmark in
        let traffic = BenchmarkFrames()
        let parser = PacketParser()
        var delivered = 0
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            if case .packet = parser.parse(traffic.frame(i & 4095), linkType: .ethernet) { delivered &+= 1 }
        }
        benchmark.stopMeasurement()
        blackHole(delivered)
    }
    Benchmark("Demux.parseAndLookup") { benchmark in
        let traffic = BenchmarkFrames()
        let parser = PacketParser()
        let table = RCUHashTable<FlowKey, UInt, Memb>(initialBucketCount: 8192)
        for (i, flow) in traffic.flows.enumerated() { _ = table.insert(flow, value: UInt(i)) }
        Memb.registerThread()
        defer { Memb.unregisterThread() }
        var hits = 0
        benchmark.startMeasurement()
        Memb.withReadSection {
            for i in benchmark.scaledIterations {
                if case .packet(let p) = parser.parse(traffic.frame(i & 4095), linkType: .ethernet),
                   table.lookup(p.flow) != nil {
                    hits &+= 1
                }
            }
        }
        benchmark.stopMeasurement()
        blackHole(hits)
    }
}
