import Glibc
import Synchronization

/// One mailbox message: a small fixed-size record (24 bytes; with its slot
/// sequence number a ring slot is 32 bytes), copied by value into the ring —
/// no allocation, no reference counting.
///
/// Either a C-convention function plus two word arguments (the receiving
/// executor calls `function(a, b)`), or, with `function == nil`, a plain
/// record that the receiver interprets itself.
public struct MailboxMessage: BitwiseCopyable, @unchecked Sendable {
    // @unchecked: a `@convention(c)` function pointer captures nothing; the
    // words are plain integers.
    /// The function a receiving executor calls with the two words.
    public typealias Function = @convention(c) (UInt, UInt) -> Void

    /// The function to call, or nil for a plain record.
    public var function: Function?
    /// The first word (argument or payload).
    public var a: UInt
    /// The second word.
    public var b: UInt

    /// A plain record (no function).
    @inlinable
    public init(_ a: UInt, _ b: UInt = 0) {
        self.function = nil
        self.a = a
        self.b = b
    }

    /// A function call record: the receiver runs `function(a, b)`.
    @inlinable
    public init(function: Function, _ a: UInt = 0, _ b: UInt = 0) {
        self.function = function
        self.a = a
        self.b = b
    }
}

/// Counters of one (sender, receiver) mailbox, or summed over several.
///
/// A value; ``MailboxMesh`` fills it from single-writer counters as a racy
/// snapshot, readable from any thread.
public struct MailboxStatistics: Sendable, Equatable {
    /// Messages enqueued.
    public var sent = 0
    /// Messages taken by the receiver.
    public var received = 0
    /// Sends that found the receiver parked and woke it (one `futex_wake`).
    public var doorbellsRung = 0
    /// Sends that found the receiver running: no system call.
    public var doorbellsAvoided = 0
    /// Sends (or send attempts) that found the ring full.
    public var fullEvents = 0
    /// The deepest the ring was seen (sampled by the sender every 64 sends,
    /// and the capacity once it was found full).
    public var highWater = 0

    /// All zero.
    public init() {}

    static func + (l: MailboxStatistics, r: MailboxStatistics) -> MailboxStatistics {
        var s = l
        s.sent += r.sent
        s.received += r.received
        s.doorbellsRung += r.doorbellsRung
        s.doorbellsAvoided += r.doorbellsAvoided
        s.fullEvents += r.fullEvents
        s.highWater = max(s.highWater, r.highWater)
        return s
    }
}

/// IPI-like mailboxes between `cores` cores (DragonFly lwkt IPI queues):
/// one single-producer/single-consumer ring per ordered (sender, receiver)
/// pair, plus one ``Doorbell`` per receiver.
///
/// Concurrency contract: "core k" is a role one thread plays at a time
/// (normally the ``CoreExecutor`` of core k). Only core s may send on the
/// rings `s -> *`; only core r may receive from the rings `* -> r` and park
/// on doorbell r. Statistics may be read from any thread (racy snapshots).
///
/// Ring layout. Readiness travels in the slots, space in an index: slot `i`
/// holds a sequence word and a message. The sender writes the message at
/// position `t` and releases sequence `t + 1` in the same slot; the receiver
/// at position `h` takes the slot when it acquires sequence `h + 1`, so it
/// never polls the sender's index line (a receiver that finds nothing reads
/// the next slot's line, which the sender writes anyway). The receiver
/// publishes its position once per batch; the sender keeps a cached copy
/// and re-reads it only when the ring looks full (about once per lap).
/// Receivers never write into slots, so each slot line travels once per lap,
/// sender to receiver.
///
/// Cost: a send is a slot copy, a release store of the slot's sequence, a
/// relaxed store of the sender's own position, and (unless `post`) the
/// doorbell check — one load behind a compiler barrier (see ``Doorbell``).
/// Receiving is one acquire load per message and one release store of the
/// receiver's position per batch.
public final class MailboxMesh: @unchecked Sendable {
    // @unchecked: all shared state is in memory this object owns; each ring
    // word is either atomic or touched only by its single owner role, as the
    // layout comment below says.

