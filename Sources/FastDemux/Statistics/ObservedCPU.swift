import Synchronization
import SMPPrimitives

// Where the two ends of a hand-off really ran, for the cross-core hand-off
// count. A configured CPU number says nothing when threads are not pinned
// (and nothing about a pinned thread whose affinity someone else changed),
// so the consumer publishes the CPU it observes with sched_getcpu() and the
// producer compares it with its own, observed once per batch.

/// The CPU a consumer (a socket's reader, a core thread) was last seen
/// running on, published for producers to classify their hand-offs as
/// cross-core or not.
///
/// Concurrency contract: one consumer thread at a time calls
/// ``noteCurrentCPU()``; any thread reads ``cpu``. Both are relaxed: the
/// value is a statistic, it orders nothing. The consumer stores only when
/// its CPU changed, so the word's cache line stays shared between the
/// consumer and the producers that read it (no line transfer per batch).
public struct ObservedCPU: ~Copyable, Sendable {
    @usableFromInline let word = Atomic<Int>(-1)

    /// Not observed yet (``cpu`` is -1).
    public init() {}

    /// The consumer: records the CPU it runs on now. One `sched_getcpu`
    /// (a few nanoseconds) and one relaxed load; a store only on change.
    @inlinable
    public func noteCurrentCPU() {
        let c = currentCPU()
        if word.load(ordering: .relaxed) != c { word.store(c, ordering: .relaxed) }
    }

    /// The CPU last noted, or -1 before the first note. Any thread; a
    /// relaxed load.
    @inlinable
    public var cpu: Int { word.load(ordering: .relaxed) }
}

/// One ``ObservedCPU`` per consumer thread (e.g. per core thread), each in
/// its own 128-byte block so that consumers noting their CPU do not share
/// a line. Immutable after `init`: any thread.
package final class ObservedCPUs: Sendable {
    // Sendable: `base` is owned memory holding only atomics.
    private nonisolated(unsafe) let base: UnsafeMutableRawPointer
    package let count: Int
    static let stride = 128

    package init(count: Int) {
        self.count = count
        base = .allocate(byteCount: max(1, count) * Self.stride, alignment: Self.stride)
        for k in 0..<count { slot(k).initialize(to: ObservedCPU()) }
    }

    deinit {
        for k in 0..<count { slot(k).deinitialize(count: 1) }
        base.deallocate()
    }

    private func slot(_ k: Int) -> UnsafeMutablePointer<ObservedCPU> {
        (base + k * Self.stride).bindMemory(to: ObservedCPU.self, capacity: 1)
    }

    /// Consumer `k` (its own thread only): records its current CPU.
    package func noteCurrentCPU(_ k: Int) { slot(k).pointee.noteCurrentCPU() }

    /// The CPU consumer `k` was last seen on, or -1. Any thread.
    package subscript(k: Int) -> Int { slot(k).pointee.cpu }
}

/// The producer's side of the cross-core hand-off count: its own CPU,
/// observed once per batch, compared with each hand-off's consumer CPU.
/// A plain value owned by the producer thread.
@usableFromInline
package struct HandoffCPUClassifier {
    /// The producer's CPU as last sampled (-1: not yet).
    @usableFromInline package var producerCPU = -1

    package init() {}

    /// Samples the producer's CPU (once per batch: the thread may migrate
    /// within a batch, and a per-item `sched_getcpu` would cost more than
    /// the hand-off it classifies).
    @inlinable
    package mutating func sample() { producerCPU = currentCPU() }

    /// Counts one hand-off to a consumer last seen on `consumerCPU`: a
    /// cross-core hand-off when both CPUs are known and differ, an
    /// unclassified one when either is unknown.
    @inlinable
    package func classify(consumerCPU: Int, into sync: inout SyncStats) {
        if consumerCPU < 0 || producerCPU < 0 {
            sync.unclassifiedHandoffs &+= 1
        } else if consumerCPU != producerCPU {
            sync.crossCoreHandoffs &+= 1
        }
    }
}
