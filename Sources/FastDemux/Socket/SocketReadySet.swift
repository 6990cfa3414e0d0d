import SMPPrimitives
import Synchronization

/// A readiness set over many sockets (an `epoll`/`kqueue` in miniature): one
/// bit per member socket, set by input threads when the socket becomes
/// readable, taken a word at a time by the single reader that drains them.
///
/// Cost model (as in the C peer): an input thread publishes readiness once
/// per burst: a fence, then per touched socket a plain load of its bit and,
/// only on a 0→1 transition, one `fetch_or` (counted as a wake-up) and a
/// check of the reader's wakeup. The reader `exchange`s each non-zero word.
///
/// Concurrency contract: ``add(_:)`` from any thread (control path, one
/// lock), before traffic reaches the socket; ``markReady(slot:)`` from any
/// input thread (after its fence); ``takeReady(_:)``, ``hasReadyBits``,
/// ``socket(at:)`` and ``parkUntilReady(extraCheck:)`` from the single
/// reader; ``wakeReader()`` from any thread. Members stay until the set is
/// freed (it retains them) or the reader removes them (``remove(slot:)``).
public final class SocketReadySet: @unchecked Sendable {
    // @unchecked Sendable: `words` is raw memory of atomics; the free slots
    // are only touched under `control`; a member entry is written by
    // `add(_:)` before traffic reaches the socket (retained while a member)
    // and read by the single reader.
    /// The number of slots (member sockets at most).
    public let capacity: Int
    @usableFromInline let wordCount: Int
    @usableFromInline let words: UnsafeMutablePointer<Atomic<UInt64>>
    /// The reader's doorbell: rung when a socket became ready while it parked.
    public let wakeup = ThreadParker()
    /// Guards `freeSlots`. A `PthreadMutex`, the package's one blocking
    /// lock (see there): `add(_:)` on an input thread and `remove(slot:)`
    /// on the reader contend, and ThreadSanitizer must see that hand-off.
    private let control = PthreadMutex()
    private var freeSlots: [Int]
    /// Member sockets by slot (nil: free), each retained by the set.
    @usableFromInline let members: UnsafeMutablePointer<SocketReference?>

    /// An empty set of `capacity` slots (allocates once; any thread).
    public init(capacity: Int) {
        precondition(capacity >= 1)
        self.capacity = capacity
        wordCount = (capacity + 63) / 64
        words = .allocate(capacity: wordCount)
        for i in 0..<wordCount { (words + i).initialize(to: Atomic(0)) }
        members = .allocate(capacity: capacity)
        members.initialize(repeating: nil, count: capacity)
        freeSlots = Array((0..<capacity).reversed())
    }

    deinit {
        for i in 0..<capacity { members[i]?.release() }
        words.deinitialize(count: wordCount)
        words.deallocate()
        members.deallocate()
    }

    /// Registers `socket`; returns its slot, or nil if the set is full.
    /// A socket belongs to at most one set; do this before traffic reaches it.
    /// Any thread; one lock; retains the socket for as long as the set lives.
    @discardableResult
    public func add(_ socket: Socket) -> Int? {
        guard let slot = control.withLock({ freeSlots.popLast() }) else { return nil }
        members[slot] = .retained(socket)
        socket.attach(readySet: self, slot: slot)
        return slot
    }

