import FastDemux
import PacketIO
import Glibc
import Synchronization
import SMPPrimitives

// Parallel organizations of the demultiplexer, side by side (Willmann,
// Rixner and Cox, "An Evaluation of Network Stack Parallelization Strategies
// in Modern Operating Systems", USENIX ATC 2006, measured message-based and
// connection-based parallel stacks inside FreeBSD; Robert Watson's 2004
// "Network Stack Locking" mail asked for the numbers that decide between
// them).
//
// Every organization receives the same parsed packets (``DemuxPacket``s
// built by a ``PacketDecoder`` from one word per packet) and delivers them
// with the same delivery step (FastDemux's `SocketDelivery`: the same
// receive PCQs, TCP receive state, readiness pass and statistics), so that
// differences come from the organization alone: which thread delivers,
// which locks it takes, and how many hand-offs a packet takes.

/// The organizations that can be compared (a plain value).
public enum OrganizationKind: String, CaseIterable, Sendable, CustomStringConvertible {
    /// Message-parallel: any input thread processes any packet; a global
    /// table lock for the lookup, then the connection's own lock.
    case msgp
    /// Connection-parallel, threads: connections hashed to groups owned by
    /// core threads; the input hands each packet to its owner through the
    /// mailbox mesh; no lock in the stack.
    case connpT = "connp-t"
    /// Connection-parallel, locks: connections hashed to groups, each with
    /// its own lock; the input thread takes the group lock and does the work.
    case connpL = "connp-l"
    /// ConnP-L delivering a burst group by group in passes (lock the group,
    /// look up all its packets of the burst, touch their sockets, then
    /// enqueue), so that cache misses overlap as in the fast path's batch
    /// delivery. Not in the paper: the control for the fast path's batching.
    case connpLBatched = "connp-l-batched"
    /// The lock-free fast path (RCU lookup, PCQ socket queues), run directly
    /// on the input thread.
    case fastpath
    /// The fast path run by per-core workers fed through PCQs by the input
    /// threads (netisr-style deferred dispatch).
    case fastpathDeferred = "fastpath-deferred"

    public var description: String { rawValue }

    /// Whether the number of connection groups is a parameter.
    public var usesGroups: Bool { self == .connpL || self == .connpLBatched }
}

/// Turns a packet word into the parsed packet (the "parser" every
/// organization shares). Organizations that hand packets between threads
/// pass only the word and decode again on the receiving side, as a real
/// stack reads the headers again on the core that processes them.
public typealias PacketDecoder = @Sendable (PacketRef) -> DemuxPacket

/// What an organization is built from (a value; the demux and decoder it
/// names are thread-safe).
public struct OrganizationSetup: Sendable {
    /// The demultiplexer whose sockets (and, for the fast path, PCB tables)
    /// are used.
    public var demux: Demux<QSBR>
    /// Turns a packet word into its parsed packet, on any thread.
    public var decode: PacketDecoder
    /// Connection groups (ConnP-L).
    public var groups: Int
    /// Core threads / workers (ConnP-T, fast path deferred).
    public var coreThreads: Int
    /// Input threads that will call ``DemuxOrganization/makeInput(index:)``.
    public var inputThreads: Int
    /// Maximum number of sockets attached at the same time.
    public var maxConnections: Int
    /// Count synchronization points (try-lock first, depth samples,
    /// context switches). Off: the plain operations only.
    public var statistics: Bool
    /// Pin threads (core thread k on CPU k mod CPUs).
    public var pinned: Bool

    public init(demux: Demux<QSBR>, decode: @escaping PacketDecoder, groups: Int = 4,
                coreThreads: Int = onlineCPUCount, inputThreads: Int = 1, maxConnections: Int = 1 << 15,
                statistics: Bool = true, pinned: Bool = true) {
        self.demux = demux
        self.decode = decode
        self.groups = max(1, groups)
        self.coreThreads = max(1, coreThreads)
        self.inputThreads = max(1, inputThreads)
        self.maxConnections = max(1, maxConnections)
        self.statistics = statistics
        self.pinned = pinned
    }

    /// The delivery step for a thread of the organization running on `cpu`
    /// (-1: unknown): the demux's depth sampling, room for a core thread's
    /// drain batch (256) before a forced flush, no ACK sink (the comparison
    /// counts the ACKs the stack decides, it sends none).
    func makeDelivery() -> SocketDelivery {
        SocketDelivery(depthSampleInterval: demux.configuration.depthSampleInterval, capacity: 256)
    }
}

