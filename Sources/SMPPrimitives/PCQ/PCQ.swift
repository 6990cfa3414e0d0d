import Synchronization

/// A bounded, lock-free, multi-producer / single-consumer FIFO queue of
/// plain values: NetBSD's `pcq(9)` semantics with a layout built for
/// cross-core throughput.
///
/// `Element` is any `BitwiseCopyable` type: a word (`UInt`, an index, a
/// pointer, an `Unmanaged` reference) or a small struct of such fields (a
/// buffer index and a length, a pointer and a flow hash: 16 or 24 bytes).
/// The queue copies an element's bytes in on ``put(_:)`` and out on
/// ``get()``; it never retains, releases or dereferences anything.
///
/// ## The unsafe form, and the safe one
///
/// For references and pointers, `PCQ` is the *unsafe* form, in the sense of
/// swift-atomics' `UnsafeAtomic`: it moves bits, and whatever ownership the
/// producer attached to them (an `Unmanaged.passRetained` reference, a
/// pool buffer) is the callers' to balance. Nothing checks that the
/// consumer takes the reference back exactly once, and items still queued
/// when the queue is deinitialized are dropped without being released
/// (they leak). That is what the hot paths want: no reference counting per
/// item. ``ManagedPCQ`` is the safe form for class references (as
/// `ManagedAtomic` is for atomics): it retains on put, hands the consumer
/// an owned reference and releases the leftovers in its deinit, at the
/// price of one retain and one release per item.
///
/// For the same reason the queue is `Sendable` whatever `Element` is: it
/// exists to pass pointers and handles between threads, with their
/// ownership travelling with the item, which `Sendable` on the element
/// cannot express. Whoever puts a value hands over what it refers to.
///
/// ## Semantics
///
/// - ``put(_:)`` may be called from any number of threads at once. It never
///   blocks, never waits for another producer, and never loses an item. It
///   returns false only when the queue is really full: at an instant during
///   the call, ``capacity`` items had been accepted and not yet taken,
///   counting items whose producer has reserved a slot but not yet finished
///   writing it (those items *are* in the queue; they are just not visible
///   yet). Items handed out by a ``drain(max:_:)`` that has not returned yet
///   still count: a drain releases its slots when it returns.
/// - ``get()``, ``peek()`` and ``drain(max:_:)`` must only be called by one
///   consumer thread at a time (calls from different threads need a
///   happens-before edge between them, e.g. a lock or a thread hand-off;
///   see "The single-consumer rule" below for why the type system does
///   not enforce it).
/// - Items from one producer are taken in the order that producer put them.
///   Items from different producers are taken in the order their puts
///   reserved slots (a global ticket order).
/// - If the oldest item's producer was preempted between reserving its slot
///   and publishing the value, the consumer sees the queue as empty until it
///   finishes: it never skips, reorders or duplicates an item. Other
///   producers are not held up: they keep putting into the following slots
///   until the queue is really full.
/// - ``capacity`` is the exact number of items the queue can hold: starting
///   empty, `capacity` puts succeed and the next one fails. (`pcq(9)`'s
///   `pcq_maxitems` reports one more than it can hold; this does not.)
///
/// ## Design
///
/// Producers take *tickets* by a compare-and-swap on a shared tail index,
/// only after checking that the ticket's slot is free (so a ticket, once
/// taken, is always used: there is no failure after reservation). The slot
/// of ticket `t` is `t mod 2^k` for the smallest power of two `2^k >=
/// capacity`; it is free when the consumer's published position `head`
/// satisfies `t - head < capacity`.
///
/// Readiness is a one-byte *lap flag* per slot, derived from the ticket
/// (`(t >> k) + 1`, truncated): the producer writes the value, then the flag
/// (release). The consumer knows which ticket it expects next, so it checks
/// the flag of its own slot and never reads the producers' tail. A slot's
/// flag can only hold the previous lap's value or the current one, so the
/// flags never need resetting.
///
/// The consumer position is published once per ``drain(max:_:)`` call (once
/// per ``get()``), in its own 128-byte region (Intel's adjacent-line
/// prefetcher pairs 64-byte lines). Producers read it only when their shared
/// cached copy says the queue may be full. Values (`64 / stride` per cache
/// line: 8 words, 4 two-word structs) and flags (64 per cache line) are in
/// separate arrays, so a cache-line transfer carries as many items as
/// possible.
///
/// ## Values of several words
///
/// A value slot is plain memory of `MemoryLayout<Element>.stride` bytes,
/// written and read with ordinary, non-atomic copies, however many words
/// they take. Only the one-byte lap flag is atomic. In the C++ memory model
/// (which Swift's `Atomic` follows) this publishes a multi-word value as
/// correctly as a single word, because the slot is never accessed by two
/// threads without a happens-before edge between them; there is no data
/// race, so there is nothing to tear:
/// - Producer to consumer: the producer's copy into the slot is sequenced
///   before its releasing store of the slot's lap flag. The consumer's
///   acquiring load that reads that flag value synchronizes with the store,
///   and its copy out of the slot is sequenced after the load. A
///   release/acquire pair orders *every* memory access before the release
///   with every access after the acquire, not just one word: all the bytes
///   of the value are visible, none from an older lap. A consumer that reads
///   an older flag does not read the slot at all.
/// - Consumer to the next lap's producer: the consumer's copy out of the
///   slot is sequenced before its releasing store of `head`. A producer
///   takes the ticket that reuses the slot only after an acquiring load of a
///   `head` past the slot (directly, or through `cachedHead`, whose
///   releasing store was made after acquiring `head`), so its overwrite
///   happens after the consumer's read.
/// The same two edges serve one word or three; only the number of values
/// per cache line changes. The thread sanitizer checks exactly these edges
/// in the stress tests, with words and with two-word structs.
///
/// ## Counters
///
/// ``statistics`` (puts, failed puts, gets, high-water depth) costs nothing
/// on the fast paths: `puts` is the ticket counter, `gets` the consumer
/// position, `failedPuts` is incremented on the failure path only, and the
/// high-water mark is sampled where the depth is already known.
///
/// ## Polling
///
/// A consumer that polls an empty queue in a tight loop pulls the cache
/// line the producer is about to write on every poll, and the producer must
/// take it back for every item: both slow down several times. When
/// ``drain(max:_:)`` returns 0, back off (tens of `PAUSE`s, a few
/// microseconds) or block, then drain a batch.
///
/// ``put(_:counting:)`` is the same put reporting the atomic RMWs it
/// issued (ticket CASes won and lost, the failed-put fetch-add, high-water
/// CASes) into a caller-owned ``PCQPutCounts``: for statistics that count
/// each RMW where it happens instead of assuming one per put.
///
/// Cost: a put is one compare-and-swap on the producers' line plus the
/// value copy and one flag store into the ring; a get is a flag load, the
/// value copy and one store to the consumer's own line; a drain of `n`
/// items is `n` flag loads, `n` value copies and one store. No allocation
/// or reference counting per item.
///
/// ## The single-consumer rule
///
/// The rule that one thread at a time plays the consumer is a contract,
/// checked by nothing (a violation corrupts the order and can duplicate
/// items). The type-system way to check it, a `~Copyable` consumer handle
/// with `mutating` get/drain methods, is free only where the handle lives
/// in a local variable or in a value owned by one thread. In this package
/// the consumer role moves between threads: a socket's receive queue is
/// drained by whichever reader thread holds the socket's reader-side lock
/// (a one-CAS lock shared with the teardown drain of a closed socket), and
/// a socket's TCP backlog by whoever holds its TCP lock. The handle would
/// have to be a stored property of the shared `Socket` object, and a
/// mutating access to a class's stored property is checked by Swift's
/// dynamic exclusivity enforcement (a begin/end-access call on every
/// receive), or not at all if marked `@exclusivity(unchecked)`: the type
/// system cannot see the lock that really serializes the readers, so it
/// would not stop two threads either way. Keeping the handle behind a
/// `Mutex` would make the check static, but would replace those locks with
/// another one and move every consumer call into a closure. So the rule
/// stays documented: calls from different threads need a happens-before
/// edge between them (a lock, a thread hand-off), which the thread
/// sanitizer checks.
///
/// `@unchecked Sendable`: the queue's state is raw memory shared between
/// threads on purpose. Every shared word is an `Atomic`, and every plain
/// value slot is ordered by the release/acquire pairs documented on the
/// operations (value written before its flag is released; value read before
/// the consumer position is released; see "Values of several words"). The
/// single-consumer rule is the caller's contract.
public final class PCQ<Element: BitwiseCopyable>: @unchecked Sendable {
    /// Producer-side shared words, alone in their 128-byte region.
    @usableFromInline
    struct ProducerIndex: ~Copyable {
        /// The next ticket; also the count of successful puts.
        @usableFromInline let tail: Atomic<UInt>
        /// A possibly stale copy of the consumer's `head` (never ahead of it),
        /// kept on the producers' line so the fast path does not touch the
        /// consumer's line.
        @usableFromInline let cachedHead: Atomic<UInt>
        /// Puts that found the queue full (failure path only).
        @usableFromInline let failedPuts: Atomic<Int>
        /// Depth samples taken by producers when they refresh `cachedHead`.
        @usableFromInline let highWater: Atomic<Int>

