import Synchronization

/// A bounded, lock-free, multi-producer / single-consumer queue of plain
/// values made of one single-producer ring per producer (a *lane*): puts
/// never wait for, or are held up by, another producer, and there is no
/// order across producers.
///
/// `Element` is any `BitwiseCopyable` type, moved as bits exactly as in
/// ``PCQ`` (see "The unsafe form, and the safe one" there: the queue never
/// retains, releases or dereferences an element, and items still queued
/// when the queue is deinitialized are dropped as bits).
///
/// ## Lanes and producer handles
///
/// A producer first calls ``register()``, which hands it a ``Producer``: a
/// `~Copyable` handle that owns one lane until it is dropped. Only the
/// handle can put, and a `~Copyable` value has one owner at a time, so the
/// type system enforces that each lane has a single producer. The handle
/// is `Sendable` and may be moved to another thread (moving it is a
/// hand-off: whatever passes it carries a happens-before edge).
///
/// The number of lanes, ``maxLanes``, is fixed at init. ``register()``
/// returns nil while every lane is owned. Dropping a handle releases its
/// lane at once; the items it put stay queued and are delivered in order,
/// and the next producer that registers may get the same lane: its items
/// follow the earlier owner's in that lane.
///
/// ## Semantics
///
/// - ``Producer/put(_:)`` never blocks and never waits for another
///   producer. It returns false only when the handle's own lane is full:
///   at an instant during the call, ``laneCapacity`` items had been put into
///   that lane and not yet taken. Other lanes may have room: the bound is
///   per lane.
/// - ``capacity`` is `maxLanes * laneCapacity`: the most items the queue
///   can hold, reached only when every lane is full. Each lane's bound is
///   exact: starting empty, `laneCapacity` puts through one handle
///   succeed and the next fails.
/// - Items from one handle (one producer) are taken in the order it put
///   them (and, for a lane reused after a drop, after the items of the
///   lane's earlier owners).
/// - There is **no global order** across producers. ``PCQ`` takes items
///   in the order their puts reserved slots (a global ticket); this queue
///   takes them lane by lane, round-robin. If producer A's put returns
///   before producer B's put starts, B's item may still be taken first.
/// - A producer preempted in the middle of a put delays only its own
///   item (which is not in the queue until the put returns). The consumer
///   keeps taking the other lanes' items; nothing is skipped, reordered
///   within a lane, duplicated or lost.
/// - ``get()`` and ``drain(max:_:)`` are for one consumer thread at a
///   time, with a happens-before edge between successive consumers (a
///   lock, a thread hand-off), as for ``PCQ`` (see "The single-consumer
///   rule" there for why this is documented rather than typed).
///
/// ## Choosing between PCQ and LanedPCQ
///
/// Pick ``PCQ`` when any thread must be able to put without registering
/// (producers that come and go, or more of them than you can bound), when
/// items from different producers must come out in the order they went in,
/// or when one shared bound is what you want (a burst from one producer may
/// use the whole capacity). Its put is one compare-and-swap on a line all
/// producers share, and a producer preempted between reserving and
/// publishing holds the consumer up until it runs again.
///
/// Pick `LanedPCQ` for a known, small set of long-lived producers (one per
/// thread or per core) where only per-producer order matters: a put is
/// plain stores (no read-modify-write, no line shared with another
/// producer), a preempted producer delays only its own lane, and a
/// producer that overruns fills only its own lane. The costs: registration,
/// memory for every lane (`maxLanes * laneCapacity` slots), and a consumer
/// that visits the lanes in use on each call.
///
/// ## Design
///
/// Each lane is a Lamport single-producer / single-consumer ring with
/// free-running indices: `tail` (written by the lane's producer only) and
/// `head` (written by the consumer only), each in its own 128-byte region
/// (Intel's adjacent-line prefetcher pairs 64-byte lines). The slot of
/// index `i` is `i mod 2^k` for the smallest `2^k >= laneCapacity`; the
/// lane is full when `tail - head == laneCapacity`, so the bound is exact
/// for any capacity, not only powers of two.
///
/// The producer keeps its own copy of `tail` and a cached copy of `head` in
/// the handle (its own memory, not the lane's), and reads the consumer's
/// `head` only when the cached copy says the lane is full. The consumer
/// keeps a cached copy of each lane's `tail` and reads the producer's
/// `tail` only when its cached backlog is smaller than what it was asked
/// for. The consumer publishes a lane's `head` once per lane per
/// ``drain(max:_:)`` call (batched publication); the producer publishes
/// `tail` on each put, which is a plain store to a line it already owns
/// unless the consumer read it since.
///
/// ## Memory ordering
///
/// In the C++ memory model (which Swift's `Atomic` follows), with plain,
/// non-atomic copies of the values, for elements of one word or several:
/// - Producer to consumer: the producer's copy into slot `t` is sequenced
///   before its releasing store of `tail = t + 1`. The consumer's acquiring
///   load of `tail` that reads that value (or a later one: the stores of a
///   lane's `tail` are made by one thread at a time, in increasing order, so
///   a later value is written after the earlier one and its release covers
///   every earlier slot) synchronizes with the store, so the copy happens
///   before the consumer's read of the slot.
/// - Consumer to producer: the consumer's reads of slots below `h` are
///   sequenced before its releasing store of `head = h`; a producer reuses
///   one of those slots only after an acquiring load of `head` that read `h`
///   or later, so its overwrite happens after the consumer's read.
/// - Lane hand-off: dropping a handle stores the lane's owner flag with
///   release; ``register()`` takes it with an acquiring compare-and-swap, so
///   everything the earlier owner did (slot writes, `tail` stores) happens
///   before the new owner's first put, and its relaxed load of `tail`
///   returns the last value stored.
/// No slot is ever accessed by two threads without one of these edges
/// between them: there is no data race, hence nothing to tear. The thread
/// sanitizer checks these edges in the stress tests.
///
/// ## Counters
///
/// ``statistics`` costs nothing on the fast paths: `puts` is the sum of the
/// lanes' `tail`s, `gets` the sum of their `head`s, `failedPuts` is a
/// per-lane counter kept by the lane's owner on the failure path (a plain
/// load and store: one writer at a time), and `highWater` is the deepest
/// *lane* observed (sampled by producers when their cached `head` says
/// full, and by the consumer as the batch it found in a lane).
///
/// ## Polling
///
/// As for ``PCQ``: when ``drain(max:_:)`` returns 0, back off (tens of
/// `PAUSE`s) or block before trying again; polling a lane in a tight loop
/// takes its `tail` line away from the producer on every poll.
///
/// Cost: a put is the value copy into the lane's ring and one store of
/// `tail` (plus one load of the consumer's `head` when the lane looks full);
/// a drain visits each lane in use once: a load of its `tail` if the
/// cached backlog is short, the value copies and one store of its `head`.
/// No allocation, no atomic read-modify-write and no reference counting per
/// item.
///
/// `@unchecked Sendable`: the queue's state is raw memory shared between
/// threads on purpose. Every shared index is an `Atomic`; every plain value
/// slot is ordered by the release/acquire pairs above; one producer per
/// lane is enforced by the `~Copyable` handle and its owner flag, and the
/// single-consumer rule is the caller's contract.
public final class LanedPCQ<Element: BitwiseCopyable>: @unchecked Sendable {
    /// A lane's producer-side words, alone in their 128-byte region.
    @usableFromInline
    struct LaneProducerSide: ~Copyable {
        /// Items ever put into the lane (free-running); written by the
        /// owner only, read by the consumer.
        @usableFromInline let tail: Atomic<UInt>
        /// True while a ``Producer`` owns the lane.
        @usableFromInline let owned: Atomic<Bool>
        /// Failed puts into this lane; written by the owner only (load and
        /// store, no RMW: one writer at a time).
        @usableFromInline let failedPuts: Atomic<Int>
        /// Deepest lane the owners saw when refreshing their cached head.
        @usableFromInline let highWater: Atomic<Int>

