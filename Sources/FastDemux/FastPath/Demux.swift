import Synchronization
import SMPPrimitives

/// The fast protocol and port demultiplexer (NetBSD "fast protocol and port
/// demultiplexing", seeds/004): input threads look the socket up inside an
/// RCU read section without locking it, put the packet on the socket's
/// receive PCQ, schedule the socket's worker (coalesced), wake the reader
/// only if it is parked, and ACK in-sequence TCP segments from the input
/// path when the socket's TCP state can be try-locked.
///
/// ## Using it (e.g. from a pcap replay, a TUN device, a generator)
///
///     let pool = PacketPool(bufferCount: 65_536)             // 2 KiB buffers
///     let demux = Demux<QSBR>(configuration: .init(pool: pool))
///
///     // Sockets (any thread, also while traffic flows):
///     let dns = demux.makeSocket(.udp)
///     try dns.bind(InetEndpoint(IPAddress(ipv4: 0), 53))     // wildcard
///     let web = demux.makeSocket(.tcp)
///     try web.bind(InetEndpoint(IPAddress("10.0.0.1")!, 80)); try web.listen()
///     let conn = demux.makeSocket(.tcp)
///     try conn.connect(to: InetEndpoint(IPAddress("192.0.2.7")!, 40000),
///                      from: InetEndpoint(IPAddress("10.0.0.1")!, 80))
///
///     // Optional: one reader for many sockets (an epoll in miniature).
///     let ready = SocketReadySet(capacity: 1024); ready.add(dns); ready.add(conn)
///
///     // Input thread (a dedicated thread, registered with QSBR):
///     QSBR.registerThread()
///     let input = demux.makeInput(cpu: 0, ackSink: { acks in /* send them */ })
///     var cache = PacketPool.Cache(pool: pool)
///     let parser = PacketParser()
///     while running {
///         input.burst { b in                                  // one read section
///             for _ in 0..<32 {
///                 guard let p = cache.allocate() else { break }
///                 let n = readFrame(into: pool.buffer(p)); pool.setLength(n, of: p)
///                 if b.input(p, frame: pool.bytes(p), parser: parser) != .queued {
///                     cache.free(p)                           // dropped: counted by reason
///                 }
///             }
///         }                                                   // readiness, ACKs published
///         input.quiescent()                                   // QSBR: between bursts
///     }
///     QSBR.unregisterThread()
///     let stats = input.stats                                  // after the thread stopped
///
///     // Reader (single reader per socket): blocking, non-blocking, batch, async.
///     while let p = dns.receive() { handle(pool.bytes(p)); pool.free(p) }
///     for await p in conn.packets { ... }
///
///     dns.close()            // one grace period; queued packets back to the pool
///
/// `DemuxInput.deliver(_:key:tcp:payloadLength:)` is the parser-free entry
/// (a `FlowKey` from elsewhere); `drop(_:)` / `drop(parseReason:)` count
/// packets rejected before lookup, so that for every input
/// `stats.offered == stats.enqueued + stats.drops.total`. Packets still
/// queued at close are counted per socket (`counters.droppedClosed`) and in
/// `table.packetsDrainedAtTeardown`.
///
/// Concurrency contract: ``makeSocket(_:queueCapacity:)`` and the socket
/// control operations from any thread; each ``DemuxInput`` from exactly one
/// thread (registered with `Flavor`; QSBR threads call
/// ``DemuxInput/quiescent()`` between bursts and go offline before
/// blocking); per-flow order holds when each flow enters through one input
/// (RSS-style steering), which the TCP state also assumes.
public final class Demux<Flavor: RCUFlavor>: @unchecked Sendable {
    // @unchecked Sendable: immutable after init; the table is thread-safe.

