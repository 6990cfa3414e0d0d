import Glibc
import Synchronization
import SMPPrimitives

// The reader's side of a socket: single-reader receive calls (non-blocking,
// blocking, batch, async) and the final drain after a close.
extension Socket {
    /// Reader-owned words: a tiny lock that makes receive calls and the
    /// final drain of a closed socket mutually exclusive (one CAS and one
    /// store per call, uncontended), and the delivered count.
    @usableFromInline
    package struct ReaderSide: ~Copyable {
        @usableFromInline let busy = Atomic<Bool>(false)
        @usableFromInline package let delivered = Atomic<Int>(0)
        init() {}
    }

    /// Takes the reader lock (spinning: the other holder is a receive call
    /// or the teardown drain, both short).
    @inlinable
    func lockReaderSide() {
        // Acquire: the previous holder's queue consumption happens-before ours.
        while !readerSide.pointee.busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
            spinLoopHint()
        }
    }

    @inlinable
    func unlockReaderSide() { readerSide.pointee.busy.store(false, ordering: .releasing) }

    @inlinable
    var isClosed: Bool { stateWord.load(ordering: .acquiring) == SocketState.closed.rawValue }

    /// Takes up to `maxCount` packets without blocking; returns how many.
    /// One uncontended CAS per call (the reader lock), one `sched_getcpu`
    /// (the reader's CPU for the inputs' cross-core hand-off count; a store
    /// only when it changed), no allocation.
    @inlinable
    @discardableResult
    public func receive(upTo maxCount: Int, _ body: (PacketRef) throws -> Void) rethrows -> Int {
        lockReaderSide()
        defer { unlockReaderSide() }
        observedReaderCPU.noteCurrentCPU()
        let n = try queue.drain(max: maxCount, body)
        if n > 0 {
            // Single writer (under the reader lock): load + store, no RMW.
            let d = readerSide.pointee.delivered.load(ordering: .relaxed)
            readerSide.pointee.delivered.store(d &+ n, ordering: .relaxed)
        }
        return n
    }

    /// Takes one packet without blocking; nil if the queue is empty.
    public func tryReceive() -> PacketRef? {
        var p: PacketRef?
        receive(upTo: 1) { p = $0 }
        return p
    }

    /// Takes one packet, blocking while the queue is empty; nil once the
    /// socket is closed and its queue empty.
    public func receive() -> PacketRef? {
        var p: PacketRef?
        receiveBlocking(upTo: 1) { p = $0 }
        return p
    }

    /// Takes up to `maxCount` packets, blocking until at least one is there;
    /// returns 0 only once the socket is closed and its queue empty.
    @discardableResult
    public func receiveBlocking(upTo maxCount: Int, _ body: (PacketRef) throws -> Void) rethrows -> Int {
        rcuCheckMayBlock("Socket.receiveBlocking")
        var misses = 0
        while true {
            let n = try receive(upTo: maxCount, body)
            if n > 0 { return n }
            if isClosed { return 0 }
            if announcePark() {
                readerWakeup.park()
            } else {
                // The re-check saw a reserved ticket whose packet is not
                // published yet (its producer may be preempted between
                // reserving and publishing): yield rather than spin hot.
                misses += 1
                if misses & 15 == 0 { sched_yield() } else { spinLoopHint() }
            }
        }
    }

    /// Takes one packet, suspending while the queue is empty; nil once the
    /// socket is closed and its queue empty. Never call it while holding an
    /// RCU read section.
    public func receiveAsync() async -> PacketRef? {
        while true {
            if let p = tryReceive() { return p }
            if isClosed { return nil }
            if announcePark() { await readerWakeup.parkAsync() }
        }
    }

    /// The reader found the queue empty: announces that it parks, then
    /// re-checks (see `ThreadParker`): either it sees a packet (or the
    /// close) that arrived meanwhile, withdraws and returns false, or the
    /// input thread's check after its fence sees the announcement and rings.
    ///
    /// Why this holds in the C++/Swift memory model, not only on x86: the
    /// reader does `armed = 1` (relaxed), a seq_cst fence X, then loads the
    /// queue's tail and the socket state. The input path does its PCQ put
    /// (the tail CAS) or the close (the state store), then a seq_cst fence
    /// Y (``SocketDelivery``'s per-batch fence, or `ringAlways`), then loads
    /// `armed`. X and Y are ordered in the single total order S. If X comes
    /// first, the input path's load of `armed`, sequenced after Y, must see
    /// the reader's store or a later one ([atomics.fences]: a store before a
    /// seq_cst fence is visible to a load after a later seq_cst fence), so
    /// it rings. If Y comes first, the reader's re-check, after X, sees the
    /// new tail or the closed state by the same rule, and does not sleep.
    /// Both cannot miss. The re-check reads the tail, which the producer
    /// advances when it *reserves*, before it publishes the packet; a reader
    /// that sees a reserved but unpublished ticket retries (it does not
    /// sleep), see `receiveBlocking`.
    func announcePark() -> Bool {
        readerWakeup.prepareToPark()
        if queue.approximateCount > 0 || isClosed {
            readerWakeup.cancelPark()
            return false
        }
        return true
    }

    /// The received packets as an `AsyncSequence` that ends when the socket
    /// is closed and drained. Single reader: iterate it from one task.
    public var packets: Packets { Packets(socket: self) }

    /// The `AsyncSequence` of ``Socket/packets``: each `next()` is a
    /// ``Socket/receiveAsync()``. Single reader (one iterating task).
    public struct Packets: AsyncSequence, Sendable {
        /// The packet words the socket received, in arrival order per input.
        public typealias Element = PacketRef
        let socket: Socket

        /// The iterator of ``Socket/Packets``. Single reader: use it from one
        /// task.
        public struct AsyncIterator: AsyncIteratorProtocol {
            let socket: Socket
            /// The next packet (``Socket/receiveAsync()``): suspends while the
            /// queue is empty, nil once the socket is closed and drained. The
            /// caller owns the returned buffer and frees it to its pool.
            public mutating func next() async -> PacketRef? { await socket.receiveAsync() }
        }

        /// An iterator over the socket's packets. Make one per socket: a second
        /// concurrent iterator would break the single-reader contract.
        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(socket: socket) }
    }

    // MARK: Teardown (after the grace period)

    /// Drains what is left after a grace period: no input thread can still
    /// hold this socket, and the reader lock excludes the reader.
    func drainAtTeardown(pool: PacketPool?, release: (@Sendable (PacketRef) -> Void)? = nil) -> Int {
        lockReaderSide()
        defer { unlockReaderSide() }
        var n = 0
        while let p = queue.get() {
            if let release { release(p) } else { pool?.free(p) }
            n += 1
        }
        if n > 0 {
            droppedClosedCount.add(n, ordering: .relaxed)
            drainedAtCloseCount.add(n, ordering: .relaxed)
        }
        return n
    }

    /// Wakes a parked reader so it observes `closed`, and withdraws a
    /// pending worker run.
    func wakeReaderForClose() {
        readerWakeup.ringAlways()
        cancelWorker()
    }
}