        init() {
            tail = Atomic(0)
            owned = Atomic(false)
            failedPuts = Atomic(0)
            highWater = Atomic(0)
        }
    }

    /// A lane's consumer-side words, alone in their 128-byte region. Only
    /// the consumer writes them.
    @usableFromInline
    struct LaneConsumerSide: ~Copyable {
        /// Items ever taken from the lane (free-running); read by the
        /// producer when its lane looks full.
        @usableFromInline let head: Atomic<UInt>
        /// The consumer's copy of the lane's `tail` (consumer only).
        @usableFromInline let cachedTail: Atomic<UInt>
        /// Largest batch the consumer found ready in this lane.
        @usableFromInline let highWater: Atomic<Int>

        init() {
            head = Atomic(0)
            cachedTail = Atomic(0)
            highWater = Atomic(0)
        }
    }

    /// Queue-wide words: the lanes ever registered (written by
    /// ``register()``), and the consumer's round-robin position.
    @usableFromInline
    struct Shared: ~Copyable {
        /// One more than the highest lane ever registered: the consumer
        /// visits lanes `0..<lanesInUse`. Only grows.
        @usableFromInline let lanesInUse: Atomic<Int>
        /// The lane the next drain starts with (consumer only).
        @usableFromInline let cursor: Atomic<Int>