        init() {
            tail = Atomic(0)
            cachedHead = Atomic(0)
            failedPuts = Atomic(0)
            highWater = Atomic(0)
        }
    }

    /// Consumer-side words, alone in their 128-byte region. Only the consumer
    /// writes them, with plain (non-RMW) atomic stores.
    @usableFromInline
    struct ConsumerIndex: ~Copyable {
        /// The next ticket the consumer will take; also the count of gets.
        @usableFromInline let head: Atomic<UInt>
        /// Largest batch the consumer found ready in one call.
        @usableFromInline let highWater: Atomic<Int>

        init() {
            head = Atomic(0)
            highWater = Atomic(0)
        }
    }

    /// The exact number of items the queue can hold (what was asked for;
    /// immutable: any thread).
    public let capacity: Int
    /// Slot count minus one (slot count = capacity rounded up to 2^k).
    @usableFromInline let mask: UInt
    /// k: `ticket >> lapShift` is the ticket's lap.
    @usableFromInline let lapShift: UInt
    @usableFromInline let producer: UnsafeMutablePointer<ProducerIndex>
    @usableFromInline let consumer: UnsafeMutablePointer<ConsumerIndex>
    /// One lap flag per slot.
    @usableFromInline let flags: UnsafeMutablePointer<Atomic<UInt8>>
    /// One value per slot (`MemoryLayout<Element>.stride` bytes each).
    /// Plain memory: every access is ordered by the flag (producer to
    /// consumer) and by `head` (consumer to the next lap's producer), for
    /// one word or several (see "Values of several words").
    @usableFromInline let values: UnsafeMutablePointer<Element>
    private let indexRegion: UnsafeMutableRawPointer

