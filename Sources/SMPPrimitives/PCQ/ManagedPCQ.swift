/// A ``PCQ`` of class references that manages their reference counts: the
/// safe form of `PCQ<Unmanaged<Object>>`, as swift-atomics' `ManagedAtomic`
/// is the safe form of `UnsafeAtomic`.
///
/// - ``put(_:)`` retains the object for the queue (only if it was
///   accepted); the caller keeps its own reference.
/// - ``get()`` hands the queue's reference to the consumer: the returned
///   strong reference is the caller's (+1), with no further retain.
///   ``drain(max:_:)`` passes each object to `body` the same way, and the
///   queue's reference is released when `body` returns unless `body` kept
///   the object.
/// - ``peek()`` returns a new strong reference to the oldest object (one
///   retain) and leaves the queue's own in place.
/// - Objects still queued when the queue is deinitialized are released
///   then, so none leaks. (No put can be in progress at that point: a
///   producer inside ``put(_:)`` holds a reference to the queue.)
///
/// Everything else is ``PCQ``'s: the same queue (this type wraps a
/// `PCQ<Unmanaged<Object>>` and adds no second implementation), exact
/// capacity, FIFO per producer, never-blocking puts, the preempted-producer
/// behaviour and the single-consumer rule (see "The single-consumer rule"
/// on ``PCQ``: ``get()``, ``peek()`` and ``drain(max:_:)`` are for one
/// consumer thread at a time, with a happens-before edge between
/// successive consumers).
///
/// Cost: a ``PCQ`` operation plus one atomic retain per put and one
/// release when the consumer drops the object: use it where objects are
/// handed between threads at a moderate rate. For hot paths that must not
/// touch reference counts, `PCQ<Unmanaged<Object>>` moves the same bits
/// with no ARC traffic, and the caller balances every
/// `Unmanaged.passRetained` with exactly one `takeRetainedValue()`, and
/// drains the queue before dropping it (that form is unsafe: nothing
/// checks either).
///
/// The queue is `Sendable` when `Object` is: the object becomes reachable
/// from the consumer's thread while the producer may still hold it.
public final class ManagedPCQ<Object: AnyObject> {
    /// The queue itself; each slot holds one retained reference.
    @usableFromInline let queue: PCQ<Unmanaged<Object>>

    /// Creates an empty queue that holds exactly `capacity` objects (see
    /// ``PCQ/init(capacity:)`` for the memory it takes). Any thread; all of
    /// the queue's allocation happens here.
    ///
    /// - Precondition: `1 <= capacity <= 2^30`.
    public init(capacity: Int) {
        queue = PCQ(capacity: capacity)
    }

    deinit {
        // The last reference is gone, so no producer is inside `put` and
        // every reserved ticket has been published: one drain of the whole
        // capacity takes every leftover.
        queue.drain(max: queue.capacity) { $0.release() }
    }

    /// The exact number of objects the queue can hold (immutable: any
    /// thread).
    public var capacity: Int { queue.capacity }

    /// Appends `object` if the queue is not full, retaining it for the
    /// queue. Any thread; never blocks. Returns false (and retains nothing)
    /// exactly when ``PCQ/put(_:)`` would.
    ///
    /// Cost: ``PCQ/put(_:)`` plus one atomic retain.
    @inlinable
    public func put(_ object: Object) -> Bool {
        // Reserve first, retain second: a failed put costs no retain and
        // release. The ticket is always published (there is no failure
        // after reservation).
        guard let ticket = queue.reserve() else { return false }
        queue.publish(.passRetained(object), at: ticket)
        return true
    }

    /// Removes and returns the oldest object, or nil if none is visible
    /// (see ``PCQ/get()``). Single consumer only. The returned reference is
    /// the one the queue held: the caller owns it.
    @inlinable
    public func get() -> Object? {
        queue.get()?.takeRetainedValue()
    }

    /// Returns the oldest object without removing it, or nil when
    /// ``get()`` would return nil. Single consumer only. The queue keeps its
    /// reference (only the consumer could remove it), so the result is a new
    /// strong reference (one retain).
    @inlinable
    public func peek() -> Object? {
        queue.peek()?.takeUnretainedValue()
    }

    /// Takes up to `max` objects in FIFO order, calling `body` for each,
    /// and returns how many it took (see ``PCQ/drain(max:_:)``: same batch,
    /// early stop and throwing rules). Single consumer only.
    ///
    /// Each object is handed to `body` with the queue's reference; the
    /// reference is released when `body` returns (or throws) unless `body`
    /// stored the object, which then keeps it alive.
    @inlinable
    @discardableResult
    public func drain(max maxCount: Int, _ body: (Object) throws -> Void) rethrows -> Int {
        try queue.drain(max: maxCount) { try body($0.takeRetainedValue()) }
    }

    /// A racy snapshot of the number of queued objects (see
    /// ``PCQ/approximateCount``). Any thread.
    public var approximateCount: Int { queue.approximateCount }

    /// The queue's counters (see ``PCQ/statistics``). Any thread.
    public var statistics: PCQStatistics { queue.statistics }
}

// Checked: the only stored property is the (unconditionally Sendable)
// queue. Conditional, because a put makes the object reachable from the
// consumer's thread.
extension ManagedPCQ: Sendable where Object: Sendable {}