    public struct Configuration: Sendable {
        /// Receive-queue capacity of new sockets (full = drop, counted).
        public var queueCapacity: Int = 256
        /// When the fast path ACKs TCP segments.
        public var ackPolicy: TCPAckPolicy = .default
        /// Where packets still queued in closed sockets are returned.
        public var pool: PacketPool?
        /// Record the receive-queue depth after every `n`-th successful put
        /// (reading the depth touches the reader's index line, so it is
        /// sampled). 0 disables depth sampling.
        public var depthSampleInterval: Int = 64
        /// Expected number of connections (initial table size).
        public var expectedConnections: Int = 4096

        public init(queueCapacity: Int = 256, ackPolicy: TCPAckPolicy = .default, pool: PacketPool? = nil,
                    depthSampleInterval: Int = 64, expectedConnections: Int = 4096) {
            self.queueCapacity = queueCapacity
            self.ackPolicy = ackPolicy
            self.pool = pool
            self.depthSampleInterval = depthSampleInterval
            self.expectedConnections = expectedConnections
        }
    }

    public let configuration: Configuration
    public let table: PCBTable<Flavor>

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        table = PCBTable(expectedConnections: configuration.expectedConnections, pool: configuration.pool)
    }

    /// Waits until every deferred close (``Socket/closeDeferred()``) issued
    /// before has finished its teardown (`rcu_barrier`). Not inside a read
    /// section.
    public func barrier() { Flavor.barrier() }

    /// A new, unbound socket.
    public func makeSocket(_ proto: TransportProtocol, queueCapacity: Int? = nil) -> Socket {
        Socket(proto: proto, queueCapacity: queueCapacity ?? configuration.queueCapacity,
               ackPolicy: configuration.ackPolicy, control: table)
    }

    /// An input context for one input thread.
    /// - Parameters:
    ///   - cpu: the CPU the input thread runs on, if pinned (used to count
    ///     cross-core hand-offs against ``Socket/readerCPU``).
    ///   - ackSink: receives the ACKs decided on the fast path, once per
    ///     burst, as a buffer valid only during the call.
    public func makeInput(cpu: Int? = nil, ackSink: (@Sendable (UnsafeBufferPointer<TCPAck>) -> Void)? = nil)
        -> DemuxInput<Flavor>
    {
        DemuxInput(demux: self, cpu: cpu ?? -1, ackSink: ackSink)
    }
}

/// A parsed packet for ``DemuxInput/deliver(batch:onDrop:)``.
@frozen
public struct DemuxPacket: Sendable, BitwiseCopyable {
    public var packet: PacketRef
    public var key: FlowKey
    public var tcp: TCPSegmentInfo?
    public var payloadLength: Int

    @inlinable
    public init(packet: PacketRef, key: FlowKey, tcp: TCPSegmentInfo? = nil, payloadLength: Int = 0) {
        self.packet = packet
        self.key = key
        self.tcp = tcp
        self.payloadLength = payloadLength
    }
}

/// What happened to a delivered packet.
public enum DemuxVerdict: Sendable, Equatable {
    case queued
    case dropped(DemuxDropReason)
}

/// The per-input-thread side of a ``Demux``: statistics owned by the thread,
/// the list of sockets touched in the current burst, the ACKs to emit.
///
/// Concurrency contract: one thread only (it is not `Sendable`-safe to share;
/// hand it to its thread at start and read ``stats`` after that thread stops).
public final class DemuxInput<Flavor: RCUFlavor>: @unchecked Sendable {
    // @unchecked Sendable: created on one thread and then owned by the input
    // thread it is handed to; nothing in it is shared while in use (hence
    // also `@exclusivity(unchecked)`: its vars have a single user).

    public static var burstCapacity: Int { 64 }

