// The project's queue under the pcq harness: `pcq` (a PCQ of words) and
// `pcq_pair` (the same queue carrying a two-word struct).
import SMPPrimitives

// MARK: - pcq: the project's queue

final class PCQBenchQueue: PCQBenchSubject {
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

final class PCQPairBenchQueue: PCQBenchSubject {
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