    /// Size of an index region: two 64-byte lines, because the adjacent-line
    /// prefetcher fetches 64-byte lines in pairs.
    private static var regionSize: Int { 128 }

    /// Creates an empty queue that holds exactly `capacity` items.
    ///
    /// Memory: `capacity` rounded up to a power of two, times
    /// `MemoryLayout<Element>.stride + 1` bytes (9 for a word), plus 256
    /// bytes of indices. Allocation happens here only. Any thread; the
    /// queue may then be shared with its producers and its one consumer.
    ///
    /// - Precondition: `1 <= capacity <= 2^30`.
    public init(capacity: Int) {
        precondition(capacity >= 1 && capacity <= 1 << 30, "PCQ capacity must be in 1...2^30")
        var shift: UInt = 0
        while (1 << shift) < capacity { shift += 1 }
        let slots = 1 << Int(shift)
        self.capacity = capacity
        mask = UInt(slots - 1)
        lapShift = shift

        indexRegion = UnsafeMutableRawPointer.allocate(byteCount: 2 * Self.regionSize, alignment: Self.regionSize)
        producer = indexRegion.bindMemory(to: ProducerIndex.self, capacity: 1)
        producer.initialize(to: ProducerIndex())
        consumer = (indexRegion + Self.regionSize).bindMemory(to: ConsumerIndex.self, capacity: 1)
        consumer.initialize(to: ConsumerIndex())

        let flagBytes = UnsafeMutableRawPointer.allocate(
            byteCount: Swift.max(slots, Self.regionSize), alignment: Self.regionSize)
        flags = flagBytes.bindMemory(to: Atomic<UInt8>.self, capacity: slots)
        for i in 0..<slots { (flags + i).initialize(to: Atomic(0)) }  // 0 is no lap's flag

        let valueByteCount = Swift.max(slots * MemoryLayout<Element>.stride, Self.regionSize)
        let valueBytes = UnsafeMutableRawPointer.allocate(
            byteCount: valueByteCount, alignment: Swift.max(Self.regionSize, MemoryLayout<Element>.alignment))
        // Zeroed so the ring's pages are touched here, not by the first
        // lap's puts. No `Element` value is needed: a slot is read only
        // after its lap flag says a put wrote it, and `Element` is
        // trivial, so the bytes need no deinitialization either.
        valueBytes.initializeMemory(as: UInt8.self, repeating: 0, count: valueByteCount)
        values = valueBytes.bindMemory(to: Element.self, capacity: slots)
    }