    /// Number of cores (sender and receiver roles).
    public let cores: Int
    /// Slots per ring (a power of two).
    public let capacity: Int
    @usableFromInline let mask: Int
    /// Per ring: 256 bytes of control words followed by the slots.
    ///
    /// Sender line (words 0..<16, only the sender writes):
    ///   0 position (= sent), 1 cached receiver position, 2 full events,
    ///   3 doorbells rung, 4 doorbells avoided, 5 high water (sampled every
    ///   64 sends).
    /// Receiver line (words 16..<32, only the receiver writes):
    ///   16 position (= received; released once per batch).
    /// Every word is an `Atomic<Int>`; single-writer words are updated with
    /// relaxed load + store (plain moves) so that readers on other threads
    /// are race-free.
    @usableFromInline let rings: UnsafeMutablePointer<UnsafeMutableRawPointer>
    @usableFromInline let doorbells: [Doorbell]
    /// Per receiver, its doorbell's parking word (kept alive by
    /// `doorbells`), and whether the doorbells use the asymmetric fence
    /// (the same for all: one `fence` argument). A send rings through
    /// these instead of `doorbells[receiver]`, whose use retains and
    /// releases the object — two atomic read-modify-writes per message.
    @usableFromInline let doorbellWords: UnsafeMutablePointer<UnsafeMutablePointer<Atomic<UInt32>>>
    @usableFromInline let doorbellsUseMembarrier: Bool

    @usableFromInline static let controlBytes = 256
    @usableFromInline static let slotBytes = 32
    @usableFromInline static let tailWord = 0
    @usableFromInline static let cachedHeadWord = 1
    @usableFromInline static let fullWord = 2
    @usableFromInline static let rungWord = 3
    @usableFromInline static let avoidedWord = 4
    @usableFromInline static let highWaterWord = 5
    @usableFromInline static let headWord = 16