/// A parallel organization of the demultiplexer.
///
/// Life cycle: ``start()`` (starts core threads, if any), any number of
/// ``makeInput(index:)`` contexts driven by their input threads, then
/// ``finish()`` after every input thread has called
/// ``OrganizationInput/end()``: it waits until every packet handed off has
/// reached its socket and stops the core threads.
///
/// Sockets: create them with the setup's ``Demux`` and connect them first
/// (the fast path finds them in the PCB tables), then ``attach(_:key:)``.
/// ``close(_:key:)`` detaches and closes; both may run on any thread,
/// also while traffic flows (never on a thread inside a burst).
public protocol DemuxOrganization: AnyObject, Sendable {
    var kind: OrganizationKind { get }
    /// The number of connection groups in effect (locks or owner threads).
    var groupCount: Int { get }
    /// Threads other than the input threads that run the stack.
    var coreThreadCount: Int { get }
    func start()
    /// Makes `socket` (connected, with receive key `key`) reachable.
    func attach(_ socket: Socket, key: FlowKey)
    /// Makes `socket` unreachable, then closes it (queued packets are
    /// drained and counted as `socket_closed`).
    func close(_ socket: Socket, key: FlowKey)
    /// The context of input thread `index` (0 ..< inputThreads). Its
    /// statistics observe where the thread runs, pinned or not.
    func makeInput(index: Int) -> any OrganizationInput
    /// Drains the hand-offs, stops core threads, returns their statistics.
    func finish() -> OrganizationStats
}

/// One input thread's side of an organization. Created on any thread, then
/// used by exactly one input thread: ``begin()``, bursts, ``end()``.
public protocol OrganizationInput: AnyObject {
    /// On the input thread, before its first burst.
    func begin()
    /// Delivers (or hands off) a burst of parsed packets in order.
    func deliver(_ burst: UnsafeBufferPointer<DemuxPacket>)
    /// Between bursts (QSBR quiescent state for the fast path).
    func quiescent()
    /// On the input thread after its last burst; returns its statistics.
    func end() -> OrganizationStats
}

/// The statistics of one organization run (merged over its threads).
///
/// Every counter is a plain integer owned by the thread that records it
/// (input, core thread or reader); the run merges them after the threads
/// have stopped (a value: read it on any thread after that).
public struct OrganizationStats: Sendable {
    /// Offered/enqueued/drops, the socket receive-queue hand-off point
    /// (depth at enqueue, puts, run lengths per burst), and the
    /// synchronization points of the stack threads.
    public var stack = DemuxStats()
    /// The input → core-thread hand-off point (ConnP-T, deferred): depth at
    /// enqueue (sampled), puts and drains, consumer batch sizes.
    public var coreQueue = HandoffPointStats()
    /// Consumer-side operations and batch sizes of the core queue.
    public var coreQueueConsumer = HandoffPointStats()
    /// Puts that found the core queue full and had to wait (back-pressure).
    public var coreQueueFullWaits = 0
    /// The socket receive queue as seen by the reader: drains and batch sizes.
    public var socketQueueConsumer = HandoffPointStats()
    /// Context switches of all threads of the run (getrusage RUSAGE_THREAD).
    public var voluntaryContextSwitches = 0
    public var involuntaryContextSwitches = 0
    /// Times a core thread or the reader parked.
    public var parks = 0
    /// TCP ACKs decided by the stack (the delivery step's immediate ACKs).
    public var acks: Int { stack.immediateACKs }
    /// CPU time used by the stack's threads (input and core threads; the
    /// reader's is kept apart), in nanoseconds: comparable across runs on a
    /// busy, oversubscribed machine where wall-clock throughput is not.
    public var stackCPUNanoseconds = 0
    public var readerCPUNanoseconds = 0

    public init() {}

    /// The statistics of a thread whose deliveries counted `stack`.
    init(stack: DemuxStats) { self.stack = stack }

    /// Adds another thread's statistics (after that thread stopped).
    public mutating func merge(_ o: OrganizationStats) {
        stack.merge(o.stack)
        coreQueue.merge(o.coreQueue)
        coreQueueConsumer.merge(o.coreQueueConsumer)
        coreQueueFullWaits += o.coreQueueFullWaits
        socketQueueConsumer.merge(o.socketQueueConsumer)
        voluntaryContextSwitches += o.voluntaryContextSwitches
        involuntaryContextSwitches += o.involuntaryContextSwitches
        parks += o.parks
        stackCPUNanoseconds += o.stackCPUNanoseconds
        readerCPUNanoseconds += o.readerCPUNanoseconds
    }

