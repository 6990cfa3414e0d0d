import FastDemux
import Synchronization

/// What an ``EndpointStack`` holds right now: sockets and everything a
/// socket brings with it, packet buffers per pool, reassembly queues.
///
/// Gauges are levels, not flows: they go up and down, and once the
/// stack's users closed every socket and traffic stopped (and the
/// reassembly timeout passed), every one of them is back at 0 — anything
/// else is a leak (``isZero``, ``levels``). They are kept apart from
/// ``StackStatistics``, whose counters only grow and add up
/// (``StackStatistics/isConserved``): a level does not belong in a sum
/// over cores (the sockets are the stack's, not a core's), and mixing
/// them would make the conservation check's inputs harder to see.
///
/// Every gauge is counted where the thing is made and freed, none is
/// derived from a model of what should be there:
/// - sockets: ``openSockets`` (``UDPSocket``s made and not yet closed),
///   ``liveSockets`` (FastDemux sockets not yet deinitialized: the
///   UDP sockets' and the reuseport anchors', closed ones included while a
///   table entry, a deferred teardown or an owner still holds them),
///   ``closingSockets`` (closes whose grace period and teardown have not
///   finished), ``socketWorkers`` (worker continuations not yet freed);
/// - tables: ``boundEntries`` and ``connectedEntries`` (PCB table
///   entries), ``tableNodesPendingReclaim`` (removed PCB nodes not yet
///   reclaimed by call_rcu), ``portReservations`` (bindings in the port
///   table), ``reusePortGroups`` and ``reusePortMemberLists`` (published
///   member lists and replaced ones awaiting their grace period);
/// - buffers: ``receiveBuffers`` and ``datagramBuffers`` (allocated −
///   freed per pool, wherever the words are: socket queues, mailboxes,
///   output batches, reassembly, a reader's hands), ``outputBatched``;
/// - reassembly: ``reassemblyQueues``, ``reassemblyFragments``,
///   ``reassemblyBytes``.
///
/// A plain value (any thread). ``EndpointStack/gauges`` takes the
/// snapshot: exact when the stack is quiescent; while traffic flows each
/// gauge is read at a slightly different instant (see there).
public struct StackGauges: Sendable, Equatable {
    /// One packet pool: how many buffers it has and how many are out.
    public struct Pool: Sendable, Equatable {
        /// Buffers in the pool.
        public var capacity = 0
        /// Buffers allocated and not yet freed: `capacity` minus the free
        /// ones (on the pool's global stack and in every pool cache of the
        /// stack: each core's, its reassembly table's, its TUN queue's).
        public var inUse = 0
        /// Free buffers sitting in the stack's pool caches (part of what is
        /// not in use; shown because a leak check must not mistake them
        /// for held buffers).
        public var cachedFree = 0

        /// An empty pool gauge.
        public init() {}
    }

    /// ``UDPSocket``s made and not yet closed (bound, connected or not yet
    /// either). ``UDPSocket/close()`` (or the socket's `deinit`) takes it
    /// down at once; what the close leaves to a grace period is in
    /// ``closingSockets`` and ``liveSockets``.
    public var openSockets = 0
    /// FastDemux sockets of the stack that exist: one per ``UDPSocket``
    /// and one per SO_REUSEPORT group anchor, from creation to `deinit`,
    /// including closed sockets still referenced (by their owner, a PCB
    /// table entry awaiting its grace period, or a deferred teardown).
    /// FastDemux's `PCBTable.liveSockets`.
    public var liveSockets = 0
    /// Socket closes begun and not finished: deferred closes (made on an
    /// executor) waiting for their grace period on liburcu's call_rcu
    /// thread, synchronous closes inside theirs. FastDemux's
    /// `PCBTable.closingSockets`.
    public var closingSockets = 0
    /// Worker continuations (one per ``UDPSocket``) not yet freed: counted
    /// by a token their body holds, so a continuation a timer wheel or a
    /// hand-off list still retains counts as well.
    public var socketWorkers = 0
    /// Entries in the PCB bound table (bound sockets, reuseport anchors).
    public var boundEntries = 0
    /// Entries in the PCB connected table (connected sockets).
    public var connectedEntries = 0
    /// PCB table nodes removed or replaced and not yet reclaimed (handed to
    /// call_rcu, waiting for a grace period).
    public var tableNodesPendingReclaim = 0
    /// Port reservations (one per bound or connected ``UDPSocket``).
    public var portReservations = 0
    /// SO_REUSEPORT groups (one per bound endpoint with members).
    public var reusePortGroups = 0
    /// Reuseport member lists not yet freed: each group's published list,
    /// and replaced lists waiting for their grace period.
    public var reusePortMemberLists = 0
    /// ``TCPListenerSocket``s made and not yet closed.
    public var tcpListeners = 0
    /// ``TCPSocket``s (connections) not yet in CLOSED: from the completed
    /// handshake until TIME-WAIT ends, a reset, an abort or a timeout
    /// closes them (then their PCB entry is removed and the FastDemux
    /// socket freed after a grace period: ``connectedEntries``,
    /// ``liveSockets``, ``closingSockets``).
    public var tcpConnections = 0
    /// ``TCPSocket`` objects not yet deinitialized (closed ones included
    /// while a continuation run or the application still holds them).
    public var tcpSocketObjects = 0
    /// The receive pool (2 KiB buffers: reads, fragments, output).
    public var receiveBuffers = Pool()
    /// The pool of reassembled datagrams (64 KiB buffers).
    public var datagramBuffers = Pool()
    /// Packets in the cores' output batches, not yet written (part of
    /// `receiveBuffers.inUse`).
    public var outputBatched = 0
    /// Datagrams being reassembled, over all cores.
    public var reassemblyQueues = 0
    /// Fragments held by those queues (part of `receiveBuffers.inUse`).
    public var reassemblyFragments = 0
    /// Bytes of the fragments held (their buffers' lengths, headers
    /// included).
    public var reassemblyBytes = 0

