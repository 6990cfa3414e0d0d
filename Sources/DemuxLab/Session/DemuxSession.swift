import FastDemux
import PacketIO
import Glibc
import SMPPrimitives
import Synchronization

/// Runs a ``PacketSource`` through a ``Demux``: a reader thread, 1...N
/// input threads, and one consumer thread that drains every socket.
///
/// Sockets are opened per flow or per listened port (see ``SessionSockets``);
/// the consumer waits on a ``SocketReadySet`` and accounts each delivered
/// packet to its flow through a side table indexed by packet buffer (as an
/// mbuf header would carry it). At the end it checks conservation and
/// per-direction order.
///
/// Concurrency contract: ``run(_:progress:)`` is synchronous; it starts and
/// joins its threads (the source is used only by the reader thread while the
/// caller waits). Each run builds its own pool, demux and sockets and tears
/// them down at the end (one grace period). Uses the QSBR flavour: the
/// input threads register, report quiescent states between bursts, and go
/// offline while a live source blocks.
public final class DemuxSession {
    public let configuration: DemuxSessionConfiguration

    public init(_ configuration: DemuxSessionConfiguration) {
        precondition(configuration.workers >= 1 && configuration.workers <= 64)
        self.configuration = configuration
    }

    /// Runs `source` to its end and returns the report.
    /// - Parameter progress: called on the reader thread about every
    ///   ``DemuxSessionConfiguration/progressInterval`` seconds.
    /// - Returns: the report; a source error that ended reading early (e.g.
    ///   ``PcapError/malformed(path:packetsRead:reason:)``) is in
    ///   ``DemuxSessionReport/sourceError`` and the report covers the frames before it.
    /// - Throws: ``DemuxSessionError`` if the sockets cannot be set up.
    public func run<Source: PacketSource>(_ source: inout Source,
                                          progress: (@Sendable (SessionProgress) -> Void)? = nil) throws
        -> DemuxSessionReport
    {
        let state = SessionState(configuration)
        defer { state.teardown() }
        try state.openListeners()

        let consumer = PinnedThread(cpu: configuration.pin ? 1 : nil, name: "demux-consumer") {
            state.consume()
        }
        var workerThreads: [PinnedThread<Void>] = []
        if configuration.workers > 1 {
            for k in 0..<configuration.workers {
                workerThreads.append(PinnedThread(cpu: configuration.pin ? k : nil, name: "demux-input-\(k)") {
                    state.work(k)
                })
            }
        }
        let box = SourceBox(source)
        let reader = PinnedThread(cpu: configuration.pin ? 0 : nil, name: "demux-reader") {
            box.withSource { s in state.read(&s, progress: progress) }
        }
        reader.join()
        for t in workerThreads { t.join() }
        // Every input is done and flushed: the consumer may finish.
        state.inputsDone.store(true, ordering: .releasing)
        state.readySet.wakeReader()
        consumer.join()
        source = box.take()
        return state.report()
    }
}

/// Moves a non-Sendable source to the reader thread and back. (A `sending`
/// thread body cannot hand a value it captured back as its `sending`
/// result: the region checker keeps captures in the closure's region.)
// @unchecked Sendable: the caller blocks in join while the reader thread
// uses the source; the thread start and join order every access.
private final class SourceBox<Source: PacketSource>: @unchecked Sendable {
    var source: Source?
    init(_ s: Source) { source = s }
    func withSource(_ body: (inout Source) -> Void) {
        var s = source.take()!
        body(&s)
        source = s
    }
    func take() -> Source { source.take()! }
}

/// What the reader records about each packet buffer for the input worker
/// and the consumer (an mbuf packet header, indexed by buffer).
struct PacketMeta {
    var key: FlowKey
    var tcp: TCPSegmentInfo?
    var payloadLength: Int
    var frameIndex: Int
    var wireLength: Int
    /// Canonical flow index and directional index.
    var flow: Int32
    var direction: Int32
}

/// The shared state of one session run.
// @unchecked Sendable: each mutable field has one owner thread (noted per
// field); hand-offs go through PCQs (release/acquire per packet), the
// `readerDone`/`inputsDone` flags (release/acquire) and thread joins.
final class SessionState: @unchecked Sendable {
    let config: DemuxSessionConfiguration
    let pool: PacketPool
    let demux: Demux<QSBR>
    let readySet: SocketReadySet
    /// Indexed by pool buffer index; written by the packet's current owner.
    let meta: UnsafeMutablePointer<PacketMeta>
    let steering: [PCQ<PacketRef>]
    let readerDoneFlag = Atomic<Bool>(false)
    let inputsDone = Atomic<Bool>(false)