    deinit {
        let slots = Int(mask) + 1
        // Items still queued are dropped as bits (see "The unsafe form").
        UnsafeMutableRawPointer(values).deallocate()
        flags.deinitialize(count: slots)
        UnsafeMutableRawPointer(flags).deallocate()
        producer.deinitialize(count: 1)
        consumer.deinitialize(count: 1)
        indexRegion.deallocate()
    }

    // MARK: Producers

    /// Appends `item` if the queue is not full. Any thread; never blocks.
    ///
    /// Returns false only if, at an instant during the call, `capacity`
    /// items had been put and not yet taken (including items still being
    /// written by preempted producers). Never waits for another producer.
    ///
    /// Cost: one compare-and-swap on the producers' shared line (retried
    /// only when another producer took the ticket first), the value copy and
    /// one flag store into the ring; the consumer's line is read only when
    /// the queue looks full.
    @inlinable
    public func put(_ item: Element) -> Bool {
        // The counts are a local nobody reads: once inlined, the optimizer
        // drops their updates, so this is the uncounted put.
        var unused = PCQPutCounts()
        return put(item, counting: &unused)
    }

    /// ``put(_:)``, adding to `counts` every atomic read-modify-write it
    /// issues, counted where it is issued: the ticket CAS that succeeded,
    /// each ticket CAS that lost to another producer (and was retried), the
    /// failed-put counter's fetch-add, and the high-water CASes of the
    /// slow path. Same contract as ``put(_:)`` (any thread); `counts` is
    /// the caller's own (one producer thread's), so counting adds plain
    /// register arithmetic, no shared write.
    @inlinable
    public func put(_ item: Element, counting counts: inout PCQPutCounts) -> Bool {
        guard let ticket = reserve(&counts) else { return false }
        publish(item, at: ticket)
        return true
    }

    /// Takes a ticket whose slot is free, or returns nil if the queue is
    /// full. The caller must then `publish` exactly once for that ticket.
    /// (Split from `put` so tests can stop a "producer" between the two,
    /// and so FastDemux's batch delivery can take a chunk's tickets before
    /// it writes the chunk's values: see `DemuxInput.deliver(batch:)`.)
    @inlinable
    package func reserve() -> UInt? {
        var unused = PCQPutCounts()
        return reserve(&unused)
    }

    /// `reserve()`, counting its atomic RMWs into `counts` (see
    /// ``put(_:counting:)``).
    @inlinable
    package func reserve(_ counts: inout PCQPutCounts) -> UInt? {
        let p = producer
        let capacity = self.capacity
        // Relaxed: the tail value is only a candidate ticket, validated by
        // the compare-and-swap below; no data is published through `tail`.
        var t = p.pointee.tail.load(ordering: .relaxed)
        while true {
            // Acquiring: pairs with the releasing store in `refreshHead`, which
            // itself acquired `head` from the consumer. That chain makes the
            // consumer's read of the slot's previous value happen before our
            // overwrite of it in `publish`.
            let cached = p.pointee.cachedHead.load(ordering: .acquiring)
            // Signed: a stale `t` can be behind `cached`; the CAS then fails.
            if Int(bitPattern: t &- cached) >= capacity {
                let (fresh, highWaterCASes) = refreshHead(ticket: t)
                counts.highWaterCASes &+= highWaterCASes
                if Int(bitPattern: t &- fresh) >= capacity {
                    // `t` was the tail before `fresh` was read, and the tail
                    // never decreases: `capacity` tickets were outstanding
                    // when we read `head`. Really full.
                    recordFailedPut()
                    counts.failedPuts &+= 1
                    return nil
                }
            }
            // Relaxed: tickets only need a total order (which any RMW on one
            // word gives); the slot's happens-before edge comes from `head`.
            let (won, current) = p.pointee.tail.compareExchange(
                expected: t, desired: t &+ 1, ordering: .relaxed)
            if won {
                counts.puts &+= 1
                return t
            }
            counts.casRetries &+= 1
            t = current
        }
    }

    /// Loads the producers' line (the ticket counter) and returns the
    /// ticket a put would take now: for a producer that touches the lines
    /// of several queues before it puts into them, so that their cache
    /// misses overlap (FastDemux's batch delivery). Any thread; one relaxed
    /// load, nothing published or reserved.
    @inlinable
    package func warmProducerLine() -> UInt { producer.pointee.tail.load(ordering: .relaxed) }