        init() {
            lanesInUse = Atomic(0)
            cursor = Atomic(0)
        }
    }

    /// The exact number of items one lane can hold (immutable: any thread).
    public let laneCapacity: Int
    /// The number of lanes, hence of producers registered at once
    /// (immutable: any thread).
    public let maxLanes: Int
    /// Slots per lane minus one (slots = laneCapacity rounded up to 2^k).
    @usableFromInline let mask: UInt
    /// `LaneProducerSide` then `LaneConsumerSide` for each lane, each in
    /// its own 128-byte region, followed by `Shared`.
    @usableFromInline let regions: UnsafeMutableRawPointer
    /// The lanes' rings, `ringStride` elements apart.
    @usableFromInline let values: UnsafeMutablePointer<Element>
    /// Elements from one lane's ring to the next: the slot count rounded up
    /// so that each ring starts on its own 128-byte region.
    @usableFromInline let ringStride: Int

    /// Size of an index region: two 64-byte lines (adjacent-line prefetch).
    @usableFromInline static var regionSize: Int { 128 }

    /// Creates an empty queue of `maxLanes` lanes, each holding exactly
    /// `laneCapacity` items.
    ///
    /// Memory: `maxLanes` times (`laneCapacity` rounded up to a power of
    /// two, times `MemoryLayout<Element>.stride`, plus 256 bytes of
    /// indices). Allocation happens here only. Any thread; the queue may
    /// then be shared with its producers and its one consumer.
    ///
    /// - Precondition: `1 <= laneCapacity <= 2^30`, `1 <= maxLanes <= 4096`.
    public init(laneCapacity: Int, maxLanes: Int) {
        precondition(laneCapacity >= 1 && laneCapacity <= 1 << 30, "LanedPCQ laneCapacity must be in 1...2^30")
        precondition(maxLanes >= 1 && maxLanes <= 4096, "LanedPCQ maxLanes must be in 1...4096")
        var slots = 1
        while slots < laneCapacity { slots <<= 1 }
        self.laneCapacity = laneCapacity
        self.maxLanes = maxLanes
        mask = UInt(slots - 1)

        let region = Self.regionSize
        regions = UnsafeMutableRawPointer.allocate(
            byteCount: (2 * maxLanes + 1) * region, alignment: region)
        for lane in 0..<maxLanes {
            (regions + 2 * lane * region).bindMemory(to: LaneProducerSide.self, capacity: 1)
                .initialize(to: LaneProducerSide())
            (regions + (2 * lane + 1) * region).bindMemory(to: LaneConsumerSide.self, capacity: 1)
                .initialize(to: LaneConsumerSide())
        }
        (regions + 2 * maxLanes * region).bindMemory(to: Shared.self, capacity: 1).initialize(to: Shared())

        let stride = MemoryLayout<Element>.stride
        let ringBytes = (slots * stride + region - 1) / region * region
        ringStride = ringBytes / stride
        let valueByteCount = ringBytes * maxLanes
        let valueBytes = UnsafeMutableRawPointer.allocate(
            byteCount: valueByteCount, alignment: Swift.max(region, MemoryLayout<Element>.alignment))
        // Zeroed so the rings' pages are touched here, not by the first
        // puts. A slot is read only after a `tail` store covering it, and
        // `Element` is trivial, so no value needs initializing or
        // deinitializing.
        valueBytes.initializeMemory(as: UInt8.self, repeating: 0, count: valueByteCount)
        values = valueBytes.bindMemory(to: Element.self, capacity: ringStride * maxLanes)
    }

    deinit {
        // No handle exists (each holds a reference to the queue). Items still
        // queued are dropped as bits.
        for lane in 0..<maxLanes {
            producerSide(lane).deinitialize(count: 1)
            consumerSide(lane).deinitialize(count: 1)
        }
        shared.deinitialize(count: 1)
        regions.deallocate()
        UnsafeMutableRawPointer(values).deallocate()
    }

    /// The total bound: `maxLanes * laneCapacity` items, held only when
    /// every lane is full (each lane's bound is exact; see the type's
    /// "Semantics"). Immutable: any thread.
    public var capacity: Int { maxLanes * laneCapacity }

    @inlinable @inline(__always)
    internal func producerSide(_ lane: Int) -> UnsafeMutablePointer<LaneProducerSide> {
        (regions + 2 * lane * Self.regionSize).assumingMemoryBound(to: LaneProducerSide.self)
    }

