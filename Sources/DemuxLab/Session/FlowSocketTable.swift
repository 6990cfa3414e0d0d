import FastDemux
import SMPPrimitives
import Synchronization

/// Limits on the sockets opened per flow (a ``DemuxSession`` in
/// ``SessionSockets/perFlow`` mode, the soak): a cap on how many are open at
/// once and an idle time after which one is closed, so that no remote
/// sender can make the demultiplexer hold an unbounded number of sockets.
public struct FlowSocketLimits: Sendable, Equatable {
    /// Sockets open at once at most (default 65,536). A flow direction that
    /// arrives while that many are open gets none: its packets are dropped
    /// as `no_socket` and the refusal is counted under
    /// ``FlowSocketCounters/capReasonName``.
    public var maxSockets: Int
    /// Seconds without a packet after which a flow's socket is closed
    /// (default 30; nil: never). A later packet of the flow opens a new one.
    public var idleTimeout: Double?

    public init(maxSockets: Int = 65_536, idleTimeout: Double? = 30) {
        precondition(maxSockets >= 1)
        precondition(idleTimeout.map { $0 > 0 } ?? true)
        self.maxSockets = maxSockets
        self.idleTimeout = idleTimeout
    }
}

/// What a ``FlowSocketTable`` did (a value; a snapshot on the owner thread,
/// or any thread after the owner stopped).
public struct FlowSocketCounters: Sendable, Equatable {
    /// The reason name of ``refusedCap``, as reports print it.
    public static let capReasonName = "flow socket cap reached"
    /// The same reason as a JSON key.
    public static let capReasonKey = "flow_socket_cap_reached"

    /// Sockets opened (connected) for flows.
    public var opened = 0
    /// Sockets closed because their flow was idle for the idle time.
    public var expired = 0
    /// Opens refused because ``FlowSocketLimits/maxSockets`` were open (or
    /// the ready set had no free slot): "flow socket cap reached". Counted
    /// per refused open: a flow that keeps sending while the table is full
    /// is refused (and counted) at each packet, since remembering refused
    /// flows would itself be memory a sender could grow.
    public var refusedCap = 0
    /// Opens whose connect failed (the 5-tuple already had a socket).
    public var refusedConnect = 0
    /// Sockets open now, and the most open at once.
    public var open = 0
    public var peakOpen = 0
    /// Idle sweeps run (each closes its expired sockets with one grace
    /// period).
    public var sweeps = 0
}

/// The sockets opened per flow direction, with a cap and idle expiry.
///
/// Owned by one thread, the one that sees every flow's packets first (a
/// session's reader, the soak's input thread): ``admit(_:now:)`` opens a
/// connected socket for a new direction (one ``SocketReadySet`` slot) and
/// stamps its activity; ``sweepIfDue(now:)`` closes the sockets idle for
/// ``FlowSocketLimits/idleTimeout``, all at once with one grace period
/// (`PCBTable.close(_:deferred:)`), outside any read section. Closing
/// several per grace period is also what bounds the RCU reclamation backlog
/// this table causes: the owner cannot retire PCB nodes faster than grace
/// periods end.
///
/// The ready set's single reader (the consumer) must call
/// ``reap(_:)`` regularly: it takes the closed sockets out of the ready set,
/// which drops the last strong reference and frees them. The owner wakes
/// the reader after each sweep that closed something.
///
/// The sweep is a periodic scan on the owner thread (every quarter of the
/// idle time, at most once a second), not a timer per flow: the owner
/// already reads the clock once per burst, and a scan of the open sockets
/// (at most the cap) costs less than arming and cancelling a timer per
/// packet.
final class FlowSocketTable<Flavor: RCUFlavor>: @unchecked Sendable {
    // @unchecked Sendable: every field but `retiredSlots` is touched by the
    // owner thread only; `retiredSlots` is a mutex-guarded hand-off to the
    // ready set's reader, with `retiredCount` as its cheap "anything
    // there?" hint.
    let limits: FlowSocketLimits
    let demux: Demux<Flavor>
    let readySet: SocketReadySet
    private(set) var counters = FlowSocketCounters()

    private var index: [FlowKey: Int32] = [:]
    private var slots: [Entry] = []
    private var freeSlots: [Int32] = []
    private var nextSweep: Double = 0
    private let sweepInterval: Double
    /// Guards `retiredSlots` (a `PthreadMutex`, the package's one blocking
    /// lock: the owner and the reader contend, and ThreadSanitizer must see
    /// the hand-off).
    private let retired = PthreadMutex()
    private var retiredSlots: [Int] = []
    private let retiredCount = Atomic<Int>(0)

    struct Entry {
        var key: FlowKey
        var socket: Socket?
        var readySlot: Int
        var lastActive: Double
    }

