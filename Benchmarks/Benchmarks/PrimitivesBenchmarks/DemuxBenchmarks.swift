import Benchmark
import FastDemux
import SMPPrimitives

/// Parsing and PCB lookup, the per-packet work of the input thread before
/// the hand-off, over the demux workload's own frames.
func demuxBenchmarks() {
    Benchmark("Demux.parseFrame") { benchmark in
        let traffic = DemuxBenchmarkTraffic(frameCount: 4096)
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
        let traffic = DemuxBenchmarkTraffic(frameCount: 4096)
        let parser = PacketParser()
        let table = RCUHashTable<FlowKey, UInt, Memb>(initialBucketCount: 8192)
        for (i, flow) in traffic.flows.enumerated() { _ = table.insert(flow.key, value: UInt(i)) }
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
