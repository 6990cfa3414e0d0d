import FastDemux
import PacketIO
import Glibc
import SMPPrimitives
import Synchronization

/// A port to listen on: `tcp:80` (a listening TCP socket) or `udp:53` (a
/// bound UDP socket), on the wildcard address of both IPv4 and IPv6.
public struct ListenSpec: Hashable, Sendable, CustomStringConvertible {
    public var transport: TransportProtocol
    public var port: UInt16

    public init(_ transport: TransportProtocol, port: UInt16) {
        self.transport = transport
        self.port = port
    }

    /// Parses `tcp:80,udp:53` (comma-separated `PROTO:PORT` items).
    /// - Throws: ``ListenSpecError`` naming the bad item.
    public static func parseList(_ text: String) throws(ListenSpecError) -> [ListenSpec] {
        var out: [ListenSpec] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, let port = UInt16(parts[1]), port != 0 else {
                throw ListenSpecError(item: String(item))
            }
            switch parts[0].lowercased() {
            case "tcp": out.append(ListenSpec(.tcp, port: port))
            case "udp": out.append(ListenSpec(.udp, port: port))
            default: throw ListenSpecError(item: String(item))
            }
        }
        return out
    }

    public var description: String { "\(transport):\(port)" }
}

/// A bad `--listen` item.
public struct ListenSpecError: Error, CustomStringConvertible, Sendable {
    public let item: String
    public var description: String { "bad listen item '\(item)': expected PROTO:PORT with PROTO tcp or udp and PORT 1...65535" }
}

/// Which sockets a ``DemuxSession`` opens.
public enum SessionSockets: Sendable, Equatable {
    /// A connected socket for each direction of every flow, opened when
    /// the direction's first packet arrives (as if both ends of every
    /// connection in the capture were local, which they are on loopback).
    case perFlow
    /// Only listening TCP / bound UDP sockets on these ports; packets that
    /// match none are dropped as `no_socket`.
    case listen([ListenSpec])
}

/// How a ``DemuxSession`` runs.
public struct DemuxSessionConfiguration: Sendable {
    /// Input (demux) threads. 1: the reader thread itself parses, looks up
    /// and enqueues. N > 1: the reader parses and steers every packet by its
    /// canonical flow (both directions together, RSS style: flow number in
    /// order of first appearance, modulo N, which spreads flows evenly) to
    /// one of N input threads over a PCQ each, so per-flow order holds.
    public var workers: Int = 1
    public var sockets: SessionSockets = .perFlow
    /// Receive-queue capacity of each socket (a full queue drops, counted as
    /// `queue_full`); 256 as in the BENCHMARKS.md demux workload.
    public var queueCapacity: Int = 256
    /// Packet buffers in the pool (the reader waits when all are in flight).
    public var poolBuffers: Int = 8192
    /// Bytes kept per packet buffer: a longer frame is stored truncated
    /// (the demux needs only its headers); byte counts use the wire length.
    public var bufferSize: Int = 2048
    /// Upper bound on sockets (the consumer's ready set is sized for it).
    public var maxSockets: Int = 65_536
    public var parser = ParserOptions()
    /// Pin the reader to CPU 0, input workers round-robin from CPU 0 and the
    /// consumer to CPU 1 (modulo the CPU count).
    public var pin: Bool = true
    /// Seconds between progress callbacks (checked after every burst).
    public var progressInterval: Double = 1

    public init(workers: Int = 1, sockets: SessionSockets = .perFlow) {
        self.workers = workers
        self.sockets = sockets
    }
}

/// A progress snapshot given to the progress callback (reader thread).
public struct SessionProgress: Sendable {
    public var frames: Int
    public var bytes: Int
    public var seconds: Double
}

