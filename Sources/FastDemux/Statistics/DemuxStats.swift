// Hand-off statistics for packet-processing organizations.
//
// The fast path (this module) and the MsgP / ConnP-T / ConnP-L
// organizations (DemuxLab) all move packets through "hand-off points" (a
// queue between two threads or two stages). To compare them we count, per
// delivered packet, what each organization pays: queue operations, synchronization points
// (atomic read-modify-writes, lock acquisitions, contended acquisitions),
// wake-ups and cross-core hand-offs, plus the queue depth seen at each
// hand-off point.
//
// Every counter here is a plain integer owned by ONE thread (an input thread
// or a consumer): recording costs an add to a line that thread already owns,
// never a shared write. Reports merge the per-thread records after the
// threads have stopped (or accept a racy snapshot).

/// Why a packet did not reach a socket's receive queue (or left it without
/// being delivered). Every packet offered to the demultiplexer is either
/// delivered or counted under exactly one reason, so
/// `offered == delivered + Σ dropped[reason] (+ still queued)`.
public enum DemuxDropReason: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// The frame could not be parsed (bad length, version, header, ...) or
    /// breaks a receive rule Linux enforces (martian address, bad IPv4
    /// header checksum, TCP in a link-layer broadcast, ...).
    case malformed
    /// Parsed, but a protocol or feature this demultiplexer does not handle
    /// (ARP, ICMP, fragments, multicast and broadcast destinations, frames
    /// for another host or to be forwarded, ...).
    case unsupported
    /// No connected, bound or listening socket matches.
    case noSocket
    /// The socket's receive queue was full.
    case queueFull
    /// The socket was closed: either seen closed at lookup time, or the
    /// packet was still queued when the socket was torn down.
    case socketClosed

    /// The demux-level reason a parser drop is counted under.
    @inlinable
    public init(_ parseReason: DropReason) {
        switch parseReason {
        case .unsupportedLinkType, .notIP, .notTCPUDP, .ipsec, .ipv4Fragment, .ipv6Fragment,
             .broadcastDestination, .multicastDestination, .otherHost, .ipv6RoutingHeader:
            self = .unsupported
        default: self = .malformed
        }
    }

    /// The snake_case name used in statistics output and JSON (`queue_full`,
    /// ...).
    public var description: String {
        switch self {
        case .malformed: return "malformed"
        case .unsupported: return "unsupported"
        case .noSocket: return "no_socket"
        case .queueFull: return "queue_full"
        case .socketClosed: return "socket_closed"
        }
    }
}

/// Drop counters indexed by ``DemuxDropReason`` (fixed inline storage, no
/// heap). A value written by one thread; merge copies after the writers
/// stopped.
public struct DropCounters: Sendable, Equatable {
    @usableFromInline var counts = InlineArray<8, Int>(repeating: 0)

    /// No drops counted.
    public init() {}

    /// Counts `count` drops for `reason` (a plain add).
    @inlinable
    public mutating func record(_ reason: DemuxDropReason, count: Int = 1) {
        counts[reason.rawValue] &+= count
    }

    /// The drops counted for `reason`.
    @inlinable
    public subscript(reason: DemuxDropReason) -> Int { counts[reason.rawValue] }

    /// Drops of every reason (the slots past the last reason stay 0).
    public var total: Int { counts.sum }

    /// Adds another thread's counts.
    public mutating func merge(_ other: DropCounters) { counts.add(other.counts) }

    /// Equal when every reason has the same count.
    public static func == (a: DropCounters, b: DropCounters) -> Bool {
        DemuxDropReason.allCases.allSatisfy { a[$0] == b[$0] }
    }

    /// `(reason name, count)` pairs in declaration order.
    public var byReason: [(String, Int)] { DemuxDropReason.allCases.map { ($0.description, self[$0]) } }
}

