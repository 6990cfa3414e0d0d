import FastDemux
import PacketIO
import Glibc
import Synchronization
import SMPPrimitives

// Parallel organizations of the demultiplexer, side by side (the seed's
// comparison, seeds/000 and 002: Willmann, Rixner and Cox measured
// message-based and connection-based parallel stacks inside FreeBSD; Robert
// Watson, seeds/001 and 003, asked for the numbers that decide between them).
//
// Every organization receives the same parsed packets (``DemuxPacket``s
// built by a ``PacketDecoder`` from one word per packet), delivers them to
// the same ``Socket``s (the same receive PCQs, the same TCP receive state,
// the same ``SocketReadySet`` readiness) and counts the same statistics
// (``OrganizationStats``), so that differences come from the organization
// alone: who runs the protocol work, what serializes it, and how many
// hand-offs a packet takes.

/// The organizations that can be compared.
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

/// What an organization is built from.
public struct OrganizationSetup: Sendable {
    /// The demultiplexer whose sockets (and, for the fast path, PCB tables)
    /// are used.
    public var demux: Demux<QSBR>
    public var decode: PacketDecoder
    /// Connection groups (ConnP-L).
    public var groups: Int
    /// Core threads / workers (ConnP-T, fast path deferred).
    public var coreThreads: Int
    /// Input threads that will call ``DemuxOrganization/makeInput(index:cpu:)``.
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
}

/// A parallel organization of the demultiplexer.
///
/// Life cycle: ``start()`` (starts core threads, if any), any number of
/// ``makeInput(index:cpu:)`` contexts driven by their input threads, then
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
    /// The context of input thread `index` (0 ..< inputThreads), which runs
    /// on `cpu` if pinned (-1: unknown).
    func makeInput(index: Int, cpu: Int) -> any OrganizationInput
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
/// have stopped.
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
    /// TCP ACKs decided by the stack.
    public var acks = 0
    /// CPU time used by the stack's threads (input and core threads; the
    /// reader's is kept apart), in nanoseconds: comparable across runs on a
    /// busy, oversubscribed machine where wall-clock throughput is not.
    public var stackCPUNanoseconds = 0
    public var readerCPUNanoseconds = 0

    public init() {}

    public mutating func merge(_ o: OrganizationStats) {
        stack.merge(o.stack)
        coreQueue.merge(o.coreQueue)
        coreQueueConsumer.merge(o.coreQueueConsumer)
        coreQueueFullWaits += o.coreQueueFullWaits
        socketQueueConsumer.merge(o.socketQueueConsumer)
        voluntaryContextSwitches += o.voluntaryContextSwitches
        involuntaryContextSwitches += o.involuntaryContextSwitches
        parks += o.parks
        acks += o.acks
        stackCPUNanoseconds += o.stackCPUNanoseconds
        readerCPUNanoseconds += o.readerCPUNanoseconds
    }

    public var contextSwitches: Int { voluntaryContextSwitches + involuntaryContextSwitches }
}

/// Builds an organization.
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

/// Context-switch counters of the calling thread.
struct ThreadContextSwitches {
    var voluntary = 0, involuntary = 0

    static func now() -> ThreadContextSwitches {
        var u = rusage()
        getrusage(__rusage_who_t(1), &u)   // RUSAGE_THREAD (not imported)
        return ThreadContextSwitches(voluntary: u.ru_nvcsw, involuntary: u.ru_nivcsw)
    }

