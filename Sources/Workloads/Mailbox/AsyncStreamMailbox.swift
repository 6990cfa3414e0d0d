// asyncstream: the mailbox workloads on AsyncStreams (unpinned tasks).
import SMPPrimitives
import Synchronization

func pingpongAsyncStream(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? pingpongDefaultRoundTrips
    let samples = RTTSamples(capacity: n)
    let cap = options.capSeconds
    let (errors, secs) = blockingAwait { () async -> (errors: Int, seconds: Double) in
        let (toB, toBCont) = AsyncStream<Int>.makeStream()
        let (toA, toACont) = AsyncStream<Int>.makeStream()
        let echo = Task {
            for await v in toB { toACont.yield(v) }
            toACont.finish()
        }
        var it = toA.makeAsyncIterator()
        let result = await measureRoundTripsAsync(n: n, samples: samples, cap: cap) { i in
            toBCont.yield(i)
            return await it.next()
        }
        toBCont.finish()
        await echo.value
        return result
    }
    return pingpongResult(impl: "asyncstream", samples: samples, planned: n, seconds: secs, errors: errors,
                          note: "two AsyncStreams; an echo task forwards B's stream to A's; unpinned tasks; \(pingpongWarmup) warm-up round trips")
}

func streamAsyncStream(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? streamDefaultMessages
    let cap = options.capSeconds
    // The last multiple of 4,096 the consumer has reached (for the sender's
    // throttle; AsyncStream has no backpressure).
    let progress = Atomic<Int>(0)
    let (stream, cont) = AsyncStream<Int>.makeStream()
    let start = monotonicSeconds()
    // @Sendable: the thread and the consumer task share `progress`.
    let sender = PinnedThread(cpu: 0, name: "stream-send") { @Sendable in
        // Relaxed: a throttle only; the messages travel through the stream.
        _ = sendThrottled(n: n, cap: cap, start: start, progress: { progress.load(ordering: .relaxed) }) {
            cont.yield($0)
        }
        cont.finish()
    }
    let (received, errors) = blockingAwait { () async -> (Int, Int) in
        var order = StreamOrderCheck()
        for await v in stream {
            order.check(v)
            if v & 4095 == 0 { progress.store(v, ordering: .relaxed) }
        }
        return (order.last, order.errors)
    }
    let secs = monotonicSeconds() - start
    sender.join()
    return streamResult(impl: "asyncstream", received: received, planned: n, seconds: secs, errors: errors,
                        note: "sender thread (CPU 0) yields into an unbounded AsyncStream (throttled to ~1M in flight); one consumer task iterates")
}