    @inlinable @inline(__always)
    internal func consumerSide(_ lane: Int) -> UnsafeMutablePointer<LaneConsumerSide> {
        (regions + (2 * lane + 1) * Self.regionSize).assumingMemoryBound(to: LaneConsumerSide.self)
    }

    @inlinable @inline(__always)
    internal var shared: UnsafeMutablePointer<Shared> {
        (regions + 2 * maxLanes * Self.regionSize).assumingMemoryBound(to: Shared.self)
    }

    @inlinable @inline(__always)
    internal func ring(_ lane: Int) -> UnsafeMutablePointer<Element> {
        values + lane * ringStride
    }

    // MARK: Producers

    /// Takes a free lane and returns the handle that puts into it, or nil
    /// if all ``maxLanes`` lanes are owned. Any thread.
    ///
    /// The lowest free lane is taken. If an earlier owner dropped its handle
    /// with items still queued, they stay ahead of the new owner's.
    ///
    /// Cost: a scan of the lanes' owner flags and one compare-and-swap, and
    /// a read of the lane's indices. Not for the per-item path: register
    /// once per producer thread.
    public func register() -> Producer? {
        for lane in 0..<maxLanes {
            let side = producerSide(lane)
            // Relaxed: only a hint to skip owned lanes; the CAS decides.
            if side.pointee.owned.load(ordering: .relaxed) { continue }
            // Acquiring: pairs with the releasing store in the previous
            // owner's `Producer.deinit`, so its slot writes and `tail` stores
            // happen before everything this owner does with the lane.
            guard side.pointee.owned.compareExchange(expected: false, desired: true, ordering: .acquiring)
                .exchanged else { continue }
            // Relaxed max: `lanesInUse` only bounds the consumer's scan. A
            // consumer that reads an older value misses this lane for that
            // call, as if the lane's `tail` store were not visible yet; the
            // item's visibility itself comes from `tail`'s release/acquire.
            var seen = shared.pointee.lanesInUse.load(ordering: .relaxed)
            while seen < lane + 1 {
                let (done, now) = shared.pointee.lanesInUse.compareExchange(
                    expected: seen, desired: lane + 1, ordering: .relaxed)
                if done { break }
                seen = now
            }
            return Producer(queue: self, lane: lane)
        }
        return nil
    }

    /// A producer's handle on one lane of a ``LanedPCQ``: the only way to
    /// put.
    ///
    /// `~Copyable`, so one owner at a time: the owner calls ``put(_:)``
    /// (mutating, so never from two threads at once). It may be moved to
    /// another thread. Dropping it (end of scope, `_ = consume handle`)
    /// releases the lane: items already put stay queued and are delivered
    /// in order, and ``LanedPCQ/register()`` may hand the lane to another
    /// producer. The handle keeps the queue alive.
    ///
    /// `@unchecked Sendable`: the handle holds pointers into the queue's
    /// memory, which is shared on purpose (see ``LanedPCQ``); the lane they
    /// point to belongs to this handle alone until it is dropped.
    public struct Producer: ~Copyable, @unchecked Sendable {
        /// Keeps the memory the pointers below refer to alive.
        @usableFromInline let queue: LanedPCQ<Element>
        /// The lane this handle owns, in `0..<maxLanes` (for diagnostics).
        public let lane: Int
        @usableFromInline let side: UnsafeMutablePointer<LaneProducerSide>
        @usableFromInline let consumerSide: UnsafeMutablePointer<LaneConsumerSide>
        @usableFromInline let ring: UnsafeMutablePointer<Element>
        @usableFromInline let mask: UInt
        @usableFromInline let capacity: UInt
        /// The lane's `tail`, owned by this handle (the shared one is its
        /// published copy).
        @usableFromInline var tail: UInt
        /// A copy of the consumer's `head`, never ahead of it.
        @usableFromInline var cachedHead: UInt

        init(queue: LanedPCQ<Element>, lane: Int) {
            self.queue = queue
            self.lane = lane
            side = queue.producerSide(lane)
            consumerSide = queue.consumerSide(lane)
            ring = queue.ring(lane)
            mask = queue.mask
            capacity = UInt(queue.laneCapacity)
            // Relaxed: the owner flag's acquire (in `register`) ordered the
            // previous owner's last store of `tail` before this load.
            tail = side.pointee.tail.load(ordering: .relaxed)
            // Acquiring: pairs with the consumer's releasing store of `head`,
            // so its reads of the slots it freed happen before our overwrites.
            cachedHead = consumerSide.pointee.head.load(ordering: .acquiring)
        }