/// One row of the per-flow table: a canonical 5-tuple (both directions).
public struct FlowRecord: Sendable {
    /// The canonical key (smaller endpoint first; see ``FlowKey/canonical``).
    public var key: FlowKey
    /// Frames of this flow read from the source, and their wire bytes.
    public var packets: Int
    public var bytes: Int
    /// Frames delivered to a socket receive queue and taken by the reader.
    public var deliveredPackets: Int
    public var deliveredBytes: Int
    /// 1-based index of the flow's first frame in the source.
    public var firstFrame: Int
}

/// Everything a session measured.
public struct DemuxSessionReport: Sendable {
    /// Frames read from the source (the "in" of the conservation check).
    public var framesIn = 0
    public var bytesIn = 0
    /// Packets the consumer took from socket queues.
    public var delivered = 0
    /// Per-flow table, in order of first appearance.
    public var flows: [FlowRecord] = []
    /// Parser drops by reason (zero counts omitted), in reason order.
    public var parseDrops: [(reason: DropReason, count: Int)] = []
    /// Input-path statistics of every input thread, merged; its `drops`
    /// hold the parse drops as `malformed`/`unsupported` too.
    public var input = DemuxStats()
    /// Reader-to-worker steering queues (workers > 1): one per worker.
    public var steering: [PCQStatistics] = []
    /// Consumer: socket drains that returned packets, ready-set sweeps,
    /// times it parked.
    public var consumerDrains = 0
    public var consumerSweeps = 0
    public var consumerParks = 0
    /// Packets that arrived out of frame order within their direction.
    public var orderViolations = 0
    public var socketsOpened = 0
    /// Flow directions left without a socket (``DemuxSessionConfiguration/maxSockets``
    /// reached, or the connect was refused).
    public var socketLimitHits = 0
    public var workers = 1
    public var seconds = 0.0
    /// The error that ended reading early (e.g. a capture broken part-way):
    /// the report covers the frames before it.
    public var sourceError: (any Error)?

    /// Frames dropped, by the parser or the demux (every reason).
    public var dropped: Int { input.drops.total }

    /// in = delivered + dropped, every offered frame went through the demux
    /// exactly once, and nothing was left queued or reordered.
    public var isConserved: Bool {
        framesIn == delivered + dropped && input.offered == framesIn && input.enqueued == delivered
            && orderViolations == 0
    }
}

/// The cause of a session failure.
public struct DemuxSessionError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

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
        var workerThreads: [PinnedThread] = []
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