/// A histogram with power-of-two buckets: bucket 0 counts the value 0,
/// bucket k (k ≥ 1) counts values in `[2^(k-1), 2^k)`. A value written by
/// one thread (inline storage, no heap).
public struct Log2Histogram: Sendable {
    /// Buckets: the value 0, then one per power of two up to 2^31 and above.
    public static let bucketCount = 33
    @usableFromInline var buckets = InlineArray<33, Int>(repeating: 0)

    /// An empty histogram.
    public init() {}

    /// The bucket `value` is counted in.
    @inlinable
    public static func bucket(for value: Int) -> Int {
        value <= 0 ? 0 : min(Int.bitWidth - value.leadingZeroBitCount, bucketCount - 1)
    }

    /// Counts one value (a plain add).
    @inlinable
    public mutating func record(_ value: Int) { buckets[Self.bucket(for: value)] &+= 1 }

    /// The count of bucket `bucket` (0 ..< ``bucketCount``).
    public subscript(bucket: Int) -> Int { buckets[bucket] }

    /// Values recorded.
    public var total: Int { buckets.sum }

    /// Adds another thread's histogram.
    public mutating func merge(_ other: Log2Histogram) { buckets.add(other.buckets) }

    /// Non-empty buckets as `(lower bound, count)`; the lower bound of bucket
    /// k ≥ 1 is 2^(k-1).
    public var nonEmptyBuckets: [(lowerBound: Int, count: Int)] {
        (0..<Self.bucketCount).compactMap { i in
            buckets[i] == 0 ? nil : (i == 0 ? 0 : 1 << (i - 1), buckets[i])
        }
    }
}

/// What one thread saw at one hand-off point (e.g. "socket receive queue").
///
/// Recording is plain arithmetic on the owning thread's copy; merge copies
/// after their threads stopped.
public struct HandoffPointStats: Sendable {
    /// Queue depth observed after a put (sampled; see the owner's docs for
    /// the sampling interval).
    public var depth = Log2Histogram()
    /// Highest depth observed (among the samples).
    public var highWater = 0
    /// Queue operations issued by this thread (puts, including failed puts,
    /// or gets/drains for a consumer).
    public var queueOps = 0
    /// Sizes of the batches moved through this point in one go (consecutive
    /// puts to one queue within a burst, or items per drain).
    public var batchSizes = Log2Histogram()

    /// No samples, no operations.
    public init() {}

    /// Records a depth sample.
    @inlinable
    public mutating func recordDepth(_ d: Int) {
        depth.record(d)
        if d > highWater { highWater = d }
    }

    /// Adds another thread's record (high water: the larger).
    public mutating func merge(_ o: HandoffPointStats) {
        depth.merge(o.depth)
        highWater = max(highWater, o.highWater)
        queueOps += o.queueOps
        batchSizes.merge(o.batchSizes)
    }
}

/// Which puts of a thread sample their queue's depth: every `interval`-th
/// (0: none). Reading a queue's depth touches its consumer's index line, so
/// it is sampled rather than read per put. Owned by one thread.
@usableFromInline
package struct DepthSampler {
    @usableFromInline let interval: Int
    @usableFromInline var remaining: Int

    package init(interval: Int) {
        self.interval = interval
        remaining = max(1, interval)
    }

    /// Counts one put; true when its depth is to be recorded.
    @inlinable
    @inline(__always)
    package mutating func isDue() -> Bool {
        guard interval > 0 else { return false }
        remaining &-= 1
        guard remaining == 0 else { return false }
        remaining = interval
        return true
    }
}

/// Synchronization points paid by one thread (plain counters that thread
/// owns; merge copies after their threads stopped).
public struct SyncStats: Sendable {
    /// Atomic read-modify-write instructions issued (CAS, fetch-add, xchg),
    /// including those inside queue operations (counted per the queue's
    /// documented cost: one per put).
    public var atomicRMWs = 0
    /// Lock acquisitions (including successful try-locks).
    public var lockAcquisitions = 0
    /// Acquisitions that found the lock held (failed try-lock or a wait).
    public var contendedAcquisitions = 0
    /// Readiness notifications: a socket went from "nothing to read" to
    /// "readable" as seen by its reader (a ready-set bit 0→1 or a parked
    /// reader rung). This is the "wakeups" of the demux benchmark.
    public var wakeups = 0
    /// Sleeping threads actually woken (a condition-variable signal).
    public var threadWakeups = 0
    /// Packets handed to a queue read by a thread on another CPU.
    public var crossCoreHandoffs = 0

