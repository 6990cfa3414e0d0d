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
    /// Created, not yet bound or connected: receives nothing.
    case unbound = 0
    /// Bound to a local endpoint (``Socket/bind(_:)``): a UDP socket
    /// receives the datagrams addressed to it; a TCP socket only reserves it.
    case bound
    /// TCP, after ``Socket/listen()``: receives the segments for its
    /// endpoint that match no connection.
    case listening
    /// Connected (``Socket/connect(to:from:initialReceiveSequence:)``):
    /// receives exactly the packets of its 5-tuple.
    case connected
    /// After ``Socket/close()`` or ``Socket/closeDeferred()``: out of the
    /// tables; what arrives for it is dropped as closed.
    case closed
}

/// A UDP or TCP socket of a ``Demux``: a receive queue (a `PCQ` of
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
/// Tables and ready sets refer to sockets by ``SocketReference`` (one word,
/// not counted): the input path never retains or releases a socket. A
/// closed socket is released by its table only after a grace period, so an
/// input thread that looked it up inside a read section never touches freed
/// memory.
///
/// The class is split by side: this file holds the state, counters and
/// control operations; `Socket+Receive.swift` the reader's side;
/// `Socket+TCP.swift` the TCP lock, backlog and owed ACKs.
public final class Socket: @unchecked Sendable {
    // @unchecked Sendable: mutable state is either atomic (`stateWord`,
    // counters), guarded by `control` / the reader lock / `tcpLock` (see each
    // field), or written once before the socket is published to input
    // threads (`readySet`, `readySlot`, `worker`).

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
    /// UDP or TCP (immutable).
    public let proto: TransportProtocol
    /// The receive queue; input threads put, the single reader gets.
    @usableFromInline package let queue: PCQ<PacketRef>
    /// The ready set this socket belongs to (not retained: the set retains
    /// its members) and the slot in it; written once by
    /// ``SocketReadySet/add(_:)`` before traffic, read-only afterwards (hence
    /// no exclusivity checks).
    @exclusivity(unchecked) @usableFromInline nonisolated(unsafe) package var readySet: Unmanaged<SocketReadySet>?
    @exclusivity(unchecked) @usableFromInline nonisolated(unsafe) package var readySlot: Int = -1
    /// The CPU the reader was last seen on (noted by each receive call,
    /// stored only when it changed), against which input threads classify
    /// their enqueues as cross-core hand-offs.
    @usableFromInline package let observedReaderCPU = ObservedCPU()
    /// Parks a blocking or async reader; rung by input threads.
    @usableFromInline package let readerWakeup = ThreadParker()
    /// The worker continuation (retained; released in `deinit`), set once
    /// by ``attachWorker(on:delay:emitACK:_:)`` before traffic.
    /// Unmanaged so that the input's check and schedule cost no retain.
    @exclusivity(unchecked) @usableFromInline nonisolated(unsafe) package var worker: Unmanaged<KernelContinuation>?
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
    /// IPV6_V6ONLY for an IPv6 socket bound to the wildcard address: a
    /// stack that gives such sockets IPv4 traffic (NetStack's dual-stack
    /// lookup) must not when this is set. Written before bind, read by
    /// input threads after their lookup (the bind's table insert publishes
    /// it: release/acquire through the RCU table). The demux itself never
    /// reads it.
    package let v6Only = Atomic<Bool>(false)
    /// One word a stack above the demux may attach to a socket it looks up
    /// itself (NetStack: the member list of an SO_REUSEPORT group, on the
    /// group's anchor socket). The demux never reads it; its writer
    /// publishes with a releasing store, input threads load it acquiring
    /// after their lookup.
    package let stackWord = Atomic<UInt>(0)

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
        control.socketAllocated()
    }

    deinit {
        control.socketFreed()
        worker?.release()
        readerSide.deinitialize(count: 1)
        UnsafeMutableRawPointer(readerSide).deallocate()
    }

    /// Gives the socket a worker continuation (NetBSD's kcont): input
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
        precondition(worker == nil, "attachWorker called twice")
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
        workerDelay = delay
        worker = .passRetained(c)
    }

    /// The key of the packets a connected socket receives.
    public var receiveKey: FlowKey? {
        binding.withLock { b in
            guard let l = b.local, let r = b.remote else { return nil }
            return .connected(proto, local: l, remote: r)
        }
    }

    func cancelWorker() { _ = worker?._withUnsafeGuaranteedRef { $0.cancel() } }

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

    /// The counters now (any thread; takes the TCP lock briefly for TCP).
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
    /// Packets still queued when the socket was torn down (written by the
    /// teardown drain only).
    let drainedAtCloseCount = Atomic<Int>(0)

    // MARK: Control

    /// Binds to a local endpoint. UDP: the socket starts receiving datagrams
    /// addressed to it (the wildcard address receives for every local
    /// address without a more specific binding). TCP: reserves the endpoint
    /// for ``listen()`` or ``connect(to:from:initialReceiveSequence:)``.
    /// Any thread; takes the owning table's control lock and inserts into
    /// an RCU table (readers never wait).
    public func bind(_ local: InetEndpoint) throws(SocketError) {
        try control.bind(self, local)
    }

    /// TCP: starts receiving segments for the bound endpoint that match no
    /// connection (SYNs, in a full stack). Any thread; takes the owning
    /// table's control lock.
    public func listen() throws(SocketError) {
        try control.listen(self)
    }

    /// Connects to `remote`. The socket then receives exactly the packets of
    /// that 5-tuple. `from` gives the local endpoint (required unless the
    /// socket is bound). TCP: the connection is considered established
    /// (no handshake here); `initialReceiveSequence` is the peer's next
    /// sequence number, or nil to take it from the first segment. Any
    /// thread; TCP takes the socket's TCP lock once, then every protocol
    /// the owning table's control lock.
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

    /// Attaches to a ready set (see ``SocketReadySet/add(_:)``); the set
    /// keeps the socket alive while it is a member, not the other way round.
    func attach(readySet: SocketReadySet, slot: Int) {
        self.readySet = .passUnretained(readySet)
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
    /// A socket of this table was made (its `init`) / freed (its `deinit`):
    /// the live-socket gauge.
    func socketAllocated()
    func socketFreed()
}