        deinit {
            // Releasing: pairs with the next owner's acquiring CAS in
            // `register`, handing over every slot write and `tail` store.
            side.pointee.owned.store(false, ordering: .releasing)
        }

        /// Appends `item` to this handle's lane if the lane is not full.
        /// The handle's owner only; never blocks.
        ///
        /// Returns false only if, at an instant during the call, the lane
        /// held ``LanedPCQ/laneCapacity`` items (other lanes do not count).
        ///
        /// Cost: the value copy and one store of the lane's `tail`; the
        /// consumer's `head` is read only when the lane looks full.
        @inlinable
        public mutating func put(_ item: Element) -> Bool {
            if tail &- cachedHead >= capacity {
                guard refreshHead() else { return false }
            }
            // A plain copy of the value's bytes; `initialize`, not assignment:
            // the slot holds an older item's bits or zeros (trivial type).
            (ring + Int(bitPattern: tail & mask)).initialize(to: item)
            tail &+= 1
            // Releasing: the copy above (and every earlier one) happens
            // before the consumer's read of the slot once it acquires this
            // value of `tail` or a later one.
            side.pointee.tail.store(tail, ordering: .releasing)
            return true
        }

        /// The number of items in this lane, racy (the consumer may be
        /// taking some): at most ``LanedPCQ/laneCapacity``. The owner only.
        public var approximateCount: Int {
            // Acquiring, as in `refreshHead`; our own `tail` is exact.
            Int(bitPattern: tail &- consumerSide.pointee.head.load(ordering: .acquiring))
        }

        /// Slow path: the cached head says full. Reads the consumer's
        /// `head`, samples the depth, and counts a failed put if the lane is
        /// really full. Returns true if there is room.
        @usableFromInline
        @inline(never)
        internal mutating func refreshHead() -> Bool {
            // Acquiring: pairs with the consumer's releasing store of `head`
            // (see `init`).
            cachedHead = consumerSide.pointee.head.load(ordering: .acquiring)
            let depth = Int(bitPattern: tail &- cachedHead)
            // Owner-only counters: a relaxed load and store, no RMW (the
            // owner flag's release/acquire orders successive owners).
            if depth > side.pointee.highWater.load(ordering: .relaxed) {
                side.pointee.highWater.store(depth, ordering: .relaxed)
            }
            if UInt(depth) >= capacity {
                side.pointee.failedPuts.store(
                    side.pointee.failedPuts.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
                return false
            }
            return true
        }
    }

    // MARK: Observation (any thread)

    /// The lanes that may hold items: one more than the highest lane ever
    /// registered (lanes are taken lowest first). Any thread; one load.
    public var lanesInUse: Int { shared.pointee.lanesInUse.load(ordering: .relaxed) }

    /// A racy snapshot of the number of items in the queue, in
    /// `0...capacity`. Any thread; two loads per lane in use.
    public var approximateCount: Int {
        var total = 0
        for lane in 0..<lanesInUse {
            // Acquiring on `head` orders the `tail` load after it, and a
            // lane's tail at any later instant is at least its head at this
            // one: never negative. Clamp for a stale `head`.
            let h = consumerSide(lane).pointee.head.load(ordering: .acquiring)
            let t = producerSide(lane).pointee.tail.load(ordering: .relaxed)
            total += Swift.min(Int(bitPattern: t &- h), laneCapacity)
        }
        return total
    }

    /// The queue's counters, summed over the lanes. Any thread; relaxed
    /// loads, no synchronization (individually accurate, not a common
    /// instant).
    ///
    /// `puts` and `gets` are exact (the lanes' indices). `highWater` is a
    /// lower bound on the deepest any *one lane* was (not the total):
    /// sampled by producers when their lane looked full, and by the
    /// consumer as each batch it found in a lane; it is ``laneCapacity``
    /// once any put has failed.
    public var statistics: PCQStatistics {
        var s = PCQStatistics()
        for lane in 0..<lanesInUse {
            let p = producerSide(lane), c = consumerSide(lane)
            s.puts += Int(bitPattern: p.pointee.tail.load(ordering: .relaxed))
            s.failedPuts += p.pointee.failedPuts.load(ordering: .relaxed)
            s.gets += Int(bitPattern: c.pointee.head.load(ordering: .relaxed))
            s.highWater = Swift.max(s.highWater, p.pointee.highWater.load(ordering: .relaxed),
                                    c.pointee.highWater.load(ordering: .relaxed))
        }
        return s
    }
}
