// pcq-1p1c and pcq-2p1c (specified in docs/BenchmarkWorkloads.md):
// producers pinned to CPU 0 put tagged values 1...N/P, retrying with a
// pause while the queue is full; a consumer pinned to CPU 1 takes them
// until it has seen N, checking exactly-once and per-producer order. Timed
// from the start barrier to the consumer's last item.
//
// Files: this one (the workloads, their sizes, what the harness needs
// from a queue), PCQBenchHarness.swift (the producer and consumer loops
// and the check), PCQBenchQueues.swift (the project's queues, `pcq`,
// `pcq_pair` and `pcq_lanes`), MutexDequeBenchQueue.swift and
// WFCQBenchQueue.swift (the in-process baselines).
//
// Implementations: `pcq` (the project's PCQ of words, batch drain),
// `pcq_pair` (the same queue carrying a 16-byte struct: word vs two-word
// element cost), `pcq_lanes` (LanedPCQ: one single-producer lane per
// producer, no order across producers), `mutex_deque` (Synchronization.Mutex around a bounded
// swift-collections Deque) and `urcu_wfcq` (liburcu's wait-free concurrent
// queue with a recycled node pool, as the C peer harness runs it).
import SMPPrimitives

let pcqWorkloads: [Workload] = [
    Workload(
        name: "pcq-1p1c",
        summary: "one producer (CPU 0) puts 1...N into a 1024-item queue, one consumer (CPU 1) takes them in order",
        impls: pcqImpls(producers: 1), projectImpls: 2),
    Workload(
        name: "pcq-2p1c",
        summary: "two producers sharing CPU 0 put N/2 tagged values each, one consumer (CPU 1) checks per-producer order",
        impls: pcqImpls(producers: 2), projectImpls: 2),
]

private func pcqImpls(producers: Int) -> [(name: String, run: Workload.Run)] {
    [
        // The project's two designs first (`bench` runs both by default).
        pcqImpl(PCQBenchQueue.self, producers: producers),
        pcqImpl(LanedPCQBenchQueue.self, producers: producers),
        pcqImpl(PCQPairBenchQueue.self, producers: producers),
        pcqImpl(MutexDequeBenchQueue.self, producers: producers),
        pcqImpl(WFCQBenchQueue.self, producers: producers),
    ]
}

/// One implementation's entry: the harness specialized for queue `Q`.
private func pcqImpl<Q: PCQBenchSubject>(_: Q.Type, producers: Int) -> (name: String, run: Workload.Run) {
    let workload = producers == 1 ? "pcq-1p1c" : "pcq-2p1c"
    return (Q.implName, { runQueueBench(Q.self, workload: workload, producers: producers, options: $0) })
}

/// N when `--n` does not say (the workload's definition).
let pcqBenchDefaultItems = 20_000_000
/// The queue capacity every implementation gets (the workload's definition).
let pcqBenchCapacity = 1024
/// Items the `pcq` consumer takes per drain call (one consumer-position
/// store per call).
let pcqBenchDrainBatch = 256
/// PAUSEs the consumer of every implementation waits after finding its
/// queue empty (PAUSE takes about 60 ns on these VMs, so about 4 µs).
/// Polling the slot a producer is about to write steals that cache line
/// from it on every poll; backing off lets a batch accumulate. Measured on
/// pcq-1p1c: 1 pause collapses every queue (pcq and mutex_deque alike),
/// 16 to 128 are much faster. The same policy for all implementations.
let pcqBenchEmptyBackoff = 64
/// Values carry the producer id above this bit and the sequence number below.
let pcqBenchTagShift: UInt = 48
let pcqBenchSequenceMask: UInt = (1 << pcqBenchTagShift) - 1

/// What the harness needs from a queue. Implementations are final classes
/// and the harness is generic, so each is specialized with no dynamic
/// dispatch per item.
protocol PCQBenchSubject: AnyObject, Sendable {
    /// The `impl` field of the result line.
    static var implName: String { get }
    /// Describes the implementation for the JSON `note`.
    static var note: String { get }
    init(producers: Int)
    /// Producer `id`'s whole run, on its own thread: calls `body` once
    /// with that producer's put (which offers one value and returns false
    /// if full). A queue with per-producer handles registers one here, on
    /// the producer's thread, for the duration of `body`.
    func withProducer(_ id: Int, _ body: (_ put: (UInt) -> Bool) -> Void)
    /// Consumer: takes what is available (some batch), calling `body` per
    /// item in queue order; returns the number taken.
    func take(_ body: (UInt) -> Void) -> Int
    /// The queue's own counters, if it keeps them (the PCQs).
    var pcqStatistics: PCQStatistics? { get }
}

extension PCQBenchSubject {
    var pcqStatistics: PCQStatistics? { nil }
}

/// A queue any producer puts into directly (no per-producer handle).
protocol PCQSharedBenchSubject: PCQBenchSubject {
    /// Producer `producer` (0..<P) offers one value; false if full.
    func tryPut(_ value: UInt, producer: Int) -> Bool
}

extension PCQSharedBenchSubject {
    @inline(__always)
    func withProducer(_ id: Int, _ body: (_ put: (UInt) -> Bool) -> Void) {
        body { tryPut($0, producer: id) }
    }
}
