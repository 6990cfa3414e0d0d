// actor: the mailbox workloads on Swift actors (the global concurrent
// executor; nothing pinned).
import SMPPrimitives

private actor EchoActor {
    func ping(_ v: Int) -> Int { v }
}

private actor StreamReceiverActor {
    var order = StreamOrderCheck()
    func receive(_ v: Int) { order.check(v) }
    func result() -> (received: Int, errors: Int) { (order.last, order.errors) }
}

func pingpongActor(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? pingpongDefaultRoundTrips
    let samples = RTTSamples(capacity: n)
    let cap = options.capSeconds
    let (errors, secs) = blockingAwait { () async -> (errors: Int, seconds: Double) in
        let echo = EchoActor()
        return await measureRoundTripsAsync(n: n, samples: samples, cap: cap) { await echo.ping($0) }
    }
    return pingpongResult(impl: "actor", samples: samples, planned: n, seconds: secs, errors: errors,
                          note: "a task awaits echo.ping(i) on an actor; both on Swift's global concurrent executor (unpinned; the hop may stay on one thread); \(pingpongWarmup) warm-up round trips")
}

func streamActor(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? streamDefaultMessages
    let cap = options.capSeconds
    let (secs, received, errors) = blockingAwait { () async -> (Double, Int, Int) in
        let recv = StreamReceiverActor()
        let start = monotonicSeconds()
        for i in 1...n {
            await recv.receive(i)
            if i & 65535 == 0 && monotonicSeconds() - start > cap { break }
        }
        let (got, errors) = await recv.result()
        return (monotonicSeconds() - start, got, errors)
    }
    return streamResult(impl: "actor", received: received, planned: n, seconds: secs, errors: errors,
                        note: "a sender task awaits receiver.receive(i) per message on an actor (global concurrent executor, unpinned)")
}