    /// Adds the switches since `start` to `stats`.
    static func record(since start: ThreadContextSwitches, into stats: inout OrganizationStats) {
        let end = now()
        stats.voluntaryContextSwitches += end.voluntary - start.voluntary
        stats.involuntaryContextSwitches += end.involuntary - start.involuntary
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

    /// Locks; with `counting`, records the acquisition, its atomic RMW and
    /// (if the try-lock failed first) a contended acquisition.
    @inline(__always)
    static func lock(_ m: UnsafeMutablePointer<PthreadMutex>, _ sync: inout SyncStats, counting: Bool) {
        if counting {
            sync.lockAcquisitions &+= 1
            sync.atomicRMWs &+= 1
            if !m.pointee.tryLock() {
                sync.contendedAcquisitions &+= 1
                sync.atomicRMWs &+= 1
                m.pointee.lock()
            }
        } else {
            m.pointee.lock()
        }
    }

    /// Unlocks (glibc: one atomic exchange).
    @inline(__always)
    static func unlock(_ m: UnsafeMutablePointer<PthreadMutex>, _ sync: inout SyncStats, counting: Bool) {
        if counting { sync.atomicRMWs &+= 1 }
        m.pointee.unlock()
    }
}

/// A small open-addressing map from flow keys to words, for the locked and
/// thread-owned organizations (their lookup structure; the fast path uses
/// the RCU PCB tables instead). Not thread-safe: guarded by the
/// organization's lock or owned by one thread. Same hash as the RCU table,
/// so lookups cost the same apart from the synchronization around them.
struct FlowMap {
    private var keys: UnsafeMutablePointer<FlowKey>
    private var values: UnsafeMutablePointer<UInt>
    /// 0 empty, 1 full, 2 deleted.
    private var states: UnsafeMutablePointer<UInt8>
    private var mask: Int
    private(set) var count = 0
    private var used = 0

    init(capacity: Int) {
        var n = 16
        while n < capacity * 2 { n <<= 1 }
        mask = n - 1
        keys = .allocate(capacity: n)
        values = .allocate(capacity: n)
        states = .allocate(capacity: n)
        states.initialize(repeating: 0, count: n)
    }

    func deallocate() {
        keys.deallocate()
        values.deallocate()
        states.deallocate()
    }

    @inline(__always)
    private static func hash(_ k: FlowKey) -> Int { Int(truncatingIfNeeded: k.rcuHash(seed: 0x51ed_270b)) }

    @inline(__always)
    func lookup(_ k: FlowKey) -> UInt? {
        var i = Self.hash(k) & mask
        while true {
            let st = states[i]
            if st == 0 { return nil }
            if st == 1 && keys[i] == k { return values[i] }
            i = (i &+ 1) & mask
        }
    }

    /// False if `k` is present.
    mutating func insert(_ k: FlowKey, _ v: UInt) -> Bool {
        if lookup(k) != nil { return false }
        if (used + 1) * 2 > mask + 1 { rehash() }
        var i = Self.hash(k) & mask
        while states[i] == 1 { i = (i &+ 1) & mask }
        if states[i] == 0 { used += 1 }
        states[i] = 1
        (keys + i).initialize(to: k)
        values[i] = v
        count += 1
        return true
    }

    mutating func remove(_ k: FlowKey) -> UInt? {
        var i = Self.hash(k) & mask
        while true {
            let st = states[i]
            if st == 0 { return nil }
            if st == 1 && keys[i] == k {
                states[i] = 2
                count -= 1
                return values[i]
            }
            i = (i &+ 1) & mask
        }
    }

    private mutating func rehash() {
        let oldMask = mask, oldKeys = keys, oldValues = values, oldStates = states
        var n = oldMask + 1
        if count * 4 >= n { n <<= 1 }
        mask = n - 1
        keys = .allocate(capacity: n)
        values = .allocate(capacity: n)
        states = .allocate(capacity: n)
        states.initialize(repeating: 0, count: n)
        count = 0
        used = 0
        for i in 0...oldMask where oldStates[i] == 1 { _ = insert(oldKeys[i], oldValues[i]) }
        oldKeys.deallocate()
        oldValues.deallocate()
        oldStates.deallocate()
    }
}

/// The per-thread delivery step every non-fast-path organization shares,
/// once it holds whatever serializes the connection: put on the socket's
/// receive PCQ, run the TCP receive state, remember the socket for the
/// end-of-batch readiness pass (the same work as ``DemuxInput``, minus the
/// RCU lookup and the TCP try-lock).
///
/// Owned by one thread.
final class SocketDelivery {
    let cpu: Int
    let counting: Bool
    let depthSampleInterval = 64
    var untilDepthSample = 64
    let touched: UnsafeMutablePointer<UInt>
    let touchedRuns: UnsafeMutablePointer<Int>
    var touchedCount = 0
    static let capacity = 256
    var stats = OrganizationStats()

    init(cpu: Int, counting: Bool) {
        self.cpu = cpu
        self.counting = counting
        touched = .allocate(capacity: Self.capacity)
        touchedRuns = .allocate(capacity: Self.capacity)
    }

    deinit {
        touched.deallocate()
        touchedRuns.deallocate()
    }