    // Reader-owned.
    /// Listening/bound sockets (``SessionSockets/listen(_:)`` mode).
    var sockets: [Socket] = []
    /// Per-flow mode: the sockets opened per flow direction (cap, idle
    /// expiry); its ``FlowSocketTable/reap()`` runs on the consumer.
    let flowSockets: FlowSocketTable<QSBR>?
    var directions: [FlowKey: Int32] = [:]
    var flowOfDirection: [Int32] = []
    var flowIndex: [FlowKey: Int32] = [:]
    var flows: [FlowRecord] = []
    var framesIn = 0
    var bytesIn = 0
    var readerError: (any Error)?
    var readerStats = DemuxStats()
    var seconds = 0.0
    /// Each worker's statistics: slot k is written once by worker k before
    /// it is joined (distinct memory per thread), read after the joins.
    let workerStats: UnsafeMutablePointer<DemuxStats>
    // Consumer-owned, read after join.
    var delivered = 0
    var deliveredPackets: [Int] = []
    var deliveredBytes: [Int] = []
    var lastFrameOfDirection: [Int] = []
    var orderViolations = 0
    var drains = 0
    var sweeps = 0
    var parks = 0

    init(_ c: DemuxSessionConfiguration) {
        config = c
        pool = PacketPool(bufferCount: c.poolBuffers, bufferSize: c.bufferSize)
        demux = Demux<QSBR>(configuration: .init(queueCapacity: c.queueCapacity, pool: pool))
        readySet = SocketReadySet(capacity: c.maxSockets)
        meta = .allocate(capacity: c.poolBuffers)
        steering = c.workers > 1 ? (0..<c.workers).map { _ in PCQ<PacketRef>(capacity: 1024) } : []
        workerStats = .allocate(capacity: c.workers)
        workerStats.initialize(repeating: DemuxStats(), count: c.workers)
        flowSockets = c.sockets == .perFlow
            ? FlowSocketTable(demux: demux, readySet: readySet,
                              limits: FlowSocketLimits(maxSockets: c.maxSockets, idleTimeout: c.flowIdleTimeout))
            : nil
    }

    func teardown() {
        // One grace period for all of them (every input thread has stopped).
        demux.table.close(sockets)
        sockets.removeAll()
        flowSockets?.closeAll()
        meta.deallocate()
        workerStats.deinitialize(count: config.workers)
        workerStats.deallocate()
    }

    // MARK: Sockets (control path)

    func openListeners() throws {
        guard case .listen(let specs) = config.sockets else { return }
        for spec in specs {
            for family in [AddressFamily.ipv4, .ipv6] {
                let s = try newSocket(spec.transport)
                do {
                    try s.bind(InetEndpoint(.wildcard(family), spec.port))
                    if spec.transport == .tcp { try s.listen() }
                } catch {
                    throw DemuxSessionError(description: "cannot listen on \(spec) (\(family)): \(error)")
                }
            }
        }
    }

    func newSocket(_ transport: TransportProtocol) throws -> Socket {
        let s = demux.makeSocket(transport)
        guard readySet.add(s) != nil else {
            throw DemuxSessionError(description: "more than \(config.maxSockets) sockets")
        }
        sockets.append(s)
        return s
    }

    /// Reader: the directional index of `key`, registering its canonical
    /// flow when new. (Per-flow sockets are opened by ``flowSockets``.)
    @inline(__always)
    func direction(of key: FlowKey, frameIndex: Int) -> Int32 {
        if let d = directions[key] { return d }
        let canonical = key.canonical
        let flow: Int32
        if let f = flowIndex[canonical] {
            flow = f
        } else {
            flow = Int32(flows.count)
            flowIndex[canonical] = flow
            flows.append(FlowRecord(key: canonical, packets: 0, bytes: 0, deliveredPackets: 0,
                                    deliveredBytes: 0, firstFrame: frameIndex))
        }
        let d = Int32(flowOfDirection.count)
        flowOfDirection.append(flow)
        directions[key] = d
        return d
    }

    // MARK: Report

    func report() -> DemuxSessionReport {
        var r = DemuxSessionReport()
        r.framesIn = framesIn
        r.bytesIn = bytesIn
        r.delivered = delivered
        r.flows = flows
        for i in r.flows.indices where i < deliveredPackets.count {
            r.flows[i].deliveredPackets = deliveredPackets[i]
            r.flows[i].deliveredBytes = deliveredBytes[i]
        }
        var stats = readerStats
        if config.workers > 1 { for k in 0..<config.workers { stats.merge(workerStats[k]) } }
        r.input = stats
        r.parseDrops = DropReason.allCases.compactMap { reason in
            let n = stats.parseDrops[Int(reason.rawValue)]
            return n > 0 ? (reason, n) : nil
        }
        r.steering = steering.map(\.statistics)
        r.consumerDrains = drains
        r.consumerSweeps = sweeps
        r.consumerParks = parks
        r.orderViolations = orderViolations
        let fc = flowSockets?.counters ?? FlowSocketCounters()
        r.socketsOpened = sockets.count + fc.opened
        r.socketLimitHits = fc.refusedCap + fc.refusedConnect
        r.flowSockets = fc
        r.packetsDrainedAtClose = demux.table.packetsDrainedAtTeardown
        r.workers = config.workers
        r.seconds = seconds
        r.sourceError = readerError
        return r
    }
}

/// A short pause for a thread waiting on another (queue full, pool empty,
/// nothing to do): yield the CPU, since on 2 cores the other party may need it.
@inline(__always)
func backoff() {
    usleep(20)
}
