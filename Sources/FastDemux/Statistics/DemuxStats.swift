import SMPPrimitives

// Hand-off statistics for packet-processing organizations.
//
// (docs/Statistics.md: every statistic, counted or modelled, where it is
// counted and what counting costs.)
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
///
/// Every field is counted at the event it names, except
/// ``modelledAtomicRMWs``, which is the one modelled statistic: RMWs issued
/// inside code that does not report them (glibc's mutexes and condition
/// variables, `KernelContinuation.schedule(after:)`), added per the costs
/// in ``ModelledRMWs``. docs/Statistics.md lists where each is counted.
public struct SyncStats: Sendable {
    /// Atomic read-modify-write instructions (CAS, fetch-add, exchange)
    /// this thread issued in code that reports them, counted where each is
    /// issued: every ticket CAS of a PCQ put (also those that lost to
    /// another producer and were retried, see `PCQPutCounts`), a failed
    /// put's counter increment, try-lock and release CASes that were
    /// really attempted, ready-bit ORs, parker and doorbell exchanges.
    public var atomicRMWs = 0
    /// Atomic RMWs inside code that does not report them, added per the
    /// documented costs in ``ModelledRMWs`` (not counted).
    public var modelledAtomicRMWs = 0
    /// Lock acquisitions (including successful try-locks).
    public var lockAcquisitions = 0
    /// Acquisitions that found the lock held (failed try-lock or a wait).
    public var contendedAcquisitions = 0
    /// Readiness notifications: a socket went from "nothing to read" to
    /// "readable" as seen by its reader (this thread's ready-set OR did the
    /// bit's 0→1 transition, or this thread's ring woke a parked reader or
    /// core thread). This is the "wakeups" of the demux benchmark.
    public var wakeups = 0
    /// Wake-ups of a sleeping or sleeping-bound thread this thread issued:
    /// a condition-variable signal or a `futex_wake` made because the
    /// waiter had announced that it parks (the ring won the exchange).
    public var threadWakeups = 0
    /// Hand-offs to a consumer that was last seen on another CPU than the
    /// producer (both observed with `sched_getcpu`: the producer once per
    /// batch, the consumer once per receive or drain call).
    public var crossCoreHandoffs = 0
    /// Hand-offs that could not be classified because the consumer (or the
    /// producer) had not been observed yet, e.g. before a socket's first
    /// receive call.
    public var unclassifiedHandoffs = 0

    /// Every counter 0.
    public init() {}

    /// Adds another thread's counts.
    public mutating func merge(_ o: SyncStats) {
        atomicRMWs += o.atomicRMWs
        modelledAtomicRMWs += o.modelledAtomicRMWs
        lockAcquisitions += o.lockAcquisitions
        contendedAcquisitions += o.contendedAcquisitions
        wakeups += o.wakeups
        threadWakeups += o.threadWakeups
        crossCoreHandoffs += o.crossCoreHandoffs
        unclassifiedHandoffs += o.unclassifiedHandoffs
    }

    /// Counts the atomic RMWs of PCQ puts (exact, from the queue's own
    /// accounting at each CAS and increment).
    @inlinable
    public mutating func add(_ puts: PCQPutCounts) { atomicRMWs &+= puts.atomicRMWs }

    /// Counts one `ThreadParker.ring()` (SMPPrimitives) call: its exchange (issued on
    /// every call) and, when it woke the waiter, the parker's mutex, the
    /// signal and the modelled RMWs inside them.
    @inlinable
    public mutating func recordParkerRing(woke: Bool) {
        atomicRMWs &+= 1
        guard woke else { return }
        lockAcquisitions &+= 1
        threadWakeups &+= 1
        modelledAtomicRMWs &+= ModelledRMWs.mutexLock &+ ModelledRMWs.conditionSignal &+ ModelledRMWs.mutexUnlock
    }
}

/// The model behind ``SyncStats/modelledAtomicRMWs``: the atomic RMWs of
/// operations whose code does not report them, per the implementation each
/// names (glibc 2.36 NPTL, this package's `KernelContinuation`). Lock
/// acquisitions themselves are counted, only the RMWs inside are modelled.
public enum ModelledRMWs {
    /// `pthread_mutex_lock` / `pthread_mutex_trylock` of a default mutex:
    /// the CAS of `lll_lock` / `lll_trylock`.
    public static let mutexLock = 1
    /// A blocking `pthread_mutex_lock` after a failed try-lock: at least
    /// the exchange of `__lll_lock_wait` (once per futex sleep; modelled
    /// as one).
    public static let mutexContendedWait = 1
    /// `pthread_mutex_unlock`: the exchange of `lll_unlock`.
    public static let mutexUnlock = 1
    /// `pthread_cond_signal` with a waiter in `pthread_cond_wait`: the
    /// condition's internal lock CAS, its release exchange and the
    /// `__g_signals` fetch-add (0 if the waiter had not reached the wait
    /// yet, more when the signal switches groups; modelled as 3).
    public static let conditionSignal = 3
    /// `KernelContinuation.schedule(after:)` that did not coalesce: its
    /// documented cost, the pending-state CAS and the CAS that pushes onto
    /// the executor's hand-off list (retries of that push, and the
    /// executor doorbell's exchange when it parked, are not modelled).
    public static let continuationSchedule = 2
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
