// Single-thread microbenchmarks of the hot paths. Each has static
// thresholds (Thresholds/*.p90.json) of 0 mallocs, and of 0 retains and 0
// releases per item: the put/get, drain, lookup, schedule, delivery and
// send paths must never allocate nor touch a reference count.
//
// The retain and release counts are per sample of 1,000 items
// (`scalingFactor: .kilo`), and the framework itself adds one or two per
// sample: the tolerance of 8 lets that through and fails on one per item
// (1,000 per sample).
import Benchmark
import SMPPrimitives

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .retainCount, .releaseCount],
        warmupIterations: 1,
        scalingFactor: .kilo,
        maxDuration: .seconds(1),
        maxIterations: 100,
        thresholds: [
            .mallocCountTotal: .init(absolute: [.p90: 0]),
            .retainCount: .init(absolute: [.p90: 8]),
            .releaseCount: .init(absolute: [.p90: 8]),
        ]
    )
    // The framework's own allocations per sample, for reading the others.
    Benchmark("Baseline.empty") { benchmark in
        for i in benchmark.scaledIterations { blackHole(i) }
    }
    pcqBenchmarks()
    rcuBenchmarks()
    demuxBenchmarks()
    workerBenchmarks()
    outputBenchmarks()
    tcpBenchmarks()
}

func pcqBenchmarks() {
    Benchmark("PCQ.putGet") { benchmark in
        let q = PCQ<UInt>(capacity: 1024)
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            _ = q.put(UInt(i) &+ 1)
            blackHole(q.get())
        }
    }
    Benchmark("PCQ.putDrain64") { benchmark in
        let q = PCQ<UInt>(capacity: 1024)
        var sum: UInt = 0
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            _ = q.put(UInt(i) &+ 1)
            if i & 63 == 63 {
                _ = q.drain(max: 64) { sum &+= $0 }
            }
        }
        _ = q.drain(max: 1024) { sum &+= $0 }
        blackHole(sum)
    }
    Benchmark("LanedPCQ.putGet") { benchmark in
        let q = LanedPCQ<UInt>(laneCapacity: 1024, maxLanes: 2)
        guard var lane = q.register() else { fatalError("no lane") }
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            _ = lane.put(UInt(i) &+ 1)
            blackHole(q.get())
        }
    }
    Benchmark("LanedPCQ.putDrain64") { benchmark in
        let q = LanedPCQ<UInt>(laneCapacity: 1024, maxLanes: 2)
        guard var lane = q.register() else { fatalError("no lane") }
        var sum: UInt = 0
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            _ = lane.put(UInt(i) &+ 1)
            if i & 63 == 63 {
                _ = q.drain(max: 64) { sum &+= $0 }
            }
        }
        _ = q.drain(max: 1024) { sum &+= $0 }
        blackHole(sum)
    }
}

struct BenchKey: RCUHashKey {
    var a: UInt64
    var b: UInt64
    func rcuHash(seed: UInt64) -> UInt64 { rcuHashMix(a, b, seed: seed) }
}

func rcuBenchmarks() {
    for hit in [true, false] {
        Benchmark(hit ? "RCUHashTable.lookupHit" : "RCUHashTable.lookupMiss") { benchmark in
            let table = RCUHashTable<BenchKey, UInt, Memb>(initialBucketCount: 65_536)
            for i in 0..<65_536 { _ = table.insert(BenchKey(a: UInt64(i), b: 7), value: UInt(i)) }
            Memb.registerThread()
            defer { Memb.unregisterThread() }
            var found = 0
            benchmark.startMeasurement()
            Memb.withReadSection {
                for i in benchmark.scaledIterations {
                    let k = BenchKey(a: UInt64(i & 65_535), b: hit ? 7 : 8)
                    if table.lookup(k) != nil { found &+= 1 }
                }
            }
            benchmark.stopMeasurement()
            blackHole(found)
        }
        Benchmark(hit ? "RCUBucketTable.lookupHit" : "RCUBucketTable.lookupMiss") { benchmark in
            let table = RCUBucketTable<BenchKey, UInt, Memb>(capacity: 65_536 + 1024)
            for i in 0..<65_536 { _ = try? table.insert(BenchKey(a: UInt64(i), b: 7), value: UInt(i)) }
            Memb.registerThread()
            defer { Memb.unregisterThread() }
            var found = 0
            benchmark.startMeasurement()
            Memb.withReadSection {
                for i in benchmark.scaledIterations {
                    let k = BenchKey(a: UInt64(i & 65_535), b: hit ? 7 : 8)
                    if table.lookup(k) != nil { found &+= 1 }
                }
            }
            benchmark.stopMeasurement()
            blackHole(found)
        }
    }
}
