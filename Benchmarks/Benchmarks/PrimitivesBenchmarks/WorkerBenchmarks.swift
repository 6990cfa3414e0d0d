import Benchmark
import SMPPrimitives

/// Deferred work and mailboxes: the schedule, cancel and send/receive paths.
func workerBenchmarks() {
    // No ARC counts here: with the Swift 6.3 runtime on Linux the
    // framework's retain/release hooks crash the process once an executor
    // thread runs (ordo-one/benchmark issue 349); mallocs are counted.
    let threaded = Benchmark.Configuration(metrics: [.wallClock, .mallocCountTotal],
                                           thresholds: [.mallocCountTotal: .init(absolute: [.p90: 0])])
    // The coalesced path: the continuation is already pending (its delay is
    // long), so every schedule is a fence and a load.
    Benchmark("KernelContinuation.scheduleCoalesced", configuration: threaded) { benchmark in
        let group = CoreExecutorGroup(count: 1)
        defer { group.shutdown(runPending: false) }
        let c = KernelContinuation(on: group.executor(for: 0)) {}
        c.schedule(after: .seconds(60))
        waitUntilRunning(group)
        var coalesced = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            if !c.schedule(after: .seconds(60)) { coalesced &+= 1 }
        }
        benchmark.stopMeasurement()
        blackHole(coalesced)
    }
    // A full pending period from another thread: schedule (idle -> pending,
    // hand-off to the owner) then cancel (pending -> idle).
    Benchmark("KernelContinuation.scheduleCancel", configuration: threaded) { benchmark in
        let group = CoreExecutorGroup(count: 1)
        defer { group.shutdown(runPending: false) }
        let c = KernelContinuation(on: group.executor(for: 0)) {}
        waitUntilRunning(group)
        var n = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            if c.schedule(after: .seconds(60)) { n &+= 1 }
            if c.cancel() { n &+= 1 }
        }
        benchmark.stopMeasurement()
        blackHole(n)
    }
    // One sender, one receiver on the same thread: post, then receive the
    // batch every 64 messages (no cross-core traffic: the per-message cost).
    Benchmark("Mailbox.postReceive64") { benchmark in
        let mesh = MailboxMesh(cores: 2, capacity: 1024)
        var sum: UInt = 0
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            _ = mesh.post(MailboxMessage(UInt(i)), from: 0, to: 1)
            if i & 63 == 63 {
                _ = mesh.receive(at: 1, max: 64) { _, m in sum &+= m.a }
            }
        }
        _ = mesh.receive(at: 1, max: 1024) { _, m in sum &+= m.a }
        benchmark.stopMeasurement()
        blackHole(sum)
    }
}

/// A round trip to the executor: its thread has started (thread start-up
/// allocates: name, RCU registration) before the measured region begins.
/// The benchmark closure runs once per sample, so without this a new
/// executor's start-up lands in some samples' measurements.
private func waitUntilRunning(_ group: CoreExecutorGroup) {
    _ = group.call(on: 0) { 0 }
}
