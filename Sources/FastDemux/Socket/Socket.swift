import Synchronization
import SMPPrimitives

/// Errors of the socket control operations.
public enum SocketError: Error, Equatable, Sendable {
    /// Another socket already owns this (protocol, address, port) or 5-tuple.
    case addressInUse
    /// The operation does not fit the socket's state or protocol
    /// (listen on UDP, connect a listening socket, ...).
    case invalidState
    /// The socket is closed.
    case closed
    /// The local and remote addresses are of different families.
    case familyMismatch
}

/// The life cycle of a socket.
public enum SocketState: UInt8, Sendable {
    case unbound = 0, bound, listening, connected, closed
}

/// A UDP or TCP socket of a ``Demux``: a receive queue (a ``PCQ`` of
/// packet words), a reader wake-up, per-socket counters and, for TCP, the
/// minimal receive state the fast path needs.
///
/// Control (``bind(_:)``, ``connect(to:from:initialReceiveSequence:)``,
/// ``listen()``, ``close()``) may be called from any thread at any time,
/// also while traffic flows; it serializes on the owning table's control
/// lock. ``close()`` blocks for one RCU grace period (must not be called
/// inside a read section).
///
/// Receiving is single-reader: at most one thread or task at a time may
/// call the receive methods (they take a small per-socket lock per call,
/// one per batch, which also keeps the final drain of a closed socket from
/// racing with the reader). Packets received belong to the caller (free
/// pool buffers with ``PacketPool/free(_:)`` or a ``PacketPool/Cache``).
///
/// Tables and ready sets refer to sockets as `Unmanaged` bits: the input
/// path never retains or releases a socket. A closed socket is released by
/// its table only after a grace period, so an input thread that looked it
/// up inside a read section never touches freed memory.
public final class Socket: @unchecked Sendable {
    // @unchecked Sendable: mutable state is either atomic (`stateWord`,
    // counters), guarded by `control` / the reader lock / `tcpLock` (see each
    // field), or written once before the socket is published to input
    // threads (`readySetBits`, `readySlot`, `readerCPU`).

    // Hot fields first: what an input thread reads per packet (state, queue,
    // TCP lock, ready-set slot, reader wake-up flag) sits in the first
    // lines of the object.
    @usableFromInline package let stateWord = Atomic<UInt8>(SocketState.unbound.rawValue)
    @usableFromInline let tcpLock = TCPLock()
    /// Set when the fast path could not take `tcpLock` for an ACK it owed.
    @usableFromInline package let ackOwed = Atomic<Bool>(false)
    /// The TCP receive state, inline next to its lock (the input touches
    /// these lines anyway). Only accessed while holding `tcpLock`, which
    /// orders the accesses (hence no dynamic exclusivity checks).
    @exclusivity(unchecked) @usableFromInline nonisolated(unsafe) package var tcpState = TCPReceiveState()
    public let proto: TransportProtocol
    /// The receive queue; input threads put, the single reader gets.
    @usableFromInline package let queue: PCQ<PacketRef>
    /// Unmanaged bits of the ready set this socket belongs to (0 = none) and
    /// the slot in it; written once by ``SocketReadySet/add(_:)`` before
    /// traffic, read-only afterwards (hence no exclusivity checks).
    @exclusivity(unchecked) @usableFromInline nonisolated(unsafe) package var readySetBits: UInt = 0
    @exclusivity(unchecked) @usableFromInline nonisolated(unsafe) package var readySlot: Int = -1
    /// The CPU the reader runs on, if known (for cross-core hand-off
    /// counts). Set before traffic.
    @exclusivity(unchecked) public nonisolated(unsafe) var readerCPU: Int = -1
    /// Parks a blocking or async reader; rung by input threads.
    @usableFromInline package let readerWakeup = ThreadParker()
    /// Unmanaged bits of the worker continuation (0 = none); set once by
    /// ``attachWorker(on:delay:emitACK:_:)`` before traffic.
    @exclusivity(unchecked) @usableFromInline nonisolated(unsafe) package var workerBits: UInt = 0
    @exclusivity(unchecked) @usableFromInline nonisolated(unsafe) package var workerDelay: Duration = .milliseconds(100)
    /// True from the input's schedule until the worker starts running:
    /// coalesces schedules without touching the continuation's line.
    @usableFromInline package let workerScheduled = Atomic<Bool>(false)
    /// TCP segments that arrived while another thread held `tcpLock` (the
    /// Linux socket backlog): whoever holds the lock processes them before
    /// releasing it. Consumed only under `tcpLock` (so one consumer at a time).
    @usableFromInline package let tcpBacklog: PCQ<UInt>   // capacity 1 and unused for UDP (non-optional: no retain to unwrap it)
    @usableFromInline package let ackPolicy: TCPAckPolicy
    /// A process-unique number, for logs and tests.
    public let id: Int