    @usableFromInline let table: PCBTable<Flavor>
    @usableFromInline let depthSampleInterval: Int
    @usableFromInline let cpu: Int
    /// A no-op when none was given (non-optional: no retain to unwrap it).
    @usableFromInline let ackSink: @Sendable (UnsafeBufferPointer<TCPAck>) -> Void
    /// Sockets (Unmanaged bits) that got packets in this burst, deduplicated
    /// against the previous entry, with the run length of each.
    @usableFromInline let touched: UnsafeMutablePointer<UInt>
    @usableFromInline let touchedRuns: UnsafeMutablePointer<Int>
    @exclusivity(unchecked) @usableFromInline var touchedCount = 0
    @usableFromInline let acks: UnsafeMutablePointer<TCPAck>
    @exclusivity(unchecked) @usableFromInline var ackCount = 0
    @exclusivity(unchecked) @usableFromInline var untilDepthSample: Int
    @exclusivity(unchecked) @usableFromInline var inBurst = false
    /// Socket bits resolved by the first pass of ``deliver(batch:onDrop:)``.
    @usableFromInline let resolved: UnsafeMutablePointer<UInt>
    /// Keeps the warming loads of ``deliver(batch:onDrop:)`` from being
    /// optimized away.
    @exclusivity(unchecked) @usableFromInline var warmSink: UInt = 0

    /// This thread's statistics (plain counters). Owned by the input
    /// thread: no dynamic exclusivity checks on the hot path.
    @exclusivity(unchecked) public var stats = DemuxStats()

    init(demux: Demux<Flavor>, cpu: Int, ackSink: (@Sendable (UnsafeBufferPointer<TCPAck>) -> Void)?) {
        table = demux.table
        depthSampleInterval = demux.configuration.depthSampleInterval
        untilDepthSample = max(1, depthSampleInterval)
        self.cpu = cpu
        self.ackSink = ackSink ?? { _ in }
        touched = .allocate(capacity: Self.burstCapacity)
        touchedRuns = .allocate(capacity: Self.burstCapacity)
        acks = .allocate(capacity: Self.burstCapacity)
        resolved = .allocate(capacity: Self.burstCapacity)
    }

    deinit {
        touched.deallocate()
        touchedRuns.deallocate()
        acks.deallocate()
        resolved.deallocate()
    }

    /// Runs one burst: enters a read section, runs `body` (which calls
    /// ``deliver(_:key:tcp:)`` / ``drop(_:)`` per packet), publishes readiness
    /// of the touched sockets and hands the burst's ACKs to the sink, then
    /// leaves the read section. Readiness is published inside the section
    /// so the touched sockets cannot be freed meanwhile.
    @inlinable
    public func burst<R>(_ body: (DemuxInput<Flavor>) throws -> R) rethrows -> R {
        Flavor.readLock()
        inBurst = true
        stats.readSections &+= 1
        defer {
            flush()
            inBurst = false
            Flavor.readUnlock()
        }
        return try body(self)
    }

    /// QSBR: reports a quiescent state (call between bursts, every few
    /// hundred packets to a few milliseconds). No-op for other flavours.
    @inlinable
    public func quiescent() {
        if Flavor.self == QSBR.self { QSBR.quiescentState() }
    }

    /// Counts a packet the caller drops before lookup.
    @inlinable
    public func drop(_ reason: DemuxDropReason) {
        stats.offered &+= 1
        stats.drops.record(reason)
    }

    /// Counts a packet the parser rejected (under `malformed` or
    /// `unsupported`, and per parser reason).
    @inlinable
    public func drop(parseReason: DropReason) {
        stats.parseDrops[Int(parseReason.rawValue)] &+= 1
        drop(DemuxDropReason(parseReason))
    }

    /// Parses `frame` and delivers it (must run inside ``burst(_:)``).
    /// `packet` is the word the socket's reader will receive for this frame.
    @inlinable
    @discardableResult
    public func input(_ packet: PacketRef, frame: UnsafeRawBufferPointer, parser: PacketParser,
                      linkType: LinkType = .ethernet) -> DemuxVerdict {
        switch parser.parse(frame, linkType: linkType) {
        case .packet(let p):
            return deliver(packet, key: p.flow, tcp: p.tcp, payloadLength: p.payloadLength)
        case .dropped(let r):
            drop(parseReason: r)
            return .dropped(DemuxDropReason(r))
        }
    }

