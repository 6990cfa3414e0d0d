// pcq-1p1c and pcq-2p1c (BENCHMARKS.md): producers pinned to CPU 0 put
// tagged values 1...N/P, retrying with a pause while the queue is full; a
// consumer pinned to CPU 1 takes them until it has seen N, checking
// exactly-once and per-producer order. Timed from the start barrier to the
// consumer's last item.
//
// Implementations: `pcq` (the project's PCQ of words, batch drain),
// `pcq_pair` (the same queue carrying a 16-byte struct: word vs two-word
// element cost), `mutex_deque`
// (Synchronization.Mutex around a bounded swift-collections Deque) and
// `urcu_wfcq` (liburcu's wait-free concurrent queue with a recycled node
// pool, as the C peers run it).
import CURCU
import DequeModule
import SMPPrimitives
import Synchronization

let pcqWorkloads: [Workload] = [
    Workload(
        name: "pcq-1p1c",
        summary: "one producer (CPU 0) puts 1...N into a 1024-item queue, one consumer (CPU 1) takes them in order",
        impls: pcqImpls(producers: 1)),
    Workload(
        name: "pcq-2p1c",
        summary: "two producers sharing CPU 0 put N/2 tagged values each, one consumer (CPU 1) checks per-producer order",
        impls: pcqImpls(producers: 2)),
]

private func pcqImpls(producers: Int) -> [(name: String, run: Workload.Run)] {
    let workload = producers == 1 ? "pcq-1p1c" : "pcq-2p1c"
    return [
        ("pcq", { runQueueBench(PCQBenchQueue.self, workload: workload, impl: "pcq", producers: producers, options: $0) }),
        ("pcq_pair", { runQueueBench(PCQPairBenchQueue.self, workload: workload, impl: "pcq_pair", producers: producers, options: $0) }),
        ("mutex_deque", { runQueueBench(MutexDequeBenchQueue.self, workload: workload, impl: "mutex_deque", producers: producers, options: $0) }),
        ("urcu_wfcq", { runQueueBench(WFCQBenchQueue.self, workload: workload, impl: "urcu_wfcq", producers: producers, options: $0) }),
    ]
}

/// The queue capacity every implementation gets (BENCHMARKS.md).
private let pcqBenchCapacity = 1024
/// Items the `pcq` consumer takes per drain call (one consumer-position
/// store per call).
private let pcqBenchDrainBatch = 256
/// PAUSEs the consumer of every implementation waits after finding its
/// queue empty (PAUSE takes about 60 ns on these VMs, so about 4 µs).
/// Polling the slot a producer is about to write steals that cache line
/// from it on every poll; backing off lets a batch accumulate. Measured on
/// pcq-1p1c: 1 pause collapses every queue (pcq and mutex_deque alike),
/// 16 to 128 are much faster. The same policy for all implementations.
private let pcqBenchEmptyBackoff = 64
/// Values carry the producer id above this bit and the sequence number below.
private let tagShift: UInt = 48
private let sequenceMask: UInt = (1 << tagShift) - 1

/// What the harness needs from a queue. Implementations are final classes
/// and the harness is generic, so each is specialized with no dynamic
/// dispatch per item.
private protocol PCQBenchSubject: AnyObject, Sendable {
    init(producers: Int)
    /// Producer `producer` (0..<P) offers one value; false if full.
    func tryPut(_ value: UInt, producer: Int) -> Bool
    /// Consumer: takes what is available (some batch), calling `body` per
    /// item in queue order; returns the number taken.
    func take(_ body: (UInt) -> Void) -> Int
    /// Describes the implementation for the JSON `note`.
    static var note: String { get }
    /// The queue's own counters, if it keeps them (the PCQs).
    var pcqStatistics: PCQStatistics? { get }
}

extension PCQBenchSubject {
    var pcqStatistics: PCQStatistics? { nil }
}

/// Cross-thread control words of one run.
private final class BenchControl: Sendable {
    /// Set by the consumer when the cap (or the watchdog) stops the run.
    let stop = Atomic<Bool>(false)
    let producers: [ProducerReport]
    let result = Mutex<ConsumerOutcome?>(nil)

    init(producers: Int) {
        self.producers = (0..<producers).map { _ in ProducerReport() }
    }
}