    // Counters. Shared writes only on rare paths (drops, wake-ups); the
    // delivered count is written by the reader under its lock (plain
    // load + store, no RMW).
    @usableFromInline package let droppedQueueFullCount = Atomic<Int>(0)
    @usableFromInline package let droppedClosedCount = Atomic<Int>(0)
    @usableFromInline package let wakeupCount = Atomic<Int>(0)

    private let control: any SocketTableControl
    /// Binding, guarded by the table's control lock (and this mutex for readers).
    private let binding = Mutex<(local: InetEndpoint?, remote: InetEndpoint?)>((nil, nil))
    /// The reader's side, in its own 128-byte block: the reader writes it
    /// on every receive call, and it must not share a cache line with the
    /// fields input threads read per packet.
    @usableFromInline package let readerSide: UnsafeMutablePointer<ReaderSide>

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

    private static let nextID = Atomic<Int>(1)

    init(proto: TransportProtocol, queueCapacity: Int, ackPolicy: TCPAckPolicy, control: any SocketTableControl) {
        self.proto = proto
        self.id = Self.nextID.add(1, ordering: .relaxed).oldValue
        self.queue = PCQ(capacity: queueCapacity)
        self.control = control
        self.ackPolicy = ackPolicy
        tcpBacklog = PCQ(capacity: proto == .tcp ? 64 : 1)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 128)
        readerSide = raw.bindMemory(to: ReaderSide.self, capacity: 1)
        readerSide.initialize(to: ReaderSide())
    }

    private nonisolated(unsafe) var worker: KernelContinuation?

    deinit {
        if workerBits != 0 { Unmanaged<KernelContinuation>.fromOpaque(UnsafeRawPointer(bitPattern: workerBits)!).release() }
        readerSide.deinitialize(count: 1)
        UnsafeMutableRawPointer(readerSide).deallocate()
    }

    /// Gives the socket a worker continuation (the seed's kcont): input
    /// threads schedule it, with `delay` of coalescing delay,
    /// after a burst put packets on this socket (with no delay when the
    /// fast path left a TCP ACK to it). The worker runs `body(socket)` on
    /// `executor`'s thread and then sends an owed ACK through `emitACK`.
    ///
    /// Call once, before traffic reaches the socket. The continuation holds
    /// the socket weakly; closing the socket cancels it.
    public func attachWorker(on executor: CoreExecutor, delay: Duration = .milliseconds(100),
                             emitACK: (@Sendable (TCPAck) -> Void)? = nil,
                             _ body: @escaping @Sendable (Socket) -> Void) {
        precondition(workerBits == 0, "attachWorker called twice")
        let c = KernelContinuation(on: executor) { [weak self] in
            guard let self else { return }
            // Clear first, then look for work: an input that put after our
            // clear sees `false` after its burst fence and schedules again
            // (the same flag/fence/re-check handshake as the reader wake-up).
            self.workerScheduled.store(false, ordering: .sequentiallyConsistent)
            body(self)
            if let emitACK, let key = self.receiveKey {
                self.sendOwedACK(key: key, emitACK)
            }
        }
        worker = c
        workerDelay = delay
        workerBits = UInt(bitPattern: Unmanaged.passRetained(c).toOpaque())
    }

    /// The key of the packets a connected socket receives.
    public var receiveKey: FlowKey? {
        binding.withLock { b in
            guard let l = b.local, let r = b.remote else { return nil }
            return .connected(proto, local: l, remote: r)
        }
    }

    func cancelWorker() { worker?.cancel() }

    // MARK: State and counters

    /// The current state (racy snapshot from other threads).
    public var state: SocketState { SocketState(rawValue: stateWord.load(ordering: .acquiring))! }

    @usableFromInline package func setState(_ s: SocketState) {
        // Release: the binding and table entries set up before are visible
        // to whoever observes the new state.
        stateWord.store(s.rawValue, ordering: .releasing)
    }

    /// Local endpoint (after bind/connect).
    public var localEndpoint: InetEndpoint? { binding.withLock { $0.local } }
    /// Remote endpoint (after connect).
    public var remoteEndpoint: InetEndpoint? { binding.withLock { $0.remote } }

    func setBinding(local: InetEndpoint?, remote: InetEndpoint?) {
        binding.withLock { $0 = (local, remote) }
    }

    /// The receive queue's capacity.
    public var queueCapacity: Int { queue.capacity }
    /// Packets waiting in the receive queue (racy snapshot).
    public var queuedCount: Int { queue.approximateCount }

    /// Per-socket counters (racy snapshot while traffic flows; exact after).
    public struct Counters: Sendable, Equatable {
        /// Packets taken by the reader.
        public var delivered: Int
        /// Packets dropped because the receive queue was full.
        public var droppedQueueFull: Int
        /// Packets dropped because the socket was closed (still queued at
        /// teardown, or arriving after close).
        public var droppedClosed: Int
        /// Reader wake-ups and readiness notifications for this socket.
        public var wakeups: Int
        /// Packets currently queued.
        public var queued: Int
        /// TCP: ACKs sent for this connection.
        public var acksSent: Int
        /// TCP: out-of-sequence segments seen.
        public var outOfSequence: Int

        /// Packets that entered the queue: delivered + queued + drained at close.
        public var enqueued: Int { delivered + queued + drainedAtClose }
        /// Part of `droppedClosed` that had been queued (vs. refused at input).
        public var drainedAtClose: Int
    }

    public var counters: Counters {
        var acks = 0, ooo = 0
        if proto == .tcp {
            withTCPState { st in
                acks = st.acksSent
                ooo = st.outOfSequence
            }
        }
        return Counters(
            delivered: readerSide.pointee.delivered.load(ordering: .relaxed),
            droppedQueueFull: droppedQueueFullCount.load(ordering: .relaxed),
            droppedClosed: droppedClosedCount.load(ordering: .relaxed),
            wakeups: wakeupCount.load(ordering: .relaxed),
            queued: queue.approximateCount,
            acksSent: acks, outOfSequence: ooo,
            drainedAtClose: drainedAtCloseCount.load(ordering: .relaxed))
    }
    private let drainedAtCloseCount = Atomic<Int>(0)

    // MARK: Control

    /// Binds to a local endpoint. UDP: the socket starts receiving datagrams
    /// addressed to it (the wildcard address receives for every local
    /// address without a more specific binding). TCP: reserves the endpoint
    /// for ``listen()`` or ``connect(to:from:initialReceiveSequence:)``.
    public func bind(_ local: InetEndpoint) throws(SocketError) {
        try control.bind(self, local)
    }

    /// TCP: starts receiving segments for the bound endpoint that match no
    /// connection (SYNs, in a full stack).
    public func listen() throws(SocketError) {
        try control.listen(self)
    }

    /// Connects to `remote`. The socket then receives exactly the packets of
    /// that 5-tuple. `from` gives the local endpoint (required unless the
    /// socket is bound). TCP: the connection is considered established
    /// (no handshake here); `initialReceiveSequence` is the peer's next
    /// sequence number, or nil to take it from the first segment.
    public func connect(to remote: InetEndpoint, from local: InetEndpoint? = nil,
                        initialReceiveSequence: UInt32? = nil) throws(SocketError) {
        if proto == .tcp {
            withTCPState { st in
                if let isn = initialReceiveSequence {
                    st.nextExpected = isn
                    st.synchronized = true
                }
            }
        }
        try control.connect(self, remote: remote, local: local)
    }

    /// Closes the socket: removes it from the tables, wakes its reader, waits
    /// one RCU grace period, then returns every packet still queued to the
    /// pool (counted as dropped, reason `socket_closed`). Idempotent; any
    /// thread, never inside a read section.
    public func close() {
        control.close(self)
    }

    /// Closes the socket without waiting: the teardown (drain to the pool,
    /// release) runs on liburcu's call_rcu thread after the grace period.
    /// Never blocks; may be called from any registered or unregistered
    /// thread outside a read section.
    public func closeDeferred() {
        control.closeDeferred(self)
    }

    // MARK: Receiving (single reader)

    @inlinable
    var isClosed: Bool { stateWord.load(ordering: .acquiring) == SocketState.closed.rawValue }

    /// Takes up to `maxCount` packets without blocking; returns how many.
    /// One uncontended CAS per call (the reader lock), no allocation.
    @inlinable
    @discardableResult
    public func receive(upTo maxCount: Int, _ body: (PacketRef) throws -> Void) rethrows -> Int {
        lockReaderSide()
        defer { unlockReaderSide() }
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
        while true {
            let n = try receive(upTo: maxCount, body)
            if n > 0 { return n }
            if isClosed { return 0 }
            readerWakeup.prepareToPark()
            // Re-check after announcing (see ThreadParker): either we see the
            // packet or the input thread sees the announcement.
            if queue.approximateCount > 0 || isClosed {
                readerWakeup.cancelPark()
                continue
            }
            readerWakeup.park()
        }
    }

    /// Takes one packet, suspending while the queue is empty; nil once the
    /// socket is closed and its queue empty. Never call it while holding an
    /// RCU read section.
    public func receiveAsync() async -> PacketRef? {
        while true {
            if let p = tryReceive() { return p }
            if isClosed { return nil }
            readerWakeup.prepareToPark()
            if queue.approximateCount > 0 || isClosed {
                readerWakeup.cancelPark()
                continue
            }
            await readerWakeup.parkAsync()
        }
    }

    /// The received packets as an `AsyncSequence` that ends when the socket
    /// is closed and drained. Single reader: iterate it from one task.
    public var packets: Packets { Packets(socket: self) }

    public struct Packets: AsyncSequence, Sendable {
        public typealias Element = PacketRef
        let socket: Socket

        public struct AsyncIterator: AsyncIteratorProtocol {
            let socket: Socket
            public mutating func next() async -> PacketRef? { await socket.receiveAsync() }
        }

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(socket: socket) }
    }

    // MARK: Teardown (after the grace period)

    /// Drains what is left after a grace period: no input thread can still
    /// hold this socket, and the reader lock excludes the reader.
    func drainAtTeardown(pool: PacketPool?) -> Int {
        lockReaderSide()
        defer { unlockReaderSide() }
        do {
            var n = 0
            while let p = queue.get() {
                pool?.free(p)
                n += 1
            }
            if n > 0 {
                droppedClosedCount.add(n, ordering: .relaxed)
                drainedAtCloseCount.add(n, ordering: .relaxed)
            }
            return n
        }
    }

    /// Wakes a parked reader so it observes `closed`, and withdraws a
    /// pending worker run.
    func wakeReaderForClose() {
        readerWakeup.ringAlways()
        cancelWorker()
    }

    // MARK: TCP (reader / worker side)

    /// Packs a segment for the backlog: sequence, payload length (≤ 65535)
    /// and flags in one word.
    @inlinable
    static func backlogWord(_ seg: TCPSegmentInfo, payloadLength: Int) -> UInt {
        UInt(seg.sequenceNumber) << 32 | UInt(min(payloadLength, 0xffff)) << 16 | UInt(seg.flags.rawValue)
    }

    /// Under `tcpLock`: runs the announced backlogged segments through the
    /// receive state; returns true if one of them wants an ACK now.
    @inlinable
    func processBacklogLocked() -> Bool {
        let announced = tcpLock.backlogged
        guard announced > 0 else { return false }
        var due = false
        // Only announced segments: their puts happen-before the announcement.
        let n = tcpBacklog.drain(max: announced) { w in
            let seg = TCPSegmentInfo(sequenceNumber: UInt32(truncatingIfNeeded: w >> 32), acknowledgmentNumber: 0,
                                     flags: TCPFlags(rawValue: UInt16(truncatingIfNeeded: w)), window: 0)
            if tcpState.receive(seg, payloadLength: Int((w >> 16) & 0xffff), policy: ackPolicy).ackNow { due = true }
        }
        tcpLock.consumedBacklogged(n)
        return due
    }

    /// Releases `tcpLock`, first processing every segment announced in the
    /// backlog (the release CAS fails while any is announced). `ackDue` says
    /// an ACK is already due. With `sendNow`, a due ACK is recorded as sent
    /// and its number returned; otherwise it is left to the worker
    /// (`ackOwed`).
    @inlinable
    func releaseTCPLock(ackDue: Bool, sendNow: Bool) -> UInt32? {
        var due = ackDue
        var ack: UInt32?
        while true {
            if processBacklogLocked() { due = true }
            if due {
                if sendNow {
                    tcpState.didSendAck()
                    ack = tcpState.nextExpected
                } else {
                    ackOwed.store(true, ordering: .relaxed)
                }
                due = false
            }
            if tcpLock.tryUnlock() { return ack }
            spinLoopHint()   // an announced segment may still be on its way into the queue
        }
    }

    /// Sends the ACK the fast path left to the worker (its try-lock failed
    /// and the lock holder could not send), through `emit`. Returns true if
    /// an ACK was sent. Any thread (takes the TCP lock, spinning briefly).
    @discardableResult
    public func sendOwedACK(key: FlowKey, _ emit: (TCPAck) -> Void) -> Bool {
        guard proto == .tcp else { return false }
        let owed = ackOwed.load(ordering: .relaxed) && ackOwed.exchange(false, ordering: .acquiring)
        guard owed || tcpLock.backlogged > 0 else { return false }
        tcpLock.lock()
        let due = processBacklogLocked() || owed
        if let ack = releaseTCPLock(ackDue: due, sendNow: true) {
            emit(TCPAck(key: key, ackNumber: ack, duplicate: false))
            return true
        }
        return false
    }

    /// Runs `body` on the TCP receive state under the TCP lock (tests,
    /// worker). Spins while an input thread holds it (a few instructions).
    /// Segments backlogged meanwhile are processed on release; an ACK they
    /// need is left to the worker (``owesACK``).
    @discardableResult
    public func withTCPState<R>(_ body: (inout TCPReceiveState) throws -> R) rethrows -> R {
        tcpLock.lock()
        defer {
            _ = releaseTCPLock(ackDue: false, sendNow: false)
            if ackOwed.load(ordering: .relaxed) { scheduleWorkerNow() }
        }
        return try body(&tcpState)
    }

    /// Schedules the worker without delay (control path).
    func scheduleWorkerNow() {
        guard let worker else { return }
        workerScheduled.store(true, ordering: .relaxed)
        worker.schedule()
    }

    /// Whether the fast path left an ACK to the worker.
    public var owesACK: Bool { ackOwed.load(ordering: .relaxed) }

    /// Attaches to a ready set (see ``SocketReadySet/add(_:)``).
    func attach(readySet: SocketReadySet, slot: Int) {
        readySetBits = UInt(bitPattern: Unmanaged.passUnretained(readySet).toOpaque())
        readySlot = slot
    }
}

/// The control operations a socket delegates to the table that owns it.
protocol SocketTableControl: AnyObject, Sendable {
    func bind(_ s: Socket, _ local: InetEndpoint) throws(SocketError)
    func listen(_ s: Socket) throws(SocketError)
    func connect(_ s: Socket, remote: InetEndpoint, local: InetEndpoint?) throws(SocketError)
    func close(_ s: Socket)
    func closeDeferred(_ s: Socket)
}
