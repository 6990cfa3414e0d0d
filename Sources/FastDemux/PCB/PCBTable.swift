import Synchronization
import SMPPrimitives

/// The protocol control block tables of a ``Demux``: connected sockets by
/// exact 5-tuple, bound/listening sockets by (protocol, local address, local
/// port), each an `RCUHashTable` (SMPPrimitives) whose values are the sockets'
/// ``SocketReference`` bits (each entry holds one strong reference).
///
/// Lookup order (as Linux and FreeBSD): the exact 5-tuple, then the
/// specific local address and port, then the wildcard address and port.
/// Both IPv4 and IPv6; a v4 packet never matches a v6 binding (and v.v.).
///
/// Concurrency contract: ``lookup(_:)`` from any thread inside a
/// `Flavor` read section: no lock, no shared write, no retain. Control
/// operations (via ``Socket``) serialize on one mutex and may run at any
/// time; a removed socket is released only after a grace period.
public final class PCBTable<Flavor: RCUFlavor>: SocketTableControl, @unchecked Sendable {
    // @unchecked Sendable: the two RCU tables are thread-safe; `controlLock`
    // serializes every update; `pool` is immutable.
    @usableFromInline let connected: RCUHashTable<FlowKey, UInt, Flavor>
    @usableFromInline let bound: RCUHashTable<FlowKey, UInt, Flavor>
    /// Serializes every update (`controlState`). A `PthreadMutex`, the
    /// package's one blocking lock (see there): control operations from
    /// several threads contend, and ThreadSanitizer must see the hand-off.
    private let controlLock = PthreadMutex()
    private var controlState = ControlState()
    /// Where packets drained from closed sockets go (nil: just dropped).
    public let pool: PacketPool?
    /// Frees drained packets instead of `pool` when set.
    let release: (@Sendable (PacketRef) -> Void)?
    /// Packets found queued in sockets torn down after close.
    private let teardownDrops = Atomic<Int>(0)
    /// Sockets made by this table's demux and not yet deinitialized.
    private let liveSocketCount = Atomic<Int>(0)
    /// Sockets whose close began and whose teardown has not finished.
    private let closingSocketCount = Atomic<Int>(0)

    struct ControlState {
        /// Reserved TCP endpoints (bound, not yet listening or connected).
        var reserved: Set<FlowKey> = []
        /// TCP endpoints with a listening socket (mirrors the bound table).
        var listening: Set<FlowKey> = []
    }

    /// Creates empty tables. Any thread; allocates both RCU tables.
    ///
    /// - Parameters:
    ///   - expectedConnections: the connected table's initial bucket count (at
    ///     least 64); it grows past that on its own.
    ///   - pool: where packets still queued in sockets torn down after close
    ///     are freed (nil: they are dropped); either way they are counted in
    ///     ``packetsDrainedAtTeardown``.
    ///   - release: frees drained packets instead of `pool` (see
    ///     ``Demux/Configuration/release``).
    public init(expectedConnections: Int = 4096, pool: PacketPool? = nil,
                release: (@Sendable (PacketRef) -> Void)? = nil) {
        self.release = release
        connected = RCUHashTable(initialBucketCount: max(64, expectedConnections))
        bound = RCUHashTable(initialBucketCount: 256)
        self.pool = pool
    }

    /// The socket for an arriving packet's key (nil if none): exact, then
    /// specific local, then wildcard. Caller is inside a `Flavor` read
    /// section and must not use the reference after leaving it.
    @inlinable
    public func lookup(_ key: FlowKey) -> SocketReference? {
        if let s = connected.lookup(key) { return SocketReference(bits: s) }
        if let s = bound.lookup(key.boundKey) { return SocketReference(bits: s) }
        if key.destination.isWildcard { return nil }
        return bound.lookup(key.wildcardKey).map(SocketReference.init(bits:))
    }

    /// Control-path lookup from any thread (registers it with `Flavor` for
    /// the call if needed): returns the socket a packet with `key` reaches.
    public func socket(for key: FlowKey) -> Socket? {
        Flavor.withRegisteredThread { Flavor.withReadSection {
            lookup(key)?.socket
        } }
    }

    /// Entries in the connected table (connected sockets by 5-tuple). Any
    /// thread; a racy snapshot while control operations run (one relaxed
    /// load).
    public var connectedCount: Int { connected.count }
    /// Entries in the bound table (bound UDP and listening TCP sockets). Any
    /// thread; a racy snapshot while control operations run (one relaxed
    /// load).
    public var boundCount: Int { bound.count }