    /// Writes the value of a reserved ticket and makes it visible.
    @inlinable
    package func publish(_ item: Element, at ticket: UInt) {
        let i = Int(bitPattern: ticket & mask)
        // A plain copy of all the value's bytes (one store per word for a
        // small struct). `initialize`, not assignment: the slot holds a
        // previous lap's bits or the initial zeros, which for a trivial
        // type is the same thing.
        (values + i).initialize(to: item)
        // Releasing: every byte of the value stored above must be visible
        // before the flag; pairs with the consumer's acquiring flag load.
        flags[i].store(lapFlag(ticket), ordering: .releasing)
    }

    /// Reads the consumer's position (slow path: the cached copy said the
    /// queue may be full), shares it with the other producers and samples
    /// the depth for `highWater`. Returns the position and the number of
    /// CASes issued on `highWater` (for ``put(_:counting:)``).
    @usableFromInline
    @inline(never)
    internal func refreshHead(ticket t: UInt) -> (head: UInt, highWaterCASes: Int) {
        let p = producer
        // Acquiring: pairs with the consumer's releasing store of `head`,
        // which it makes only after reading the values of the slots it frees.
        let h = consumer.pointee.head.load(ordering: .acquiring)
        if p.pointee.cachedHead.load(ordering: .relaxed) != h {
            // Releasing: passes the acquired edge on to producers that read
            // the cache (see `reserve`). A slower producer may store an older
            // value over a newer one; that only makes the cache more
            // conservative (it never gets ahead of the real `head`).
            p.pointee.cachedHead.store(h, ordering: .releasing)
        }
        // `t - h` is a depth that really existed when `head` was read (the
        // tail was at least `t` then). Relaxed max: statistics only.
        let depth = Int(bitPattern: t &- h)
        var casCount = 0
        if depth > 0 {
            var seen = p.pointee.highWater.load(ordering: .relaxed)
            while depth > seen {
                let (done, now) = p.pointee.highWater.compareExchange(
                    expected: seen, desired: depth, ordering: .relaxed)
                casCount &+= 1
                if done { break }
                seen = now
            }
        }
        return (h, casCount)
    }

    @usableFromInline
    @inline(never)
    internal func recordFailedPut() {
        // The only counter RMW, and only on the failure path. Relaxed:
        // statistics carry no data.
        producer.pointee.failedPuts.add(1, ordering: .relaxed)
    }

    /// The flag value that marks ticket `t`'s slot as written: its lap plus
    /// one, truncated. A slot holds either the previous lap's flag or this
    /// one (a ticket is reserved only after the previous lap's item in its
    /// slot was taken), and those differ; the initial 0 differs from lap 0's 1.
    @inlinable @inline(__always)
    internal func lapFlag(_ t: UInt) -> UInt8 {
        UInt8(truncatingIfNeeded: t &>> lapShift) &+ 1
    }

    // MARK: Observation (any thread)

    /// A racy snapshot of the number of items in the queue (accepted and
    /// not yet taken, including items still being written), in
    /// `0...capacity`. Any thread; two loads.
    public var approximateCount: Int {
        // Acquiring on `head` orders the `tail` load after it, and the tail
        // at any later instant is at least the head at this one: the
        // difference is never negative. `head` may be stale, so clamp.
        let h = consumer.pointee.head.load(ordering: .acquiring)
        let t = producer.pointee.tail.load(ordering: .relaxed)
        return Swift.min(Int(bitPattern: t &- h), capacity)
    }

    /// The queue's counters. Any thread; four loads, no synchronization.
    ///
    /// `puts` and `gets` are exact (they are the ticket counter and the
    /// consumer's published position). `highWater` is a lower bound on the
    /// largest depth the queue reached, sampled for free: by producers each
    /// time the queue looked full from their cached view of the consumer
    /// (so high depths are caught; a failed put records exactly
    /// `capacity`), and by the consumer as the size of each ready batch it
    /// took.
    public var statistics: PCQStatistics {
        let p = producer
        let c = consumer
        // Relaxed throughout: a snapshot of independent counters.
        return PCQStatistics(
            puts: Int(bitPattern: p.pointee.tail.load(ordering: .relaxed)),
            failedPuts: p.pointee.failedPuts.load(ordering: .relaxed),
            gets: Int(bitPattern: c.pointee.head.load(ordering: .relaxed)),
            highWater: Swift.max(
                p.pointee.highWater.load(ordering: .relaxed),
                c.pointee.highWater.load(ordering: .relaxed)))
    }
}
