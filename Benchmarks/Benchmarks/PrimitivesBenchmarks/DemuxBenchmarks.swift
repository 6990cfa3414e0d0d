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
    // The fast path's delivery of a parsed burst (the demux workload's
    // input loop, on one thread): the batch's lookups, socket touches, slot
    // reservations, TCP steps and publications, the burst's readiness
    // flush, then each socket's reader drains what it got. One socket per
    // flow; TCP flows replay the same segment, so after the first pass
    // each is a duplicate (the duplicate-ACK path).
    Benchmark("Demux.deliverBatch") { benchmark in
        let traffic = BenchmarkFrames()
        let parser = PacketParser()
        let demux = Demux<Memb>(configuration: .init(queueCapacity: 256, expectedConnections: BenchmarkFrames.count))
        var sockets: [Socket] = []
        var batch: [DemuxPacket] = []
        for (i, flow) in traffic.flows.enumerated() {
            guard case .packet(let p) = parser.parse(traffic.frame(i), linkType: .ethernet) else {
                fatalError("Demux.deliverBatch: frame \(i) does not parse")
            }
            let s = demux.makeSocket(flow.transport == .tcp ? .tcp : .udp)
            try! s.connect(to: InetEndpoint(flow.source, flow.sourcePort),
                           from: InetEndpoint(flow.destination, flow.destinationPort),
                           initialReceiveSequence: p.tcp?.sequenceNumber)
            sockets.append(s)
            batch.append(DemuxPacket(packet: PacketRef(word: UInt(i)), key: p.flow, tcp: p.tcp,
                                     payloadLength: p.payloadLength))
        }
        Memb.registerThread()
        defer { Memb.unregisterThread() }
        let input = demux.makeInput(ackSink: { acks in blackHole(acks.count) })
        // The readers' side through unretained references, as a reader
        // thread holding its sockets would (`sockets` keeps them alive): an
        // array of class references would retain each one it hands out.
        let readers = sockets.map(SocketReference.init(unretained:))
        var received = 0, offered = 0
        benchmark.startMeasurement()
        batch.withUnsafeBufferPointer { all in readers.withUnsafeBufferPointer { readers in
            for i in benchmark.scaledIterations {
                offered &+= 32
                let first = (i &* 32) & (BenchmarkFrames.count - 1)
                input.burst { b in
                    b.deliver(batch: UnsafeBufferPointer(rebasing: all[first..<(first + 32)])) { _, _ in }
                }
                for k in first..<(first + 32) {
                    received &+= readers[k].withSocket { $0.receive(upTo: 8) { blackHole($0) } }
                }
            }
        } }
        benchmark.stopMeasurement()
        // Not a measure of nothing: every packet reached its socket.
        precondition(received == offered, "Demux.deliverBatch: \(offered) packets offered, \(received) received")
        demux.table.close(sockets)
    }
}