    /// Reader: takes the socket out of `slot` and frees the slot for a later
    /// ``add(_:)``, dropping the set's strong reference (which may free the
    /// socket, on this thread). Returns the socket's identity (nil if the
    /// slot was free).
    ///
    /// Only the set's single reader may call it (the thread that calls
    /// ``takeReady(_:)`` and ``socket(at:)``), and only for a socket no input
    /// thread can reach any more: closed, and its close returned (one grace
    /// period after which no lookup holds it), and not from inside a
    /// ``takeReady(_:)`` body (a bit that call already took for `slot`
    /// would still reach the body). A readiness bit still set for the slot
    /// is cleared. One atomic AND and one lock (the free-slot list).
    @discardableResult
    public func remove(slot: Int) -> Int? {
        precondition(slot >= 0 && slot < capacity)
        guard let r = members[slot] else { return nil }
        // Clear the old occupant's readiness bit before the slot can be
        // reused. Without this, a later takeReady would hand the stale bit
        // to the reader, whose socket(at:) read of `members[slot]` would
        // race with an add(_:) writing the next occupant on another thread
        // (nothing orders the two: the bit was set before the add). No
        // input thread can set the bit again: readiness is published
        // inside a read section, and the socket's grace period has ended.
        // The next occupant's bits are set only by traffic that reached it
        // after its add (through the table's publication and markReady's
        // release), so the reader's read of its member happens after the
        // add's write. Relaxed: the bit orders nothing here; the free-slot
        // lock below orders the slot's reuse.
        let bit: UInt64 = 1 << UInt64(slot & 63)
        words[slot >> 6].bitwiseAnd(~bit, ordering: .relaxed)
        members[slot] = nil
        let id = r.withSocket { $0.id }
        // The push (under the lock) happens before the pop of a later
        // add(_:) on another thread, so its write of the member follows
        // this clear.
        control.withLock { freeSlots.append(slot) }
        r.release()
        return id
    }

    /// Member sockets now (any thread; one lock).
    public var memberCount: Int { capacity - control.withLock { freeSlots.count } }

    /// The member socket in `slot` (reader side).
    public func socket(at slot: Int) -> Socket? { members[slot]?.socket }

    /// Input side: marks `slot` readable. Returns true on a 0→1 transition
    /// (a readiness notification, which costs one atomic RMW).
    @inlinable
    public func markReady(slot: Int) -> Bool { markReadyReporting(slot: slot).newlyReady }

    /// ``markReady(slot:)``, also telling whether it issued the atomic OR
    /// (`issuedRMW`: the pre-check found the bit clear; the OR may still
    /// find it set by another input, then `newlyReady` is false). For
    /// statistics that count each RMW where it is issued. Input side.
    @inlinable
    package func markReadyReporting(slot: Int) -> (issuedRMW: Bool, newlyReady: Bool) {
        let w = words + (slot >> 6)
        let bit: UInt64 = 1 << UInt64(slot & 63)
        // Relaxed pre-check: the reader has not consumed the bit yet, so no
        // RMW (and no exclusive ownership of the line) is needed.
        if w.pointee.load(ordering: .relaxed) & bit != 0 { return (false, false) }
        // Release (via acq_rel): the queue puts made before are visible to
        // the reader that takes this bit with an acquiring exchange.
        return (true, w.pointee.bitwiseOr(bit, ordering: .acquiringAndReleasing).oldValue & bit == 0)
    }

    /// Reader: takes all ready bits and calls `body(slot)` for each. Returns
    /// the number of slots taken.
    @inlinable
    public func takeReady(_ body: (Int) throws -> Void) rethrows -> Int {
        var n = 0
        for wi in 0..<wordCount {
            let w = words + wi
            if w.pointee.load(ordering: .relaxed) == 0 { continue }
            // Acquire pairs with markReady's release: items queued before
            // the bit was set are visible to the drain that follows.
            var bits = w.pointee.exchange(0, ordering: .acquiringAndReleasing)
            while bits != 0 {
                let b = bits.trailingZeroBitCount
                bits &= bits &- 1
                n += 1
                try body(wi << 6 | b)
            }
        }
        return n
    }

    /// Reader: true if any bit is set (seq_cst loads: used as the re-check
    /// after `ThreadParker.prepareToPark()`).
    public var hasReadyBits: Bool {
        for wi in 0..<wordCount where words[wi].load(ordering: .sequentiallyConsistent) != 0 { return true }
        return false
    }

    /// Reader: parks until some member becomes ready (or ``wakeReader()``).
    /// `extraCheck` is evaluated after announcing the park (e.g. a "done"
    /// flag); returning true cancels the park.
    public func parkUntilReady(extraCheck: () -> Bool = { false }) {
        wakeup.prepareToPark()
        if hasReadyBits || extraCheck() {
            wakeup.cancelPark()
            return
        }
        wakeup.park()
    }

    /// Wakes the reader unconditionally (shutdown).
    public func wakeReader() { wakeup.ringAlways() }
}