    /// Enqueues `p` on socket `bits` and runs its TCP state. The caller
    /// serializes the connection (its lock or ownership), which is what
    /// guards `tcpState` here instead of the socket's TCP lock.
    @inline(__always)
    func deliver(_ p: DemuxPacket, socketBits bits: UInt) {
        Unmanaged<Socket>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!)._withUnsafeGuaranteedRef { s in
            if s.stateWord.load(ordering: .relaxed) == SocketState.closed.rawValue {
                stats.stack.drops.record(.socketClosed)
                s.droppedClosedCount.add(1, ordering: .relaxed)
                return
            }
            if counting {
                stats.stack.socketQueue.queueOps &+= 1
                stats.stack.sync.atomicRMWs &+= 1   // the PCQ put's reservation
            }
            guard s.queue.put(p.packet) else {
                stats.stack.drops.record(.queueFull)
                s.droppedQueueFullCount.add(1, ordering: .relaxed)
                return
            }
            stats.stack.enqueued &+= 1
            if counting {
                if s.readerCPU != cpu { stats.stack.sync.crossCoreHandoffs &+= 1 }
                untilDepthSample &-= 1
                if untilDepthSample == 0 {
                    untilDepthSample = depthSampleInterval
                    stats.stack.socketQueue.recordDepth(s.queue.approximateCount)
                }
            }
            if let tcp = p.tcp, s.proto == .tcp {
                let r = s.tcpState.receive(tcp, payloadLength: p.payloadLength, policy: s.ackPolicy)
                if !r.inSequence { stats.stack.outOfSequence &+= 1 }
                if r.ackNow {
                    s.tcpState.didSendAck()
                    stats.acks &+= 1
                }
            }
            if touchedCount > 0 && touched[touchedCount &- 1] == bits {
                touchedRuns[touchedCount &- 1] &+= 1
            } else {
                if touchedCount == Self.capacity { publishReadiness() }
                touched[touchedCount] = bits
                touchedRuns[touchedCount] = 1
                touchedCount &+= 1
            }
        }
    }

    /// Publishes readiness of the sockets touched since the last call (one
    /// fence per batch, a bit per socket, the reader rung if parked). Must
    /// run while the touched sockets cannot be torn down: under the lock
    /// that keeps them attached, or on the thread that owns them.
    func publishReadiness() {
        guard touchedCount > 0 else { return }
        // StoreLoad between the batch's PCQ puts and the readiness / armed
        // loads below; pairs with the reader's armed store + re-check.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        var lastSet: UInt = 0
        for i in 0..<touchedCount {
            if counting { stats.stack.socketQueue.batchSizes.record(touchedRuns[i]) }
            Unmanaged<Socket>.fromOpaque(UnsafeRawPointer(bitPattern: touched[i])!)._withUnsafeGuaranteedRef { s in
                if s.readySetBits != 0 {
                    // Ring a set's reader once per run of sockets of that set.
                    if lastSet != 0 && lastSet != s.readySetBits { ringSet(lastSet) }
                    Unmanaged<SocketReadySet>.fromOpaque(UnsafeRawPointer(bitPattern: s.readySetBits)!)
                        ._withUnsafeGuaranteedRef { set in
                            if set.markReady(slot: s.readySlot) && counting {
                                stats.stack.sync.atomicRMWs &+= 1
                                stats.stack.sync.wakeups &+= 1
                            }
                        }
                    lastSet = s.readySetBits
                }
                if s.readerWakeup.isArmed && s.readerWakeup.ring() && counting {
                    stats.stack.sync.atomicRMWs &+= 1
                    stats.stack.sync.lockAcquisitions &+= 1
                    stats.stack.sync.wakeups &+= 1
                    stats.stack.sync.threadWakeups &+= 1
                }
            }
        }
        if lastSet != 0 { ringSet(lastSet) }
        touchedCount = 0
    }

    /// Wakes a ready set's reader if it parked.
    private func ringSet(_ bits: UInt) {
        Unmanaged<SocketReadySet>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!)._withUnsafeGuaranteedRef { set in
            if set.wakeup.isArmed && set.wakeup.ring() && counting {
                stats.stack.sync.atomicRMWs &+= 1
                stats.stack.sync.lockAcquisitions &+= 1
                stats.stack.sync.threadWakeups &+= 1
            }
        }
    }
}