    /// The RCU reclamation backlog of both tables: nodes removed or
    /// replaced (and buckets copied away by a resize) that were handed to
    /// call_rcu and not yet reclaimed, now and at the peak. Any thread; racy
    /// snapshots (relaxed loads).
    ///
    /// Bounded by how fast updates retire nodes times how long call_rcu's
    /// worker takes per batch (one grace period for every callback queued
    /// before it started): a ``Socket/close()`` waits for a grace period
    /// itself, so closers that use it cannot outrun reclamation by more
    /// than the nodes retired during about two grace periods. Deferred
    /// closes do not wait; their callers bound it with ``Demux/barrier()``.
    public var reclamationBacklog: (pending: Int, peak: Int) {
        let c = connected.statistics, b = bound.statistics
        return (c.pendingReclaim + b.pendingReclaim, c.peakPendingReclaim + b.peakPendingReclaim)
    }

    /// Packets that were still queued in sockets when they were torn down.
    public var packetsDrainedAtTeardown: Int { teardownDrops.load(ordering: .relaxed) }

    /// Sockets of this table's ``Demux`` that exist: counted from the
    /// socket's `init` (``Demux/makeSocket(_:queueCapacity:)``) to its
    /// `deinit`, whatever its state: unbound, bound, connected, closed but
    /// still referenced by its owner, by a table entry awaiting its grace
    /// period or by a deferred teardown. A leak check: once every owner
    /// dropped its sockets and every close finished, it is 0.
    ///
    /// Any thread; a relaxed load, so a snapshot that may lag a concurrent
    /// make or free (each change is one relaxed RMW of one counter, so the
    /// count itself never drifts).
    public var liveSockets: Int { liveSocketCount.load(ordering: .relaxed) }

    /// Sockets whose ``Socket/close()`` or ``Socket/closeDeferred()`` has
    /// begun and whose teardown (the grace period, the drain of the receive
    /// queue, the release of the table's references) has not finished:
    /// deferred closes waiting on liburcu's call_rcu thread, and
    /// synchronous closes inside their grace period. Any thread; a relaxed
    /// load (as ``liveSockets``). ``Demux/barrier()`` brings it to 0.
    public var closingSockets: Int { closingSocketCount.load(ordering: .relaxed) }

    /// The connected table's chains (``RCUHashTable/chainStatistics``) and
    /// the nodes a lookup of `key` visits there
    /// (``RCUHashTable/lookupProbes(_:)``): what `fastdemux bench demux`
    /// reports as the table grows. Any thread; both take stripe locks
    /// (updates wait, lookups do not). Diagnostics only.
    package var connectedChainStatistics: RCUHashTableChainStatistics { connected.chainStatistics }
    package func connectedLookupProbes(_ key: FlowKey) -> Int { connected.lookupProbes(key) }

    // MARK: SocketTableControl

    private static func bits(_ s: Socket) -> UInt {
        // +1 per table entry; balanced by `releaseAfterGracePeriod`.
        SocketReference.retained(s).bits
    }

    /// Runs `body` on the control state under `controlLock`.
    private func withControl<R, E: Error>(_ body: (inout ControlState) throws(E) -> R) throws(E) -> R {
        try controlLock.withLock { () throws(E) -> R in try body(&controlState) }
    }

    func bind(_ s: Socket, _ local: InetEndpoint) throws(SocketError) {
        try withControl { (c: inout ControlState) throws(SocketError) -> Void in
            guard s.state == .unbound else { throw s.state == .closed ? .closed : .invalidState }
            let key = FlowKey.bound(s.proto, local: local.address, port: local.port)
            if s.proto == .udp {
                let b = Self.bits(s)
                guard bound.insert(key, value: b) else {
                    SocketReference(bits: b).release()
                    throw .addressInUse
                }
            } else {
                guard !c.reserved.contains(key), !c.listening.contains(key) else { throw .addressInUse }
                c.reserved.insert(key)
            }
            s.setBinding(local: local, remote: nil)
            s.setState(.bound)
        }
    }

    func listen(_ s: Socket) throws(SocketError) {
        try withControl { (c: inout ControlState) throws(SocketError) -> Void in
            guard s.proto == .tcp, s.state == .bound, let local = s.localEndpoint else {
                throw s.state == .closed ? .closed : .invalidState
            }
            let key = FlowKey.bound(.tcp, local: local.address, port: local.port)
            let b = Self.bits(s)
            guard bound.insert(key, value: b) else {
                SocketReference(bits: b).release()
                throw .addressInUse
            }
            c.reserved.remove(key)
            c.listening.insert(key)
            s.setState(.listening)
        }
    }