/// What one producer reports when it stops.
private final class ProducerReport: Sendable {
    let sent = Atomic<Int>(0)
    let done = Atomic<Bool>(false)
}

private struct ConsumerOutcome: Sendable {
    var seconds: Double
    var seen: Int
    var errors: Int
    var received: [Int]
    var truncated: Bool
    var timedOut: Bool
}

private func runQueueBench<Q: PCQBenchSubject>(
    _ type: Q.Type, workload: String, impl: String, producers: Int, options: WorkloadOptions
) -> BenchResult {
    let requested = options.n ?? 20_000_000
    let n = Swift.max(requested - requested % producers, producers)
    let perProducer = n / producers
    let capSeconds = options.capSeconds
    let queue = Q(producers: producers)
    let control = BenchControl(producers: producers)
    let barrier = SpinBarrier(parties: producers + 1)

    let consumer = PinnedThread(cpu: 1, name: "pcq-consumer") {
        let outcome = consume(queue, control: control, barrier: barrier, producers: producers,
                              target: n, capSeconds: capSeconds)
        control.result.withLock { $0 = outcome }
    }
    let producerThreads = (0..<producers).map { p in
        PinnedThread(cpu: 0, name: "pcq-producer" + String(p)) {
            produce(queue, control: control, barrier: barrier, id: p, count: perProducer)
        }
    }
    consumer.join()
    for t in producerThreads { t.join() }
    let outcome = control.result.withLock { $0 }!

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
    return .throughput(workload: workload, impl: impl, ops: outcome.seen, seconds: outcome.seconds,
                       checked: checked, note: notes.joined(separator: "; "), extra: extra)
}

