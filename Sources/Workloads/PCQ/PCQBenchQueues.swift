// The project's queue under the pcq harness: `pcq` (a PCQ of words) and
// `pcq_pair` (the same queue carrying a two-word struct).
import SMPPrimitives

// MARK: - pcq: the project's queue

final class PCQBenchQueue: PCQSharedBenchSubject {
    static var implName: String { "pcq" }
    static var note: String { "SMPPrimitives.PCQ<UInt>, capacity 1024 (exact), consumer drain(max: \(pcqBenchDrainBatch)), \(pcqBenchEmptyBackoff) pauses when empty" }

    let queue = PCQ<UInt>(capacity: pcqBenchCapacity)
    init(producers: Int) {}

    @inline(__always)
    func tryPut(_ value: UInt, producer: Int) -> Bool { queue.put(value) }

    @inline(__always)
    func take(_ body: (UInt) -> Void) -> Int { queue.drain(max: pcqBenchDrainBatch, body) }

    var pcqStatistics: PCQStatistics? { queue.statistics }
}

// MARK: - pcq_pair: the same queue, two words per item

/// A two-word item: the tagged value and its complement. The consumer hands
/// the harness the value only if the complement matches, so a value whose
/// two words came from different puts (a torn or stale read) fails the
/// harness's exactly-once / per-producer-order check like a wrong word.
struct PCQBenchPair: BitwiseCopyable {
    var value: UInt
    var complement: UInt
}

final class PCQPairBenchQueue: PCQSharedBenchSubject {
    static var implName: String { "pcq_pair" }
    static var note: String { "SMPPrimitives.PCQ of a 16-byte struct (value, complement; both checked), capacity 1024 (exact), consumer drain(max: \(pcqBenchDrainBatch)), \(pcqBenchEmptyBackoff) pauses when empty" }

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
}

// MARK: - pcq_lanes: one single-producer lane per producer

/// `LanedPCQ`: each producer thread registers its own lane handle (on its
/// own thread, kept on its stack for the run). The 1024-slot budget is
/// split evenly between the lanes, so the queue holds at most 1024 items
/// in all, as the workload defines.
final class LanedPCQBenchQueue: PCQBenchSubject {
    static var implName: String { "pcq_lanes" }
    static var note: String { "SMPPrimitives.LanedPCQ<UInt>, one lane per producer, 1024 / P items per lane (exact; 1024 in all), consumer drain(max: \(pcqBenchDrainBatch)) round-robin over the lanes, \(pcqBenchEmptyBackoff) pauses when empty" }

    let queue: LanedPCQ<UInt>
    init(producers: Int) {
        queue = LanedPCQ(laneCapacity: pcqBenchCapacity / producers, maxLanes: producers)
    }

    @inline(__always)
    func withProducer(_ id: Int, _ body: (_ put: (UInt) -> Bool) -> Void) {
        guard var lane = queue.register() else { preconditionFailure("more producers than lanes") }
        body { lane.put($0) }
    }

    @inline(__always)
    func take(_ body: (UInt) -> Void) -> Int { queue.drain(max: pcqBenchDrainBatch, body) }

    var pcqStatistics: PCQStatistics? { queue.statistics }
}
