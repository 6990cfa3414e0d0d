// The executor's private queue of incoming messages that were taken out of
// the mailbox rings but not yet handled.

/// Messages received from the mailbox rings and not yet handled, in arrival
/// order (a growable circular buffer owned by one executor thread).
///
/// Two things put messages here:
/// - the loop's drain, which copies a batch out of one ring and then handles
///   it message by message (so a handler that waits can let the drain go on
///   from the next message, and every message is handled once, in order);
/// - a `send` that finds its target's ring full: instead of running its own
///   incoming handlers re-entrantly inside the current one (unbounded
///   nesting, self-deadlock when the outer handler holds a lock), the
///   sender *absorbs* its incoming rings into this backlog without running
///   anything. That frees the rings that peers may be blocked on, so two
///   executors flooding each other through full rings still make progress
///   (DragonFly BSD's rule, "drain your own IPI queue while you wait",
///   without the recursion).
///
/// Per-sender order: the drain always empties the backlog before it reads a
/// ring again, and absorbing appends whole ring batches, so the backlog is a
/// prefix of every ring's remaining order.
///
/// Bounded: absorbing stops at `limit` messages (the executor traps then:
/// see ``CoreExecutorGroup/Configuration/mailboxBacklogLimit``). It grows by
/// doubling, so steady traffic allocates nothing.
///
/// Owner thread only (no synchronization).
struct MessageBacklog: ~Copyable {
    private var messages: UnsafeMutablePointer<MailboxMessage>
    private var senders: UnsafeMutablePointer<Int>
    private var capacity: Int
    private var head = 0
    private(set) var count = 0

    init(initialCapacity: Int) {
        var c = 64
        while c < initialCapacity { c <<= 1 }
        capacity = c
        messages = .allocate(capacity: c)
        senders = .allocate(capacity: c)
    }

    deinit {
        messages.deallocate()
        senders.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    /// Removes and returns the oldest message and its sender.
    mutating func popFirst() -> (message: MailboxMessage, sender: Int)? {
        guard count > 0 else { return nil }
        let i = head
        head = (head + 1) & (capacity - 1)
        count -= 1
        if count == 0 { head = 0 }   // keep the free space contiguous
        return (messages[i], senders[i])
    }

    /// Moves up to `max` messages from the (sender, receiver) ring of
    /// `mesh` to the end of the backlog (growing it when it is full).
    /// - Returns: how many were moved.
    mutating func receive(from mesh: MailboxMesh, sender: Int, receiver: Int, max: Int) -> Int {
        if count == capacity { grow() }
        // The contiguous free run at the tail.
        let tail = (head + count) & (capacity - 1)
        let run = Swift.min(max, tail >= head ? capacity - tail : head - tail, capacity - count)
        let n = mesh.receive(from: sender, at: receiver, into: messages + tail, max: run)
        for i in 0..<n { senders[tail + i] = sender }
        count += n
        return n
    }

    /// Doubles the capacity, keeping the order (rare: only while a sender
    /// absorbs more than the current capacity).
    private mutating func grow() {
        let newCapacity = capacity * 2
        let m = UnsafeMutablePointer<MailboxMessage>.allocate(capacity: newCapacity)
        let s = UnsafeMutablePointer<Int>.allocate(capacity: newCapacity)
        for i in 0..<count {
            let j = (head + i) & (capacity - 1)
            m[i] = messages[j]
            s[i] = senders[j]
        }
        messages.deallocate()
        senders.deallocate()
        messages = m
        senders = s
        capacity = newCapacity
        head = 0
    }
}