private func produce<Q: PCQBenchSubject>(_ queue: Q, control: BenchControl, barrier: SpinBarrier,
                                    id: Int, count: Int) {
    let tag = UInt(id) << tagShift
    var sent = 0
    barrier.wait()
    outer: for s in 1...count {
        let v = tag | UInt(s)
        while !queue.tryPut(v, producer: id) {
            // Relaxed: the flag carries no data, it only ends the run.
            if control.stop.load(ordering: .relaxed) { break outer }
            curcu_cpu_relax()  // one PAUSE per retry, as BENCHMARKS.md says
        }
        sent = s
        if control.stop.load(ordering: .relaxed) { break }
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
            let p = v &>> tagShift
            if p < np && v & sequenceMask == expect[Int(p)] {
                expect[Int(p)] &+= 1
            } else {
                errors &+= 1
            }
        }
        seen &+= k
        if k == 0 { for _ in 0..<pcqBenchEmptyBackoff { curcu_cpu_relax() } }
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

// MARK: - pcq: the project's queue

private final class PCQBenchQueue: PCQBenchSubject {
    let queue = PCQ<UInt>(capacity: pcqBenchCapacity)
    init(producers: Int) {}

    @inline(__always)
    func tryPut(_ value: UInt, producer: Int) -> Bool { queue.put(value) }

    @inline(__always)
    func take(_ body: (UInt) -> Void) -> Int { queue.drain(max: pcqBenchDrainBatch, body) }

    var pcqStatistics: PCQStatistics? { queue.statistics }

    static var note: String { "SMPPrimitives.PCQ<UInt>, capacity 1024 (exact), consumer drain(max: \(pcqBenchDrainBatch)), \(pcqBenchEmptyBackoff) pauses when empty" }
}

// MARK: - pcq_pair: the same queue, two words per item

/// A two-word item: the tagged value and its complement. The consumer hands
/// the harness the value only if the complement matches, so a value whose
/// two words came from different puts (a torn or stale read) fails the
/// harness's exactly-once / per-producer-order check like a wrong word.
private struct PCQBenchPair: BitwiseCopyable {
    var value: UInt
    var complement: UInt
}

private final class PCQPairBenchQueue: PCQBenchSubject {
    let queue = PCQ<PCQBenchPair>(capacity: pcqBenchCapacity)
    init(producers: Int) {}

    @inline(__always)
    func tryPut(_ value: UInt, producer: Int) -> Bool {
        queue.put(PCQBenchPair(value: value, complement: ~value))
    }

    @inline(__always)
    func take(_ body: (UInt) -> Void) -> Int {
        // A mismatch becomes UInt.max: its producer tag is out of range.
        queue.drain(max: pcqBenchDrainBatch) { body($0.complement == ~$0.value ? $0.value : .max) }
    }

    var pcqStatistics: PCQStatistics? { queue.statistics }

    static var note: String { "SMPPrimitives.PCQ of a 16-byte struct (value, complement; both checked), capacity 1024 (exact), consumer drain(max: \(pcqBenchDrainBatch)), \(pcqBenchEmptyBackoff) pauses when empty" }
}

// MARK: - mutex_deque: a lock around a bounded Deque

private final class MutexDequeBenchQueue: PCQBenchSubject, @unchecked Sendable {
    private let deque: Mutex<Deque<UInt>>
    /// Makes the lock's happens-before edges visible to the thread
    /// sanitizer: a contended `Mutex` is handed over inside the
    /// uninstrumented stdlib/kernel (PI futex), so TSan would report the
    /// Deque accesses as races. One acquiring load and one releasing store
    /// inside the critical section (plain moves on x86, same cache line as
    /// the lock word) restore the edge at no measurable cost.
    private let sanitizerEdge = Atomic<UInt>(0)
    /// Consumer-private copy buffer: items are moved out under the lock and
    /// checked after it. `@unchecked Sendable` because of this pointer; only
    /// the single consumer thread touches it.
    private let batch = UnsafeMutablePointer<UInt>.allocate(capacity: 64)

    init(producers: Int) {
        var d = Deque<UInt>()
        d.reserveCapacity(pcqBenchCapacity)
        deque = Mutex(d)
    }

    deinit { batch.deallocate() }

    @inline(__always)
    func tryPut(_ value: UInt, producer: Int) -> Bool {
        deque.withLock { d in
            _ = sanitizerEdge.load(ordering: .acquiring)
            defer { sanitizerEdge.store(value, ordering: .releasing) }
            if d.count >= pcqBenchCapacity { return false }
            d.append(value)
            return true
        }
    }

    @inline(__always)
    func take(_ body: (UInt) -> Void) -> Int {
        let buffer = batch
        let k = deque.withLock { d -> Int in
            _ = sanitizerEdge.load(ordering: .acquiring)
            defer { sanitizerEdge.store(0, ordering: .releasing) }
            var k = 0
            while k < 64, let v = d.popFirst() {
                buffer[k] = v
                k += 1
            }
            return k
        }
        for i in 0..<k { body(buffer[i]) }
        return k
    }

    static var note: String { "Synchronization.Mutex around a swift-collections Deque bounded to 1024; consumer takes up to 64 per lock, \(pcqBenchEmptyBackoff) pauses when empty" }
}

// MARK: - urcu_wfcq: liburcu wait-free concurrent queue with a node pool

/// liburcu's wfcqueue bounded the way the C peers bound it: each producer
/// owns 1024/P preallocated 64-byte nodes, used round-robin; a node is reused
/// only after the consumer cleared its busy flag, so at most 1024 items are
/// in flight. The consumer splices the whole queue into a private one (no
/// dequeue lock: single consumer) and walks the batch.
///
/// `@unchecked Sendable`: raw memory shared on purpose. Queue links are
/// managed by liburcu; `value` and `busy` are Atomics (release/acquire) so
/// that the hand-off is also visible to the thread sanitizer, which cannot
/// see liburcu's own barriers. Each producer's cursor is touched only by
/// that producer.
private final class WFCQBenchQueue: PCQBenchSubject, @unchecked Sendable {
    private static let nodeSize = 64
    private static let valueOffset = 8  // after the cds_wfcq_node (one pointer)
    private static let busyOffset = 16

    private let control: UnsafeMutableRawPointer
    private let head: UnsafeMutablePointer<__cds_wfcq_head>
    private let tail: UnsafeMutablePointer<cds_wfcq_tail>
    private let localHead: UnsafeMutablePointer<__cds_wfcq_head>
    private let localTail: UnsafeMutablePointer<cds_wfcq_tail>
    /// Per producer: its next node index, alone on a 128-byte line.
    private let cursors: UnsafeMutablePointer<UInt>
    private let pools: [UnsafeMutableRawPointer]
    private let poolSize: Int

    init(producers: Int) {
        control = UnsafeMutableRawPointer.allocate(byteCount: 3 * 128, alignment: 128)
        head = control.bindMemory(to: __cds_wfcq_head.self, capacity: 1)
        tail = (control + 128).bindMemory(to: cds_wfcq_tail.self, capacity: 1)
        localHead = (control + 256).bindMemory(to: __cds_wfcq_head.self, capacity: 1)
        localTail = (control + 256 + 64).bindMemory(to: cds_wfcq_tail.self, capacity: 1)
        __cds_wfcq_init(head, tail)
        __cds_wfcq_init(localHead, localTail)
        cursors = UnsafeMutableRawPointer.allocate(byteCount: producers * 128, alignment: 128)
            .bindMemory(to: UInt.self, capacity: producers * 16)
        cursors.initialize(repeating: 0, count: producers * 16)
        poolSize = pcqBenchCapacity / producers
        pools = (0..<producers).map { _ in
            let pool = UnsafeMutableRawPointer.allocate(byteCount: pcqBenchCapacity / producers * Self.nodeSize,
                                                        alignment: 128)
            for i in 0..<(pcqBenchCapacity / producers) {
                let node = pool + i * Self.nodeSize
                node.bindMemory(to: cds_wfcq_node.self, capacity: 1).initialize(to: cds_wfcq_node(next: nil))
                (node + Self.valueOffset).bindMemory(to: Atomic<UInt>.self, capacity: 1).initialize(to: Atomic(0))
                (node + Self.busyOffset).bindMemory(to: Atomic<UInt>.self, capacity: 1).initialize(to: Atomic(0))
            }
            return pool
        }
    }

    deinit {
        for pool in pools { pool.deallocate() }
        UnsafeMutableRawPointer(cursors).deallocate()
        control.deallocate()
    }

    @inline(__always)
    private static func value(_ node: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt>> {
        (node + valueOffset).assumingMemoryBound(to: Atomic<UInt>.self)
    }

    @inline(__always)
    private static func busy(_ node: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt>> {
        (node + busyOffset).assumingMemoryBound(to: Atomic<UInt>.self)
    }

    @inline(__always)
    func tryPut(_ value: UInt, producer: Int) -> Bool {
        let cursor = cursors + producer * 16
        let node = pools[producer] + Int(cursor.pointee % UInt(poolSize)) * Self.nodeSize
        // Acquiring: pairs with the consumer's releasing clear, after which
        // it no longer reads the node.
        if Self.busy(node).pointee.load(ordering: .acquiring) != 0 { return false }
        cursor.pointee &+= 1
        Self.busy(node).pointee.store(1, ordering: .relaxed)
        // Releasing: for the sanitizer (liburcu's enqueue is a full barrier).
        Self.value(node).pointee.store(value, ordering: .releasing)
        let qn = node.assumingMemoryBound(to: cds_wfcq_node.self)
        cds_wfcq_node_init(qn)
        _ = cds_wfcq_enqueue(cds_wfcq_head_ptr_t(_h: head), tail, qn)
        return true
    }

    @inline(__always)
    func take(_ body: (UInt) -> Void) -> Int {
        let src = cds_wfcq_head_ptr_t(_h: head)
        let dst = cds_wfcq_head_ptr_t(_h: localHead)
        // Single consumer: the splice needs no dequeue lock.
        if __cds_wfcq_splice_blocking(dst, localTail, src, tail) == CDS_WFCQ_RET_SRC_EMPTY { return 0 }
        var k = 0
        var next = __cds_wfcq_first_blocking(dst, localTail)
        while let qn = next {
            // Find the successor before releasing the node: the producer may
            // reuse (and re-link) it as soon as `busy` is clear.
            next = __cds_wfcq_next_blocking(dst, localTail, qn)
            let node = UnsafeMutableRawPointer(qn)
            // Acquiring: pairs with the producer's releasing store.
            let v = Self.value(node).pointee.load(ordering: .acquiring)
            // Releasing: our read of the node happens before its reuse.
            Self.busy(node).pointee.store(0, ordering: .releasing)
            body(v)
            k += 1
        }
        __cds_wfcq_init(localHead, localTail)
        return k
    }

    static var note: String {
        "liburcu wfcqueue, preallocated 64-byte nodes recycled via a busy flag: at most 1024 in flight (1024/P per producer); consumer splices the whole queue and walks the batch, \(pcqBenchEmptyBackoff) pauses when empty"
    }
}