/// Moves a non-Sendable source to the reader thread and back.
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
    let consumerCPU: Int

    // Reader-owned.
    var sockets: [Socket] = []
    var directions: [FlowKey: Int32] = [:]
    var flowOfDirection: [Int32] = []
    var flowIndex: [FlowKey: Int32] = [:]
    var flows: [FlowRecord] = []
    var framesIn = 0
    var bytesIn = 0
    var socketLimitHits = 0
    var readerError: (any Error)?
    var readerStats = DemuxStats()
    var seconds = 0.0
    /// Each worker's statistics, stored once when it stops.
    let workerStats: Mutex<[DemuxStats]>
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
        workerStats = Mutex(Array(repeating: DemuxStats(), count: c.workers))
        consumerCPU = c.pin ? 1 % onlineCPUCount : -1
    }

    func teardown() {
        // One grace period for all of them (every input thread has stopped).
        demux.table.close(sockets)
        sockets.removeAll()
        meta.deallocate()
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
        s.readerCPU = consumerCPU
        sockets.append(s)
        return s
    }

    /// Reader: the directional index of `key`, opening its socket (per-flow
    /// mode) and registering its canonical flow when new.
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
        if config.sockets == .perFlow {
            if let s = try? newSocket(key.transport) {
                // The packet's destination is the socket's local end.
                do {
                    try s.connect(to: InetEndpoint(key.source, key.sourcePort),
                                  from: InetEndpoint(key.destination, key.destinationPort))
                } catch {
                    socketLimitHits += 1
                }
            } else {
                socketLimitHits += 1
            }
        }
        return d
    }

    // MARK: Reader

    func read<Source: PacketSource>(_ source: inout Source,
                                    progress: (@Sendable (SessionProgress) -> Void)?) {
        let direct = config.workers == 1
        QSBR.registerThread()
        defer { QSBR.unregisterThread() }
        let input = demux.makeInput(cpu: config.pin ? 0 : nil)
        let parser = PacketParser(options: config.parser)
        var cache = PacketPool.Cache(pool: pool)
        let spare = UnsafeMutablePointer<PacketRef>.allocate(capacity: 64)
        defer { spare.deallocate() }
        var spareCount = 0
        var pending: CapturedFrame?
        var ended = false
        let t0 = monotonicNow()
        var nextProgress = t0 + config.progressInterval

        // Handles one frame; returns false if it needs a buffer and none is
        // spare (the frame then stays pending).
        func handle(_ frame: CapturedFrame, _ b: DemuxInput<QSBR>) -> Bool {
            let parsed: ParsedPacket
            switch parser.parse(frame.bytes, linkType: frame.linkType, wireLength: frame.wireLength) {
            case .dropped(let reason):
                countFrame(frame)
                b.drop(parseReason: reason)
                return true
            case .packet(let p):
                parsed = p
            }
            guard spareCount > 0 else { return false }
            countFrame(frame)
            spareCount -= 1
            let packet = spare[spareCount]
            let d = direction(of: parsed.flow, frameIndex: frame.index)
            let flow = flowOfDirection[Int(d)]
            flows[Int(flow)].packets += 1
            flows[Int(flow)].bytes += frame.wireLength
            let buffer = pool.buffer(packet)
            let keep = min(frame.bytes.count, buffer.count)
            if keep > 0 { buffer.baseAddress!.copyMemory(from: frame.bytes.baseAddress!, byteCount: keep) }
            pool.setLength(keep, of: packet)
            meta[pool.index(of: packet)] = PacketMeta(
                key: parsed.flow, tcp: parsed.tcp, payloadLength: parsed.payloadLength,
                frameIndex: frame.index, wireLength: frame.wireLength, flow: flow, direction: d)
            if direct {
                if case .dropped = b.deliver(packet, key: parsed.flow, tcp: parsed.tcp,
                                             payloadLength: parsed.payloadLength) {
                    spare[spareCount] = packet   // reuse the buffer at once
                    spareCount += 1
                }
            } else {
                let q = steering[Int(flow) % config.workers]
                while !q.put(packet) { backoff() }
            }
            return true
        }

        do {
            while !ended {
                if pending == nil {
                    // Wait for the first frame of the next burst outside any
                    // read section; a live source may block here.
                    let f: CapturedFrame?
                    if source.mayBlock {
                        f = try QSBR.withThreadOffline { try source.nextFrame() }
                    } else {
                        f = try source.nextFrame()
                    }
                    guard let f else { break }
                    pending = f
                }
                // Take buffers for the burst before entering it: waiting for
                // the consumer to free some must not happen inside a burst
                // (its readiness is published only at the burst's end).
                while spareCount < 32, let p = cache.allocate() {
                    spare[spareCount] = p
                    spareCount += 1
                }
                if spareCount == 0 {
                    input.quiescent()
                    backoff()
                    continue
                }
                try input.burst { b in
                    var n = 0
                    while n < 32 {
                        let frame: CapturedFrame
                        if let p = pending {
                            frame = p
                            pending = nil
                        } else if source.mayBlock && n > 0 {
                            return   // publish what we have; wait outside the burst
                        } else if let f = try source.nextFrame() {
                            frame = f
                        } else {
                            ended = true
                            return
                        }
                        if !handle(frame, b) {
                            pending = frame
                            return
                        }
                        n += 1
                    }
                }
                input.quiescent()
                if let progress {
                    // One clock read per burst (vDSO, ~20 ns): negligible.
                    let now = monotonicNow()
                    if now >= nextProgress {
                        nextProgress = now + config.progressInterval
                        progress(SessionProgress(frames: framesIn, bytes: bytesIn, seconds: now - t0))
                    }
                }
            }
        } catch {
            readerError = error
        }
        for i in 0..<spareCount { cache.free(spare[i]) }
        seconds = monotonicNow() - t0
        readerStats = input.stats
        // Releasing: the workers acquire it and then see every put.
        readerDoneFlag.store(true, ordering: .releasing)
    }

    @inline(__always)
    func countFrame(_ frame: CapturedFrame) {
        framesIn += 1
        bytesIn += frame.wireLength
    }

    // MARK: Input workers (workers > 1)

    func work(_ k: Int) {
        QSBR.registerThread()
        defer { QSBR.unregisterThread() }
        let input = demux.makeInput(cpu: config.pin ? k % onlineCPUCount : nil)
        let q = steering[k]
        while true {
            // Acquire before draining: if the reader was done, everything it
            // put is visible, so an empty queue after this load is final.
            let done = readerDoneFlag.load(ordering: .acquiring)
            let n = input.burst { b in
                q.drain(max: 32) { packet in
                    let m = meta[pool.index(of: packet)]
                    if case .dropped = b.deliver(packet, key: m.key, tcp: m.tcp, payloadLength: m.payloadLength) {
                        pool.free(packet)
                    }
                }
            }
            input.quiescent()
            if n == 0 {
                if done { break }
                QSBR.withThreadOffline { backoff() }
            }
        }
        let stats = input.stats
        workerStats.withLock { $0[k] = stats }
    }

    // MARK: Consumer

    func consume() {
        var cache = PacketPool.Cache(pool: pool)
        let taken = UnsafeMutablePointer<PacketRef>.allocate(capacity: 64)
        defer { taken.deallocate() }

        func drain(_ s: Socket) {
            while true {
                var n = 0
                s.receive(upTo: 64) { p in
                    taken[n] = p
                    n += 1
                }
                if n == 0 { return }
                drains += 1
                for i in 0..<n {
                    let p = taken[i]
                    let m = meta[pool.index(of: p)]
                    account(m)
                    cache.free(p)
                }
            }
        }

        while true {
            // Acquire: pairs with run()'s release after the inputs joined, so
            // every readiness bit they set is visible to the sweeps below.
            let done = inputsDone.load(ordering: .acquiring)
            sweeps += 1
            let ready = readySet.takeReady { slot in
                if let s = readySet.socket(at: slot) { drain(s) }
            }
            if ready > 0 { continue }
            if done { break }
            parks += 1
            readySet.parkUntilReady(extraCheck: { inputsDone.load(ordering: .acquiring) })
        }
        // Belt and braces: nothing may be left in any queue.
        for i in 0..<config.maxSockets {
            guard let s = readySet.socket(at: i) else { continue }
            drain(s)
        }
    }

    @inline(__always)
    func account(_ m: PacketMeta) {
        delivered += 1
        let f = Int(m.flow), d = Int(m.direction)
        if f >= deliveredPackets.count {
            let grow = max(f + 1 - deliveredPackets.count, deliveredPackets.count)
            deliveredPackets += repeatElement(0, count: grow)
            deliveredBytes += repeatElement(0, count: grow)
        }
        if d >= lastFrameOfDirection.count {
            lastFrameOfDirection += repeatElement(0, count: max(d + 1 - lastFrameOfDirection.count,
                                                                lastFrameOfDirection.count))
        }
        deliveredPackets[f] += 1
        deliveredBytes[f] += m.wireLength
        if m.frameIndex <= lastFrameOfDirection[d] { orderViolations += 1 }
        lastFrameOfDirection[d] = m.frameIndex
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
        if config.workers > 1 { for s in workerStats.withLock({ $0 }) { stats.merge(s) } }
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
        r.socketsOpened = sockets.count
        r.socketLimitHits = socketLimitHits
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

func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
