// The pcq workloads' harness, the same for every queue: the producer and
// consumer loops, the cap, and the check (exactly once, per-producer order).
import SMPPrimitives
import Synchronization

/// Cross-thread control words of one run.
private final class BenchControl: Sendable {
    /// Set by the consumer when the cap (or the watchdog) stops the run.
    let stop = Atomic<Bool>(false)
    let producers: [ProducerReport]

    init(producers: Int) {
        self.producers = (0..<producers).map { _ in ProducerReport() }
    }
}

/// What one producer reports when it stops.
private final class ProducerReport: Sendable {
    let sent = Atomic<Int>(0)
    let done = Atomic<Bool>(false)
}

/// What the consumer hands back when it is joined.
private struct ConsumerOutcome: Sendable {
    var seconds: Double
    var seen: Int
    var errors: Int
    var received: [Int]
    var truncated: Bool
    var timedOut: Bool
}

/// Runs one pcq workload (P producers on CPU 0, one consumer on CPU 1)
/// with queue `Q` and checks the result.
func runQueueBench<Q: PCQBenchSubject>(
    _ type: Q.Type, workload: String, producers: Int, options: WorkloadOptions
) -> BenchResult {
    let requested = options.n ?? pcqBenchDefaultItems
    let n = Swift.max(requested - requested % producers, producers)
    let perProducer = n / producers
    let capSeconds = options.capSeconds
    let queue = Q(producers: producers)
    let control = BenchControl(producers: producers)
    let barrier = SpinBarrier(parties: producers + 1)

    let consumer = PinnedThread(cpu: 1, name: "pcq-consumer") {
        consume(queue, control: control, barrier: barrier, producers: producers,
                target: n, capSeconds: capSeconds)
    }
    let producerThreads = (0..<producers).map { p in
        PinnedThread(cpu: 0, name: "pcq-producer" + String(p)) {
            produce(queue, control: control, barrier: barrier, id: p, count: perProducer)
        }
    }
    let outcome = consumer.join()
    for t in producerThreads { t.join() }

    var checked = !outcome.timedOut && outcome.errors == 0
    for p in 0..<producers {
        let want = outcome.truncated ? control.producers[p].sent.load(ordering: .relaxed) : perProducer
        if outcome.received[p] != want { checked = false }
    }
    if !outcome.truncated && outcome.seen != n { checked = false }

    var notes = [Q.note]
    if let pin = pinningNote(requiredCPUs: 2) { notes.append(pin) }
    if outcome.truncated {
        notes.append("stopped at the \(capSeconds) s cap: \(outcome.seen) of \(n) items transferred (all checked)")
    }
    if outcome.timedOut { notes.append("consumer made no progress for 20 s") }
    if outcome.errors > 0 { notes.append("\(outcome.errors) order/exactly-once errors") }
    var extra: [(String, JSONValue)] = [
        ("complete", .bool(!outcome.truncated && !outcome.timedOut)),
        ("producers", .int(producers)),
        ("capacity", .int(pcqBenchCapacity)),
    ]
    if producers > 1 {
        extra.append(("received_per_producer", .array(outcome.received.map { .int($0) })))
    }
    if let s = queue.pcqStatistics {
        extra.append(("failed_puts", .int(s.failedPuts)))
        extra.append(("high_water", .int(s.highWater)))
    }
    return .throughput(workload: workload, impl: Q.implName, ops: outcome.seen, seconds: outcome.seconds,
                       checked: checked, note: notes.joined(separator: "; "), extra: extra)
}

private func produce<Q: PCQBenchSubject>(_ queue: Q, control: BenchControl, barrier: SpinBarrier,
                                         id: Int, count: Int) {
    let tag = UInt(id) << pcqBenchTagShift
    var sent = 0
    queue.withProducer(id) { tryPut in
        barrier.wait()
        outer: for s in 1...count {
            let v = tag | UInt(s)
            while !tryPut(v) {
                // Relaxed: the flag carries no data, it only ends the run.
                if control.stop.load(ordering: .relaxed) { break outer }
                spinLoopHint()  // one PAUSE per retry, as the workload defines
            }
            sent = s
            if control.stop.load(ordering: .relaxed) { break }
        }
    }
    control.producers[id].sent.store(sent, ordering: .relaxed)
    // Releasing: the consumer reads `sent` after acquiring `done`.
    control.producers[id].done.store(true, ordering: .releasing)
}

private func consume<Q: PCQBenchSubject>(_ queue: Q, control: BenchControl, barrier: SpinBarrier,
                                         producers: Int, target n: Int, capSeconds: Double) -> ConsumerOutcome {
    let expect = UnsafeMutablePointer<UInt>.allocate(capacity: producers)
    expect.initialize(repeating: 1, count: producers)
    defer { expect.deallocate() }
    let np = UInt(producers)
    var errors = 0
    var seen = 0
    var target = n
    var truncated = false
    var timedOut = false
    var loops = 0
    barrier.wait()
    let t0 = monotonicSeconds()
    var progressSeen = 0
    var progressTime = t0
    while seen < target {
        let k = queue.take { v in
            let p = v &>> pcqBenchTagShift
            if p < np && v & pcqBenchSequenceMask == expect[Int(p)] {
                expect[Int(p)] &+= 1
            } else {
                errors &+= 1
            }
        }
        seen &+= k
        if k == 0 { for _ in 0..<pcqBenchEmptyBackoff { spinLoopHint() } }
        loops &+= 1
        if loops & 4095 == 0 {
            let now = monotonicSeconds()
            if !truncated && now - t0 > capSeconds {
                truncated = true
                control.stop.store(true, ordering: .relaxed)
            }
            if control.stop.load(ordering: .relaxed) {
                // Once every producer has stopped, the target is what they sent.
                var all = true
                var total = 0
                for p in 0..<producers {
                    // Acquiring: pairs with the producer's releasing store.
                    all = all && control.producers[p].done.load(ordering: .acquiring)
                    total += control.producers[p].sent.load(ordering: .relaxed)
                }
                if all { target = total }
            }
            if seen != progressSeen {
                progressSeen = seen
                progressTime = now
            } else if now - progressTime > 20 {
                timedOut = true
                control.stop.store(true, ordering: .relaxed)
                break
            }
        }
    }
    let seconds = monotonicSeconds() - t0
    return ConsumerOutcome(seconds: seconds, seen: seen, errors: errors,
                           received: (0..<producers).map { Int(expect[$0]) - 1 },
                           truncated: truncated, timedOut: timedOut)
}