    /// An empty set of gauges.
    public init() {}

    /// Every gauge that is 0 on an idle stack with no socket, by its stable
    /// snake_case name (status lines, JSON, leak reports). Control path:
    /// allocates.
    public var levels: [(name: String, value: Int)] {
        [("open_sockets", openSockets), ("live_sockets", liveSockets), ("closing_sockets", closingSockets),
         ("socket_workers", socketWorkers), ("bound_entries", boundEntries),
         ("connected_entries", connectedEntries), ("table_nodes_pending_reclaim", tableNodesPendingReclaim),
         ("port_reservations", portReservations), ("reuseport_groups", reusePortGroups),
         ("reuseport_member_lists", reusePortMemberLists), ("tcp_listeners", tcpListeners),
         ("tcp_connections", tcpConnections), ("tcp_socket_objects", tcpSocketObjects),
         ("receive_buffers_in_use", receiveBuffers.inUse),
         ("datagram_buffers_in_use", datagramBuffers.inUse), ("output_batched", outputBatched),
         ("reassembly_queues", reassemblyQueues), ("reassembly_fragments", reassemblyFragments),
         ("reassembly_bytes", reassemblyBytes)]
    }

    /// Whether every level is 0: nothing held, nothing leaked.
    public var isZero: Bool { levels.allSatisfy { $0.value == 0 } }

    /// The levels that are not 0, as `name=value` (empty when ``isZero``).
    public var nonZero: String {
        levels.filter { $0.value != 0 }.map { "\($0.name)=\($0.value)" }.joined(separator: " ")
    }
}

/// What one core holds (read on its executor; the per-core part of
/// ``StackGauges``).
struct CoreGauges: Sendable {
    /// Free receive buffers in the core's caches (its own, its reassembly
    /// table's, its TUN queue's).
    var cachedFree = 0
    var outputBatched = 0
    var reassemblyQueues = 0
    var reassemblyFragments = 0
    var reassemblyBytes = 0
}

/// The stack-wide live counts of ``StackGauges`` that no other structure
/// keeps: open sockets, worker continuations, reuseport member lists.
///
/// Concurrency: any thread. Each gauge is one atomic, changed by one
/// relaxed RMW per make or free (control path only: sockets and member
/// lists are not made per packet), so it never drifts; reads are relaxed
/// snapshots. No ordering with anything else is needed: a gauge only
/// reports, nobody acts on it.
final class StackLiveCounts: Sendable {
    let openSockets = Atomic<Int>(0)
    let workers = Atomic<Int>(0)
    let memberLists = Atomic<Int>(0)
    let tcpListeners = Atomic<Int>(0)
    let tcpConnections = Atomic<Int>(0)
    let tcpSocketObjects = Atomic<Int>(0)

    /// A token that counts as one worker until it is freed (the worker's
    /// body holds it, so it lives exactly as long as the continuation).
    func workerToken() -> WorkerToken { WorkerToken(self) }
}

/// One live worker continuation (see ``StackLiveCounts/workerToken()``).
final class WorkerToken: Sendable {
    let counts: StackLiveCounts
    init(_ counts: StackLiveCounts) {
        self.counts = counts
        counts.workers.add(1, ordering: .relaxed)
    }
    deinit { counts.workers.subtract(1, ordering: .relaxed) }
}