    /// Voluntary and involuntary context switches together.
    public var contextSwitches: Int { voluntaryContextSwitches + involuntaryContextSwitches }
}

/// Builds an organization (any thread; nothing runs until ``DemuxOrganization/start()``).
public func makeOrganization(_ kind: OrganizationKind, setup: OrganizationSetup) -> any DemuxOrganization {
    switch kind {
    case .msgp: return MsgPOrganization(setup: setup)
    case .connpT: return ConnPTOrganization(setup: setup)
    case .connpL: return ConnPLOrganization(setup: setup, batched: false)
    case .connpLBatched: return ConnPLOrganization(setup: setup, batched: true)
    case .fastpath: return FastPathOrganization(setup: setup, deferred: false)
    case .fastpathDeferred: return FastPathOrganization(setup: setup, deferred: true)
    }
}

// MARK: - Shared pieces

/// The hash that steers a flow to a connection group, an owner thread or a
/// worker (the NIC's RSS hash in a real stack).
@inlinable
func organizationHash(_ key: FlowKey) -> Int {
    Int(truncatingIfNeeded: key.rcuHash(seed: 0x9e37_79b9_7f4a_7c15) >> 17)
}

/// Context-switch counters of the calling thread: the kernel's own counts
/// (`getrusage(RUSAGE_THREAD)`: `ru_nvcsw` voluntary, `ru_nivcsw`
/// involuntary), read at a thread's start and end; the difference is what
/// the thread really paid. Two system calls per thread and run.
package struct ThreadContextSwitches: Sendable {
    package var voluntary = 0, involuntary = 0

    package init(voluntary: Int = 0, involuntary: Int = 0) {
        self.voluntary = voluntary
        self.involuntary = involuntary
    }

    package static func now() -> ThreadContextSwitches {
        var u = rusage()
        getrusage(__rusage_who_t(1), &u)   // RUSAGE_THREAD (not imported)
        return ThreadContextSwitches(voluntary: u.ru_nvcsw, involuntary: u.ru_nivcsw)
    }

    /// The calling thread's switches since `start` (taken on this thread).
    package static func since(_ start: ThreadContextSwitches) -> ThreadContextSwitches {
        let end = now()
        return ThreadContextSwitches(voluntary: end.voluntary - start.voluntary,
                                     involuntary: end.involuntary - start.involuntary)
    }

    /// Adds the switches since `start` to `stats`.
    static func record(since start: ThreadContextSwitches, into stats: inout OrganizationStats) {
        let d = since(start)
        stats.voluntaryContextSwitches += d.voluntary
        stats.involuntaryContextSwitches += d.involuntary
    }
}

/// Lock statistics around a ``PthreadMutex``: with `counting`, every
/// acquisition is counted and taken try-lock first, so that a contended
/// acquisition (the try-lock failed) is seen. The organizations keep their
/// locks in raw arrays of `PthreadMutex` (each mutex in its own allocation,
/// never moved) made by ``allocate(count:)``.
enum CountedLock {
    static func allocate(count: Int) -> UnsafeMutablePointer<PthreadMutex> {
        let p = UnsafeMutablePointer<PthreadMutex>.allocate(capacity: count)
        for i in 0..<count { (p + i).initialize(to: PthreadMutex()) }
        return p
    }

    static func deallocate(_ p: UnsafeMutablePointer<PthreadMutex>, count: Int) {
        p.deinitialize(count: count)
        p.deallocate()
    }

    /// Locks; with `counting`, records the acquisition and (if the
    /// try-lock failed first) a contended acquisition, both counted, and
    /// the RMWs inside glibc's lock as modelled (``ModelledRMWs``).
    @inline(__always)
    static func lock(_ m: UnsafeMutablePointer<PthreadMutex>, _ sync: inout SyncStats, counting: Bool) {
        if counting {
            sync.lockAcquisitions &+= 1
            sync.modelledAtomicRMWs &+= ModelledRMWs.mutexLock
            if !m.pointee.tryLock() {
                sync.contendedAcquisitions &+= 1
                sync.modelledAtomicRMWs &+= ModelledRMWs.mutexContendedWait
                m.pointee.lock()
            }
        } else {
            m.pointee.lock()
        }
    }

    /// Unlocks (glibc: one atomic exchange, counted as modelled).
    @inline(__always)
    static func unlock(_ m: UnsafeMutablePointer<PthreadMutex>, _ sync: inout SyncStats, counting: Bool) {
        if counting { sync.modelledAtomicRMWs &+= ModelledRMWs.mutexUnlock }
        m.pointee.unlock()
    }
}