    /// Creates the mesh: one ring per (sender, receiver) pair and one
    /// ``Doorbell`` per receiver. Any thread; allocates `cores²` rings of
    /// 256 bytes of control words plus 32 bytes per slot, once.
    ///
    /// - Parameters:
    ///   - cores: number of cores (at least 1).
    ///   - capacity: slots per ring, rounded up to a power of two (at least
    ///     2).
    ///   - fence: the doorbells' fence (see ``DoorbellFence``).
    public init(cores: Int, capacity: Int = 1024, fence: DoorbellFence = .automatic) {
        precondition(cores >= 1 && capacity >= 2)
        precondition(MemoryLayout<MailboxMessage>.stride + 8 <= MailboxMesh.slotBytes)
        self.cores = cores
        var cap = 2
        while cap < capacity { cap <<= 1 }
        self.capacity = cap
        self.mask = cap - 1
        rings = .allocate(capacity: cores * cores)
        for i in 0..<(cores * cores) {
            let bytes = MailboxMesh.controlBytes + cap * MailboxMesh.slotBytes
            let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 128)
            let words = raw.bindMemory(to: Atomic<Int>.self, capacity: 32)
            for w in 0..<32 { (words + w).initialize(to: Atomic(0)) }
            for slot in 0..<cap {
                let p = raw + MailboxMesh.controlBytes + slot * MailboxMesh.slotBytes
                // 0 never equals a ready sequence (position + 1 >= 1).
                p.bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
                (p + 8).bindMemory(to: MailboxMessage.self, capacity: 1).initialize(to: MailboxMessage(0))
            }
            rings[i] = raw
        }
        let bells = (0..<cores).map { _ in Doorbell(fence: fence) }
        doorbells = bells
        doorbellWords = .allocate(capacity: cores)
        for (k, bell) in bells.enumerated() { (doorbellWords + k).initialize(to: bell.word) }
        doorbellsUseMembarrier = bells[0].usesMembarrier
    }

    deinit {
        for i in 0..<(cores * cores) {
            rings[i].assumingMemoryBound(to: Atomic<Int>.self).deinitialize(count: 32)
            for slot in 0..<capacity {
                (rings[i] + MailboxMesh.controlBytes + slot * MailboxMesh.slotBytes)
                    .assumingMemoryBound(to: Atomic<Int>.self).deinitialize(count: 1)
            }
            rings[i].deallocate()
        }
        rings.deallocate()
        doorbellWords.deallocate()
    }

    @inlinable @inline(__always)
    func control(_ sender: Int, _ receiver: Int) -> UnsafeMutablePointer<Atomic<Int>> {
        rings[sender &* cores &+ receiver].assumingMemoryBound(to: Atomic<Int>.self)
    }

    /// The slot for position `position` of the (sender, receiver) ring.
    @inlinable @inline(__always)
    func slot(_ sender: Int, _ receiver: Int, _ position: Int) -> UnsafeMutableRawPointer {
        rings[sender &* cores &+ receiver] + MailboxMesh.controlBytes
            + (position & mask) &* MailboxMesh.slotBytes
    }

    @inlinable @inline(__always)
    static func sequence(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<Int>> {
        slot.assumingMemoryBound(to: Atomic<Int>.self)
    }

    @inlinable @inline(__always)
    static func message(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<MailboxMessage> {
        (slot + 8).assumingMemoryBound(to: MailboxMessage.self)
    }

    /// The doorbell of `core` (its receiver role parks on it).
    public func doorbell(of core: Int) -> Doorbell { doorbells[core] }

    // MARK: sending (core `sender` only)

    /// Enqueues without ringing the doorbell; the caller must call
    /// ``ringDoorbell(of:from:)`` after a batch of posts (the receiver may be
    /// parked and will not see posted messages until rung).
    /// Sender role only. Returns false if the ring is full (counted).
    @inlinable
    public func post(_ message: MailboxMessage, from sender: Int, to receiver: Int) -> Bool {
        let ctl = control(sender, receiver)
        let tail = ctl[MailboxMesh.tailWord].load(ordering: .relaxed)   // own word
        var head = ctl[MailboxMesh.cachedHeadWord].load(ordering: .relaxed)
        if tail &- head > mask {
            // Acquire pairs with the receiver's release of its position: its
            // reads of the slots it passed are done before we overwrite them.
            head = ctl[MailboxMesh.headWord].load(ordering: .acquiring)
            ctl[MailboxMesh.cachedHeadWord].store(head, ordering: .relaxed)
            if tail &- head > mask {
                let f = ctl[MailboxMesh.fullWord].load(ordering: .relaxed)
                ctl[MailboxMesh.fullWord].store(f &+ 1, ordering: .relaxed)
                ctl[MailboxMesh.highWaterWord].store(capacity, ordering: .relaxed)
                return false
            }
        }
        let s = slot(sender, receiver, tail)
        MailboxMesh.message(s).pointee = message
        // Release publishes the message to the receiver's acquire.
        MailboxMesh.sequence(s).pointee.store(tail &+ 1, ordering: .releasing)
        ctl[MailboxMesh.tailWord].store(tail &+ 1, ordering: .relaxed)
        if tail & 63 == 0 {
            // Sampled depth, against the cached receiver position (an upper
            // bound; no extra cross-core read).
            let depth = Swift.min(capacity, tail &+ 1 &- head)
            if depth > ctl[MailboxMesh.highWaterWord].load(ordering: .relaxed) {
                ctl[MailboxMesh.highWaterWord].store(depth, ordering: .relaxed)
            }
        }
        return true
    }

    /// Wakes `receiver` if it is parked, counting a rung or avoided doorbell
    /// on the (sender, receiver) pair. Sender role only.
    @inlinable
    public func ringDoorbell(of receiver: Int, from sender: Int) {
        let ctl = control(sender, receiver)
        var rmws = 0
        let rang = Doorbell.ring(doorbellWords[receiver], asymmetric: doorbellsUseMembarrier, countingRMWs: &rmws)
        let word = rang ? MailboxMesh.rungWord : MailboxMesh.avoidedWord
        let v = ctl[word].load(ordering: .relaxed)
        ctl[word].store(v &+ 1, ordering: .relaxed)
    }

    /// Sends one message and rings the receiver's doorbell if it is parked.
    /// Never waits. Sender role only.
    /// - Returns: false if the ring is full (a counted full event).
    @inlinable
    public func trySend(_ message: MailboxMessage, from sender: Int, to receiver: Int) -> Bool {
        guard post(message, from: sender, to: receiver) else { return false }
        ringDoorbell(of: receiver, from: sender)
        return true
    }

    /// Sends one message, waiting while the ring is full. While it waits it
    /// calls `whileFull` — pass a closure that frees the sender's own
    /// incoming rings (as DragonFly does; ``CoreExecutor`` moves them to a
    /// backlog without running them), so that two cores sending to each
    /// other through full rings cannot deadlock. Sender role only.
    ///
    /// The wait is a quiescent point: a QSBR-registered, online sender
    /// reports a quiescent state on every attempt (a receiver that waits
    /// for a grace period must not wait for its blocked sender), so it must
    /// not be inside an explicit RCU read section then.
    @inlinable
    public func send(_ message: MailboxMessage, from sender: Int, to receiver: Int,
                     whileFull: () -> Void) {
        if post(message, from: sender, to: receiver) {
            ringDoorbell(of: receiver, from: sender)
            return
        }
        _ = sendWaitingForRoom(message, from: sender, to: receiver, whileFull: whileFull)
    }

    /// The waiting part of ``send(_:from:to:whileFull:)``; gives up (and
    /// returns false, the message not sent) once `giveUp()` is true.
    @usableFromInline
    func sendWaitingForRoom(_ message: MailboxMessage, from sender: Int, to receiver: Int,
                            whileFull: () -> Void, giveUp: () -> Bool = { false }) -> Bool {
        rcuCheckMayBlock("MailboxMesh.send to a full ring")
        let reportsQuiescentStates = QSBR.isInReadSection
        var attempts = 0
        while !post(message, from: sender, to: receiver) {
            if giveUp() { return false }
            // The receiver may be parked on a full ring only if it has not yet
            // seen our earlier doorbell; ring again to be sure.
            ringDoorbell(of: receiver, from: sender)
            whileFull()
            if reportsQuiescentStates { QSBR.quiescentState() }
            attempts &+= 1
            // On an oversubscribed CPU the receiver may be waiting for our
            // time slice: yield after a short spin.
            if attempts & 63 == 0 { sched_yield() } else { spinLoopHint() }
        }
        ringDoorbell(of: receiver, from: sender)
        return true
    }

    // MARK: receiving (core `receiver` only)

    /// Copies up to `max` messages from the (sender, receiver) ring into
    /// `buffer` and releases their slots with one store. Receiver role only.
    /// - Returns: the number copied.
    @inlinable
    public func receive(from sender: Int, at receiver: Int,
                        into buffer: UnsafeMutablePointer<MailboxMessage>, max: Int) -> Int {
        let ctl = control(sender, receiver)
        let head = ctl[MailboxMesh.headWord].load(ordering: .relaxed)   // own word
        var n = 0
        while n < max {
            let position = head &+ n
            let s = slot(sender, receiver, position)
            // Acquire pairs with the sender's release of the sequence.
            if MailboxMesh.sequence(s).pointee.load(ordering: .acquiring) != position &+ 1 { break }
            buffer[n] = MailboxMesh.message(s).pointee
            n &+= 1
        }
        if n > 0 {
            // Release: our reads of these slots happen before the sender,
            // which acquires this position, reuses them.
            ctl[MailboxMesh.headWord].store(head &+ n, ordering: .releasing)
        }
        return n
    }

    /// Handles up to `max` messages from every sender, in per-sender order,
    /// batch by batch. Receiver role only. Not reentrant: `body` must not
    /// call `receive` for the same receiver (``CoreExecutor`` has its own
    /// reentrant drain).
    /// - Returns: the number handled.
    @inlinable @discardableResult
    public func receive(at receiver: Int, max: Int = 256,
                        _ body: (_ sender: Int, _ message: MailboxMessage) -> Void) -> Int {
        // 32 messages = 768 bytes: withUnsafeTemporaryAllocation uses the
        // stack only up to 1 KiB and calls malloc above that, which would put
        // an allocation on every call of this hot path.
        withUnsafeTemporaryAllocation(of: MailboxMessage.self, capacity: 32) { buf in
            let base = buf.baseAddress!
            var total = 0
            for sender in 0..<cores {
                while total < max {
                    let n = receive(from: sender, at: receiver, into: base, max: Swift.min(32, max - total))
                    if n == 0 { break }
                    for i in 0..<n { body(sender, base[i]) }
                    total += n
                }
            }
            return total
        }
    }

    /// True if some ring into `receiver` holds a message. Any thread (racy),
    /// but meant for the receiver's parking re-check: the loads are
    /// sequentially consistent, the load half of the Doorbell protocol.
    public func hasIncoming(at receiver: Int) -> Bool {
        for sender in 0..<cores {
            let head = control(sender, receiver)[MailboxMesh.headWord].load(ordering: .relaxed)
            let s = slot(sender, receiver, head)
            if MailboxMesh.sequence(s).pointee.load(ordering: .sequentiallyConsistent) == head &+ 1 {
                return true
            }
        }
        return false
    }

    /// Parks `receiver` until a sender rings or the timeout passes, unless a
    /// message is already waiting or `otherWork()` says there is work.
    /// Receiver role only. Spurious returns are possible: callers loop.
    /// - Parameters:
    ///   - receiver: the parking core (its own index in the mesh).
    ///   - timeout: the longest sleep (rounded up to nanoseconds); nil
    ///     sleeps until rung.
    ///   - otherWork: the receiver's other work sources, read with
    ///     sequentially consistent loads (see ``Doorbell``).
    public func park(_ receiver: Int, timeout: Duration? = nil,
                     otherWork: () -> Bool = { false }) {
        doorbells[receiver].park(timeout: timeout) {
            !hasIncoming(at: receiver) && !otherWork()
        }
    }

    // MARK: statistics (any thread, racy snapshots)

    /// Counters of the (sender, receiver) ring. Any thread: a racy
    /// snapshot (six relaxed loads, individually accurate, not mutually
    /// consistent while the ring is in use).
    public func statistics(from sender: Int, to receiver: Int) -> MailboxStatistics {
        let ctl = control(sender, receiver)
        var s = MailboxStatistics()
        s.sent = ctl[MailboxMesh.tailWord].load(ordering: .relaxed)
        s.received = ctl[MailboxMesh.headWord].load(ordering: .relaxed)
        s.fullEvents = ctl[MailboxMesh.fullWord].load(ordering: .relaxed)
        s.doorbellsRung = ctl[MailboxMesh.rungWord].load(ordering: .relaxed)
        s.doorbellsAvoided = ctl[MailboxMesh.avoidedWord].load(ordering: .relaxed)
        s.highWater = ctl[MailboxMesh.highWaterWord].load(ordering: .relaxed)
        return s
    }

    /// Counters summed over every ring into `receiver`. Any thread (a racy
    /// snapshot, as ``statistics(from:to:)``).
    public func statistics(of receiver: Int) -> MailboxStatistics {
        (0..<cores).reduce(MailboxStatistics()) { $0 + statistics(from: $1, to: receiver) }
    }

    /// Counters summed over every ring. Any thread (a racy snapshot, as
    /// ``statistics(from:to:)``).
    public var totalStatistics: MailboxStatistics {
        (0..<cores).reduce(MailboxStatistics()) { $0 + statistics(of: $1) }
    }
}