    /// The fast path for one parsed packet. Must run inside ``burst(_:)``.
    ///
    /// Per packet: 1–3 hash lookups (no lock, no shared write), one PCQ put
    /// (one atomic RMW inside the queue), and for TCP one try-lock CAS on a
    /// line the input thread normally owns. No allocation, no retain.
    @inlinable
    @discardableResult
    public func deliver(_ packet: PacketRef, key: FlowKey, tcp: TCPSegmentInfo? = nil, payloadLength: Int = 0)
        -> DemuxVerdict
    {
        assert(inBurst, "deliver outside of burst { }")
        stats.offered &+= 1
        guard let bits = table.lookup(key) else {
            stats.drops.record(.noSocket)
            return .dropped(.noSocket)
        }
        // No retain: the table's reference keeps the socket alive until a
        // grace period after its removal, and we are inside a read section.
        return Unmanaged<Socket>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!)._withUnsafeGuaranteedRef { s in
            enqueue(packet, to: s, bits: bits, key: key, tcp: tcp, payloadLength: payloadLength)
        }
    }

    @inlinable
    func enqueue(_ packet: PacketRef, to s: Socket, bits: UInt, key: FlowKey, tcp: TCPSegmentInfo?,
                 payloadLength: Int) -> DemuxVerdict {
        // Not locking the socket (the seed): its state word is read relaxed;
        // a close racing with us is caught by the teardown drain.
        if s.stateWord.load(ordering: .relaxed) == SocketState.closed.rawValue {
            stats.drops.record(.socketClosed)
            s.droppedClosedCount.add(1, ordering: .relaxed)
            stats.sync.atomicRMWs &+= 1
            return .dropped(.socketClosed)
        }
        stats.socketQueue.queueOps &+= 1
        stats.sync.atomicRMWs &+= 1    // the PCQ put's reservation
        guard s.queue.put(packet) else {
            stats.drops.record(.queueFull)
            s.droppedQueueFullCount.add(1, ordering: .relaxed)
            stats.sync.atomicRMWs &+= 1
            return .dropped(.queueFull)
        }
        stats.enqueued &+= 1
        if s.readerCPU != cpu { stats.sync.crossCoreHandoffs &+= 1 }
        if depthSampleInterval > 0 {
            untilDepthSample &-= 1
            if untilDepthSample == 0 {
                untilDepthSample = depthSampleInterval
                stats.socketQueue.recordDepth(s.queue.approximateCount)
            }
        }
        // Remember the socket for the readiness pass at the end of the burst.
        if touchedCount > 0 && touched[touchedCount &- 1] == bits {
            touchedRuns[touchedCount &- 1] &+= 1
        } else {
            if touchedCount == DemuxInput.burstCapacity { flush() }
            touched[touchedCount] = bits
            touchedRuns[touchedCount] = 1
            touchedCount &+= 1
        }
        if let tcp, s.proto == .tcp { tcpInput(s, key: key, seg: tcp, payloadLength: payloadLength) }
        return .queued
    }

    /// Delivers a batch of parsed packets (any number; processed in chunks
    /// of ``burstCapacity``) with
    /// the same result as calling ``deliver(_:key:tcp:payloadLength:)`` for
    /// each in order, but in three passes: look up every key, then touch
    /// every socket and its queue, then enqueue. The passes have no
    /// dependencies between packets, so the processor overlaps their cache
    /// misses (the node, the socket, the queue) instead of paying them one
    /// after the other. Must run inside ``burst(_:)``. `onDrop(i, reason)`
    /// is called for each packet not queued (free its buffer there).
    @inlinable
    public func deliver(batch: UnsafeBufferPointer<DemuxPacket>, onDrop: (Int, DemuxDropReason) -> Void) {
        assert(inBurst, "deliver outside of burst { }")
        var start = 0
        while start < batch.count {
            let n = Swift.min(batch.count - start, DemuxInput.burstCapacity)
            deliverChunk(UnsafeBufferPointer(rebasing: batch[start..<(start + n)]), first: start, onDrop: onDrop)
            start += n
        }
    }

    @inlinable
    func deliverChunk(_ batch: UnsafeBufferPointer<DemuxPacket>, first: Int, onDrop: (Int, DemuxDropReason) -> Void) {
        let n = batch.count
        // Pass 1: every lookup (independent: their node misses overlap).
        for i in 0..<n { resolved[i] = table.lookup(batch[i].key) ?? 0 }
        // Pass 2: touch each socket's hot line and its queue object.
        var sink: UInt = 0
        for i in 0..<n where resolved[i] != 0 {
            Unmanaged<Socket>.fromOpaque(UnsafeRawPointer(bitPattern: resolved[i])!)._withUnsafeGuaranteedRef { s in
                sink &+= UInt(s.stateWord.load(ordering: .relaxed)) &+ UInt(s.queue.capacity)
            }
        }
        warmSink &+= sink
        // Pass 3: enqueue in arrival order (per-flow order kept).
        for i in 0..<n {
            let p = batch[i]
            stats.offered &+= 1
            let bits = resolved[i]
            guard bits != 0 else {
                stats.drops.record(.noSocket)
                onDrop(first + i, .noSocket)
                continue
            }
            let v = Unmanaged<Socket>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!)._withUnsafeGuaranteedRef { s in
                enqueue(p.packet, to: s, bits: bits, key: p.key, tcp: p.tcp, payloadLength: p.payloadLength)
            }
            if case .dropped(let r) = v { onDrop(first + i, r) }
        }
    }

    /// TCP: in-sequence bookkeeping and the immediate ACK via try-lock.
    /// If another thread holds the TCP state, the segment goes to the
    /// socket's backlog, which the holder processes before releasing (the
    /// input never waits).
    @inlinable
    func tcpInput(_ s: Socket, key: FlowKey, seg: TCPSegmentInfo, payloadLength: Int) {
        guard s.stateWord.load(ordering: .relaxed) == SocketState.connected.rawValue else { return }
        stats.sync.atomicRMWs &+= 1
        var inSequence = true
        var ack: UInt32?
        if s.tcpLock.tryLock() {
            stats.sync.lockAcquisitions &+= 1
            let r = s.tcpState.receive(seg, payloadLength: payloadLength, policy: s.ackPolicy)
            inSequence = r.inSequence
            stats.sync.atomicRMWs &+= 1    // the release CAS
            ack = s.releaseTCPLock(ackDue: r.ackNow, sendNow: true)
        } else {
            stats.sync.contendedAcquisitions &+= 1
            stats.sync.atomicRMWs &+= 2    // the backlog put, the announcement
            guard s.tcpBacklog.put(Socket.backlogWord(seg, payloadLength: payloadLength)) else {
                stats.tcpBacklogOverflows &+= 1
                return
            }
            // Announce it in the lock word: the holder cannot release before
            // it has processed it. If the holder released just before, take
            // the lock ourselves and process the backlog.
            if s.tcpLock.announceBacklogged() && s.tcpLock.tryLock() {
                stats.sync.atomicRMWs &+= 1
                stats.sync.lockAcquisitions &+= 1
                ack = s.releaseTCPLock(ackDue: false, sendNow: true)
            } else {
                stats.deferredACKs &+= 1
            }
        }
        if !inSequence { stats.outOfSequence &+= 1 }
        if let ack {
            stats.immediateACKs &+= 1
            if ackCount == DemuxInput.burstCapacity { flushACKs() }
            acks[ackCount] = TCPAck(key: key, ackNumber: ack, duplicate: !inSequence)
            ackCount &+= 1
        }
    }

    /// Publishes readiness for the sockets touched so far and emits the
    /// pending ACKs. Called by ``burst(_:)``; inside a read section.
    @inlinable
    public func flush() {
        if touchedCount > 0 { publishReadiness() }
        if ackCount > 0 { flushACKs() }
    }

    @inlinable
    func flushACKs() {
        ackSink(UnsafeBufferPointer(start: acks, count: ackCount))
        ackCount = 0
    }

    @inlinable
    func publishReadiness() {
        // One full fence per burst: orders every PCQ put of the burst
        // (stores) before the loads of readiness bits and doorbell flags
        // below (StoreLoad). Pairs with the reader's fence between its
        // "armed" store and its re-check of the queue (ThreadParker's protocol).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        var lastSet: UInt = 0
        for i in 0..<touchedCount {
            let bits = touched[i]
            stats.socketQueue.batchSizes.record(touchedRuns[i])
            Unmanaged<Socket>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!)._withUnsafeGuaranteedRef { s in
                if s.readySetBits != 0 {
                    Unmanaged<SocketReadySet>.fromOpaque(UnsafeRawPointer(bitPattern: s.readySetBits)!)
                        ._withUnsafeGuaranteedRef { set in
                            if set.markReady(slot: s.readySlot) {
                                stats.sync.atomicRMWs &+= 1
                                stats.sync.wakeups &+= 1
                            }
                        }
                    lastSet = s.readySetBits
                }
                if s.workerBits != 0 && !s.workerScheduled.load(ordering: .relaxed) {
                    scheduleWorker(s)
                }
                if s.readerWakeup.isArmed {
                    if s.readerWakeup.ring() {
                        stats.sync.atomicRMWs &+= 1
                        stats.sync.lockAcquisitions &+= 1
                        stats.sync.wakeups &+= 1
                        stats.sync.threadWakeups &+= 1
                        s.wakeupCount.add(1, ordering: .relaxed)
                    }
                }
            }
            // Ring a ready set's reader once per run of sockets of that set.
            if lastSet != 0 && (i + 1 == touchedCount || !sameSet(touched[i + 1], lastSet)) {
                ringSet(lastSet)
                lastSet = 0
            }
        }
        touchedCount = 0
    }

    /// The seed's `kcont_schedule` with a small delay, coalesced by the
    /// socket's `workerScheduled` flag (checked after the burst's fence).
    @inlinable
    func scheduleWorker(_ s: Socket) {
        s.workerScheduled.store(true, ordering: .relaxed)
        let delay: Duration = s.ackOwed.load(ordering: .relaxed) || s.tcpLock.backlogged > 0 ? .zero : s.workerDelay
        Unmanaged<KernelContinuation>.fromOpaque(UnsafeRawPointer(bitPattern: s.workerBits)!)._withUnsafeGuaranteedRef { c in
            if c.schedule(after: delay) { stats.sync.atomicRMWs &+= 2 }
        }
        stats.workerSchedules &+= 1
    }

    @inlinable
    func sameSet(_ socketBits: UInt, _ setBits: UInt) -> Bool {
        Unmanaged<Socket>.fromOpaque(UnsafeRawPointer(bitPattern: socketBits)!)._withUnsafeGuaranteedRef {
            $0.readySetBits == setBits
        }
    }

    @inlinable
    func ringSet(_ setBits: UInt) {
        Unmanaged<SocketReadySet>.fromOpaque(UnsafeRawPointer(bitPattern: setBits)!)._withUnsafeGuaranteedRef { set in
            if set.wakeup.isArmed && set.wakeup.ring() {
                stats.sync.atomicRMWs &+= 1
                stats.sync.lockAcquisitions &+= 1
                stats.sync.threadWakeups &+= 1
            }
        }
    }
}