    init(demux: Demux<Flavor>, readySet: SocketReadySet, limits: FlowSocketLimits) {
        self.demux = demux
        self.readySet = readySet
        self.limits = limits
        sweepInterval = limits.idleTimeout.map { min(1.0, $0 / 4) } ?? .infinity
    }

    /// Owner: makes sure `key` (a direction as it arrives) has a socket,
    /// opening one if it is new and the cap allows; records activity at
    /// `now` (seconds, any monotonic origin). Returns false if the flow has
    /// no socket (refused: its packets will drop as `no_socket`).
    @inline(__always)
    func admit(_ key: FlowKey, now: Double) -> Bool {
        if let i = index[key] {
            slots[Int(i)].lastActive = now
            return true
        }
        return open(key, now: now)
    }

    private func open(_ key: FlowKey, now: Double) -> Bool {
        guard counters.open < limits.maxSockets else {
            counters.refusedCap += 1
            return false
        }
        let s = demux.makeSocket(key.transport)
        guard let slot = readySet.add(s) else {
            counters.refusedCap += 1
            return false
        }
        do {
            // The packet's destination is the socket's local end.
            try s.connect(to: InetEndpoint(key.source, key.sourcePort),
                          from: InetEndpoint(key.destination, key.destinationPort))
        } catch {
            counters.refusedConnect += 1
            // Deferred: the owner may be inside a read section (a burst),
            // where waiting for a grace period would wait for itself.
            s.closeDeferred()
            retire([slot])
            return false
        }
        let e = Entry(key: key, socket: s, readySlot: slot, lastActive: now)
        let i: Int32
        if let f = freeSlots.popLast() {
            i = f
            slots[Int(i)] = e
        } else {
            i = Int32(slots.count)
            slots.append(e)
        }
        index[key] = i
        counters.opened += 1
        counters.open += 1
        counters.peakOpen = max(counters.peakOpen, counters.open)
        return true
    }

    /// Owner, outside any read section: if a sweep is due at `now`, closes
    /// every socket idle for the idle time. Returns how many it closed.
    @inline(__always)
    @discardableResult
    func sweepIfDue(now: Double) -> Int {
        guard now >= nextSweep else { return 0 }
        nextSweep = now + sweepInterval
        return expireIdle(now: now)
    }

    /// Owner, outside any read section: closes every socket idle since
    /// before `now - idleTimeout` (one grace period for all of them).
    @discardableResult
    func expireIdle(now: Double) -> Int {
        guard let idle = limits.idleTimeout else { return 0 }
        counters.sweeps += 1
        let cutoff = now - idle
        var closing: [Socket] = []
        var readySlots: [Int] = []
        for i in slots.indices {
            guard let s = slots[i].socket, slots[i].lastActive < cutoff else { continue }
            closing.append(s)
            readySlots.append(slots[i].readySlot)
            index[slots[i].key] = nil
            slots[i].socket = nil
            freeSlots.append(Int32(i))
        }
        guard !closing.isEmpty else { return 0 }
        // Removed from the PCB tables, one grace period, queued packets
        // drained to the pool (counted in packetsDrainedAtTeardown).
        demux.table.close(closing)
        counters.expired += closing.count
        counters.open -= closing.count
        retire(readySlots)
        return closing.count
    }

    /// Owner (or any thread after the owner stopped), outside read sections:
    /// closes every socket (one grace period) and hands the slots to the
    /// ready set's reader. Not counted as expiry.
    func closeAll() {
        let closing = slots.compactMap(\.socket)
        let readySlots = slots.filter { $0.socket != nil }.map(\.readySlot)
        slots.removeAll()
        freeSlots.removeAll()
        index.removeAll()
        demux.table.close(closing)
        counters.open = 0
        retire(readySlots)
    }

    private func retire(_ readySlots: [Int]) {
        guard !readySlots.isEmpty else { return }
        retired.withLock { retiredSlots.append(contentsOf: readySlots) }
        // Relaxed: a hint; the mutex orders the slots themselves.
        retiredCount.add(readySlots.count, ordering: .relaxed)
        readySet.wakeReader()
    }

    /// Ready-set reader: removes the closed sockets from the ready set (the
    /// last strong reference: they are freed here). Cheap when there is
    /// nothing to do (one relaxed load). Returns how many it removed.
    @inline(__always)
    @discardableResult
    func reap() -> Int {
        guard retiredCount.load(ordering: .relaxed) > 0 else { return 0 }
        let taken = retired.withLock { () -> [Int] in
            defer { retiredSlots = [] }
            return retiredSlots
        }
        retiredCount.subtract(taken.count, ordering: .relaxed)
        for slot in taken { readySet.remove(slot: slot) }
        return taken.count
    }
}