    /// Every counter 0.
    public init() {}

    /// Adds another thread's counts.
    public mutating func merge(_ o: SyncStats) {
        atomicRMWs += o.atomicRMWs
        lockAcquisitions += o.lockAcquisitions
        contendedAcquisitions += o.contendedAcquisitions
        wakeups += o.wakeups
        threadWakeups += o.threadWakeups
        crossCoreHandoffs += o.crossCoreHandoffs
    }
}

/// The statistics of one demultiplexer input thread (or the merged total).
///
/// Concurrency contract: the delivering thread (a ``DemuxInput``, or an
/// organization's thread through the shared delivery step) owns its
/// `DemuxStats` and is the only writer; read it from another thread only
/// after that thread stopped (e.g. after `join`), or accept a torn snapshot.
public struct DemuxStats: Sendable {
    /// Packets offered to the demultiplexer (parsed or not).
    public var offered = 0
    /// Packets put on a socket receive queue.
    public var enqueued = 0
    /// Drops by reason recorded on the input path.
    public var drops = DropCounters()
    /// The socket receive queue hand-off point.
    public var socketQueue = HandoffPointStats()
    /// Synchronization points on the input path.
    public var sync = SyncStats()
    /// TCP: ACKs emitted from the fast path after a successful try-lock.
    public var immediateACKs = 0
    /// TCP: segments left to the lock holder (backlogged) because the
    /// try-lock failed twice; the holder or the worker ACKs them.
    public var deferredACKs = 0
    /// TCP: segments whose backlog was full (their sequence space is lost
    /// to the receive state; counted, the packet is still queued).
    public var tcpBacklogOverflows = 0
    /// TCP: segments that were not the next expected sequence number.
    public var outOfSequence = 0
    /// Read sections entered (one per burst).
    public var readSections = 0
    /// Worker continuation schedules issued (after coalescing).
    public var workerSchedules = 0
    /// Parser drops by ``DropReason`` (indexed by raw value; room for 64
    /// reasons, ``DropReason/count`` is below); their sum is included in
    /// `drops[.malformed] + drops[.unsupported]`.
    public var parseDrops = InlineArray<64, Int>(repeating: 0)

    /// Every counter 0 (the merge of no threads).
    public init() {}

    /// Non-zero parser drop counts as `(reason name, count)`.
    public var parseDropsByReason: [(String, Int)] {
        DropReason.allCases.compactMap { r in
            let n = parseDrops[Int(r.rawValue)]
            return n == 0 ? nil : (r.name, n)
        }
    }

    /// Adds another thread's record (after that thread stopped).
    public mutating func merge(_ o: DemuxStats) {
        offered += o.offered
        enqueued += o.enqueued
        drops.merge(o.drops)
        socketQueue.merge(o.socketQueue)
        sync.merge(o.sync)
        immediateACKs += o.immediateACKs
        deferredACKs += o.deferredACKs
        tcpBacklogOverflows += o.tcpBacklogOverflows
        outOfSequence += o.outOfSequence
        readSections += o.readSections
        workerSchedules += o.workerSchedules
        parseDrops.add(o.parseDrops)
    }

    /// `value / delivered`, 0 when nothing was delivered.
    public static func perDelivered(_ value: Int, delivered: Int) -> Double {
        delivered > 0 ? Double(value) / Double(delivered) : 0
    }
}

extension InlineArray where Element == Int {
    /// The sum of the elements (the counters' totals).
    var sum: Int {
        var t = 0
        for i in indices { t &+= self[i] }
        return t
    }

    /// Adds `other` element by element (the counters' merges).
    mutating func add(_ other: Self) {
        for i in indices { self[i] &+= other[i] }
    }
}