    func connect(_ s: Socket, remote: InetEndpoint, local: InetEndpoint?) throws(SocketError) {
        var oldBound: UInt?
        try withControl { (c: inout ControlState) throws(SocketError) -> Void in
            let st = s.state
            guard st == .unbound || st == .bound else { throw st == .closed ? .closed : .invalidState }
            guard let local = local ?? s.localEndpoint else { throw .invalidState }
            guard local.address.family == remote.address.family else { throw .familyMismatch }
            let key = FlowKey.connected(s.proto, local: local, remote: remote)
            let b = Self.bits(s)
            guard connected.insert(key, value: b) else {
                SocketReference(bits: b).release()
                throw .addressInUse
            }
            if st == .bound, let old = s.localEndpoint {
                let oldKey = FlowKey.bound(s.proto, local: old.address, port: old.port)
                if s.proto == .udp {
                    oldBound = bound.remove(oldKey)
                } else {
                    c.reserved.remove(oldKey)
                }
            }
            s.setBinding(local: local, remote: remote)
            s.setState(.connected)
        }
        if let oldBound { releaseAfterGracePeriod([oldBound]) }
    }

    func close(_ s: Socket) { close([s]) }
    func closeDeferred(_ s: Socket) { close([s], deferred: true) }
    func socketAllocated() { liveSocketCount.add(1, ordering: .relaxed) }
    func socketFreed() { liveSocketCount.subtract(1, ordering: .relaxed) }

    /// Closes several sockets with one grace period (see ``Socket/close()``).
    ///
    /// With `deferred`, returns at once and finishes the teardown (drain to
    /// the pool, release) on liburcu's call_rcu thread after the grace
    /// period: usable from a thread that must not block, even an input
    /// thread (outside its burst). ``Demux/barrier()`` waits for it.
    public func close(_ sockets: [Socket], deferred: Bool = false) {
        var removed: [UInt] = []
        var closing: [Socket] = []
        withControl { (c: inout ControlState) in
            for s in sockets {
                let st = s.state
                guard st != .closed else { continue }
                closing.append(s)
                // Closed first: an input thread that already looked the
                // socket up sees it and drops new packets as socket_closed.
                s.setState(.closed)
                guard let local = s.localEndpoint else { continue }
                let bkey = FlowKey.bound(s.proto, local: local.address, port: local.port)
                switch st {
                case .bound:
                    if s.proto == .udp {
                        if let b = bound.remove(bkey) { removed.append(b) }
                    } else {
                        c.reserved.remove(bkey)
                    }
                case .listening:
                    c.listening.remove(bkey)
                    if let b = bound.remove(bkey) { removed.append(b) }
                case .connected:
                    if let remote = s.remoteEndpoint,
                       let b = connected.remove(.connected(s.proto, local: local, remote: remote)) {
                        removed.append(b)
                    }
                default: break
                }
            }
        }
        guard !closing.isEmpty else { return }
        closingSocketCount.add(closing.count, ordering: .relaxed)
        for s in closing { s.wakeReaderForClose() }
        // After one grace period no input thread can hold a closed socket
        // from a lookup, so its queue can be drained for good and the
        // table's references dropped (the last one frees the socket, never
        // on an input thread).
        if deferred {
            Flavor.afterGracePeriod { [self, closing, removed] in finishTeardown(closing, removed) }
        } else {
            Flavor.synchronize()
            finishTeardown(closing, removed)
        }
    }

    /// After the grace period (ended by `synchronize()` or run by
    /// `afterGracePeriod`, both of which tell TSan): drain, count, drop the
    /// table's references.
    private func finishTeardown(_ closing: [Socket], _ removed: [UInt]) {
        var n = 0
        for s in closing { n += s.drainAtTeardown(pool: pool, release: release) }
        if n > 0 { teardownDrops.add(n, ordering: .relaxed) }
        for b in removed { SocketReference(bits: b).release() }
        closingSocketCount.subtract(closing.count, ordering: .relaxed)
    }

    private func releaseAfterGracePeriod(_ entries: [UInt]) {
        Flavor.synchronize()
        for b in entries { SocketReference(bits: b).release() }
    }
}
