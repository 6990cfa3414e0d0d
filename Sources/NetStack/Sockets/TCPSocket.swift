import SMPPrimitives
import Synchronization

/// CLOCK_MONOTONIC in microseconds: the one clock every TCP engine of the
/// stack runs on (``TCPConnection``'s `now`).
@inline(__always)
func tcpNow() -> UInt64 { monotonicNanoseconds() / 1000 }

/// The ``TCPSegmentSink`` of a stack core: frames each segment behind an
/// IP header in a buffer of the core's cache and queues it for the flow
/// owner's TUN queue (`StackCore.sendTCP`). Only on that core's executor.
struct StackTCPSink: TCPSegmentSink {
    let core: StackCore

    mutating func send(_ header: TCPHeader, payload: TCPPayload, endpoints: TCPEndpoints) {
        core.sendTCP(header, payload: payload, endpoints: endpoints)
    }

    mutating func send(_ header: TCPHeader, payload: TCPPayload, endpoints: TCPEndpoints, segmentSize: Int) {
        core.sendTCP(header, payload: payload, endpoints: endpoints, segmentSize: segmentSize)
    }
}

/// A received TCP segment in a packet buffer: the header, the payload in
/// place and the arriving flow key (IPv4 addresses unmapped).
struct ArrivedSegment {
    var header: TCPHeader
    var payload: UnsafeRawBufferPointer
    var key: FlowKey

    /// Parses a queued buffer (the input path parsed it before and checked
    /// the checksum; a parse is a few bounds-checked loads). Nil for a
    /// malformed TCP header (bad data offset, options), counted by the caller.
    init?(_ bytes: UnsafeRawBufferPointer) {
        guard case .packet(let t) = PacketParser().parse(bytes, linkType: .raw), t.flow.transport == .tcp else {
            return nil
        }
        let end = min(bytes.count, t.payloadOffset + t.capturedPayloadLength)
        guard let (h, offset) = try? TCPHeader.parse(UnsafeRawBufferPointer(rebasing: bytes[t.transportOffset..<end]))
        else { return nil }
        header = h
        payload = UnsafeRawBufferPointer(rebasing: bytes[(t.transportOffset + offset)..<end])
        key = t.flow
    }
}

/// The timer of a TCP engine: a kernel continuation on the socket's
/// executor whose run is filed on that executor's timer wheel (1 ms
/// ticks) for the engine's ``TCPConnection/nextDeadline``.
///
/// `KernelContinuation.schedule(after:)` keeps a pending run's delay when
/// it coalesces, so an earlier deadline cancels the pending run and files
/// a new one; a later deadline leaves the earlier run in place (it fires
/// early, which the engine allows, and the run re-arms). Owned by the
/// socket's executor thread (`armed` is touched only there).
private final class EngineTimer: @unchecked Sendable {
    // @unchecked Sendable: `armed` is read and written only on the
    // continuation's executor (the socket's runs); `continuation` is
    // thread-safe.
    let continuation: KernelContinuation
    private var armed: UInt64?

    init(on executor: CoreExecutor, token: WorkerToken, _ body: @escaping @Sendable () -> Void) {
        continuation = KernelContinuation(on: executor) {
            withExtendedLifetime(token) {}
            body()
        }
    }

    /// The two continuations of an engine's socket, both on core `core`'s
    /// executor and both running `run`: the socket's worker (scheduled by
    /// the input cores, no coalescing delay) and the timer returned. Each
    /// holds a worker token (``StackGauges/socketWorkers``).
    static func attach(to socket: Socket, stack: EndpointStack, core: Int,
                       _ run: @escaping @Sendable () -> Void) -> EngineTimer {
        let executor = stack.group.executors[core]
        let token = stack.live.workerToken()
        socket.attachWorker(on: executor, delay: .zero) { _ in
            withExtendedLifetime(token) {}
            run()
        }
        return EngineTimer(on: executor, token: stack.live.workerToken(), run)
    }

    /// Arms for `deadline` (µs of ``tcpNow()``), or cancels for nil.
    func arm(_ deadline: UInt64?, now: UInt64) {
        guard let deadline else {
            if armed != nil { continuation.cancel() }
            armed = nil
            return
        }
        if let a = armed, a <= deadline, continuation.isPending { return }
        continuation.cancel()
        armed = deadline
        continuation.schedule(after: .microseconds(deadline > now ? Int64(deadline - now) : 0))
    }

    /// Withdraws a pending run (the socket is closing).
    func stop() {
        continuation.cancel()
        armed = nil
    }
}

/// A TCP listening socket of an ``EndpointStack``: a ``TCPListener``
/// driven by the socket's worker continuation.
///
/// SYNs (and every segment of a 4-tuple that has no connection yet) reach
/// the listener through the demux: the PCB table's exact 5-tuple lookup
/// fails, the bound (listening) entry matches, the input core puts the
/// packet on this socket's receive queue (PCQ) and schedules its worker
/// continuation. The continuation runs the listener engine: it answers
/// with SYN-ACKs, keeps half-open entries in its SYN queue (retransmitted
/// on the continuation's timer), and for each completed handshake makes a
/// ``TCPSocket`` on the flow's owner core, whose PCB entry takes the
/// flow's later segments. A dual-stack IPv6 listener on `::` also takes
/// IPv4 connections (the input path's IPv4-mapped fallback).
///
/// Concurrency contract: make and ``close()`` from any thread. The
/// listener engine is owned by the worker continuation: the input cores
/// only queue packets; every engine call runs in a continuation body on
/// core ``core``'s executor, one at a time (a kernel continuation's body
/// never runs concurrently with itself, and the worker and the timer
/// continuation share that one executor thread).
public final class TCPListenerSocket: @unchecked Sendable {
    // @unchecked Sendable: `listener` is touched only in the continuation
    // bodies on executor `core` (see the contract); `closed` is atomic;
    // the rest is immutable or thread-safe.

    /// The stack the socket belongs to.
    public let stack: EndpointStack
    /// The core whose executor runs the listener engine.
    public let core: Int
    /// The bound endpoint.
    public let local: InetEndpoint
    let socket: Socket
    private var listener: TCPListener
    private let onReadable: @Sendable (TCPSocket) -> Void
    private var timer: EngineTimer!
    private let closed = Atomic<Bool>(false)

    init(stack: EndpointStack, local: InetEndpoint, v6Only: Bool, core: Int, configuration: TCPConfiguration,
         backlog: Int, onReadable: @escaping @Sendable (TCPSocket) -> Void) throws(SocketError) {
        self.stack = stack
        self.core = core
        self.local = local
        self.onReadable = onReadable
        var c = configuration
        // Our SYN-ACK's MSS: what fits the device MTU behind the larger
        // (IPv6) header, so one value serves both families.
        c.maximumSegmentSize = min(c.maximumSegmentSize, stack.configuration.mtu - 60)
        c.maximumSegmentsPerSend = stack.tcpSegmentsPerSend
        listener = TCPListener(port: local.port, configuration: c, synQueueLimit: backlog,
                               acceptQueueLimit: backlog, isn: stack.isn)
        socket = stack.demux.makeSocket(.tcp)
        socket.v6Only.store(v6Only, ordering: .relaxed)
        timer = EngineTimer.attach(to: socket, stack: stack, core: core) { [weak self] in self?.run() }
        do throws(SocketError) {
            try socket.bind(local)
            try socket.listen()
        } catch {
            // deinit still runs (the object is initialized): it must not
            // count a listener that never was.
            closed.store(true, ordering: .relaxed)
            socket.close()
            throw error
        }
        stack.live.tcpListeners.add(1, ordering: .relaxed)
    }

    deinit { close() }

    /// Stops listening: the PCB entry goes, half-open entries are dropped
    /// (their peers' ACKs then draw RSTs), queued segments go back to the
    /// pool after a grace period. Connections already made stay.
    /// Idempotent; any thread.
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        stack.live.tcpListeners.subtract(1, ordering: .relaxed)
        timer.continuation.cancel()
        if CoreExecutor.current != nil { socket.closeDeferred() } else { socket.close() }
    }

    /// The listener's counters (SYNs, refusals, RSTs): a synchronous call
    /// onto core ``core`` (not from an executor of the stack).
    public var counters: TCPCounters {
        stack.group.call(on: core) { [self] in listener.counters }
    }

    /// One run of the engine (the worker or the timer): every queued
    /// segment, then the SYN-ACK timers.
    private func run() {
        guard !closed.load(ordering: .relaxed), let c = stack.currentCore else { return }
        c.stats.socketWorkerRuns &+= 1
        let now = tcpNow()
        var sink = StackTCPSink(core: c)
        while let p = socket.tryReceive() {
            guard let seg = ArrivedSegment(stack.buffers.bytes(p)) else {
                c.release(p)
                continue
            }
            // A segment queued here before the connection's PCB entry was
            // inserted (the handshake's ACK and data right behind it):
            // the table now has its socket, which takes it.
            if let owner = stack.demux.table.socket(for: seg.key), owner !== socket {
                TCPSocket.forward(p, to: owner, core: c)
                continue
            }
            let accepted = listener.receive(seg.header, payload: seg.payload, source: seg.key.source,
                                            destination: seg.key.destination, now: now, sink: &sink)
            c.release(p)
            if accepted {
                while let connection = listener.accept() { spawn(connection, core: c) }
            }
        }
        if let d = listener.nextDeadline, d <= now { listener.handleTimers(now: now, sink: &sink) }
        timer.arm(listener.nextDeadline, now: now)
    }

    /// The socket of an accepted connection, on the flow's owner core.
    private func spawn(_ connection: TCPConnection, core c: StackCore) {
        let e = connection.endpoints
        let owner = c.owner(local: e.local, localPort: e.localPort, remote: e.remote, remotePort: e.remotePort)
        let s = TCPSocket(stack: stack, connection: connection, core: owner, onReadable: onReadable)
        do throws(SocketError) {
            try s.start()
            c.stats.tcpConnectionsAccepted &+= 1
        } catch {
            // Its 4-tuple is taken (cannot happen: the lookup found none).
            s.abortUnstarted(sink: StackTCPSink(core: c))
        }
    }
}

/// A TCP connection socket of an ``EndpointStack``: a ``TCPConnection``
/// driven by the socket's worker continuation, made by a
/// ``TCPListenerSocket`` when a handshake completes, or by
/// ``EndpointStack/connectTCP(to:from:configuration:onReadable:)`` (active
/// open, in SYN-SENT). ``TCPStream`` is the async form on top of it.
///
/// Input: its PCB entry (the exact 5-tuple) sends the flow's segments to
/// the socket's receive queue; the worker continuation, on core ``core``
/// (the flow's owner, so its output goes to that core's own queue), takes
/// them, runs ``TCPConnection/receive(_:payload:now:sink:)`` for each,
/// then the readiness handler (the application), then
/// ``TCPConnection/output(now:sink:)``. The ACKs the engine decides are
/// sent by the input path first: the NetBSD fast path's immediate ACK,
/// under the socket lock (TCPSocket+FastPath.swift), runs the queued
/// segments through the engine right after the input queued them; the
/// continuation sends the delayed ACKs (on the timer), window updates and
/// what the handler wrote.
///
/// Timers: the engine's ``TCPConnection/nextDeadline`` is put on a second
/// continuation on the same executor, filed on its timer wheel; its run
/// calls ``TCPConnection/handleTimers(now:sink:)`` and the handler.
///
/// Close: when the engine reaches CLOSED (after TIME-WAIT, the peer's FIN
/// acknowledged in LAST-ACK, a reset, an abort or a timeout) the socket
/// leaves the PCB table and its demux socket is torn down after an RCU
/// grace period (as a UDP socket's); the handler runs a last time, with
/// ``state`` `.closed`.
///
/// Concurrency contract: the engine is owned by core ``core``'s executor
/// thread: both continuations run there, one at a time, and every method
/// below except the counters must be called there — from the readiness
/// handler (or a job on that executor). The input cores and the listener
/// only put packets on the receive queue (a PCQ) and schedule the worker.
/// The engine reached this thread by a happens-before chain: the listener
/// (or the connecting thread, for an active open) stored it before
/// inserting the PCB entry (released by the table's insert) and before
/// scheduling the worker (released by the schedule, acquired by the run).
public final class TCPSocket: @unchecked Sendable {
    // @unchecked Sendable: `connection`, `keepAlive`, `finished`,
    // `isRunning` and `applicationContext` are touched only on executor
    // `core` (see the contract); the rest is immutable or thread-safe.

    /// The stack the socket belongs to.
    public let stack: EndpointStack
    /// The core whose executor owns the engine and runs the handler.
    public let core: Int
    /// The two ends (IPv4 addresses as IPv4, also on a dual-stack listener).
    public let endpoints: TCPEndpoints
    let socket: Socket
    var connection: TCPConnection
    private let onReadable: @Sendable (TCPSocket) -> Void
    private var timer: EngineTimer!
    /// The socket keeps itself alive until CLOSED (its continuations hold
    /// it weakly; the application needs no reference).
    private var keepAlive: TCPSocket?
    var finished = false
    /// The socket lock: the engine is in use, by a run of the continuation
    /// or by the input path's immediate-ACK step (TCPSocket+FastPath.swift).
    /// During a run, what the handler writes goes out at its end, with no
    /// other schedule (a job on the executor schedules a run).
    var isRunning = false
    /// ``context``'s storage.
    private var applicationContext: AnyObject?
    /// An active open's SYN, built where the engine was made (any thread)
    /// and sent by the first run, on core ``core``: after the PCB entry
    /// went in, so that the SYN-ACK finds the socket.
    private var heldSYN: HeldSegmentSink.Segment?

    init(stack: EndpointStack, connection: TCPConnection, core: Int,
         onReadable: @escaping @Sendable (TCPSocket) -> Void,
         heldSYN: HeldSegmentSink.Segment? = nil, context: AnyObject? = nil) {
        self.stack = stack
        self.core = core
        self.connection = connection
        self.onReadable = onReadable
        self.heldSYN = heldSYN
        applicationContext = context
        endpoints = connection.endpoints
        socket = stack.demux.makeSocket(.tcp)
        stack.live.tcpSocketObjects.add(1, ordering: .relaxed)
        timer = EngineTimer.attach(to: socket, stack: stack, core: core) { [weak self] in self?.run() }
    }

    deinit { stack.live.tcpSocketObjects.subtract(1, ordering: .relaxed) }

    /// Inserts the PCB entry and schedules the first run (which runs the
    /// handler: the handshake's ACK may have carried data; for an active
    /// open it sends the held SYN first). On the listener's executor, or
    /// on the thread of ``EndpointStack/connectTCP(to:from:configuration:onReadable:)``.
    func start() throws(SocketError) {
        keepAlive = self
        stack.live.tcpConnections.add(1, ordering: .relaxed)
        publishEngine()
        do throws(SocketError) {
            try socket.connect(to: InetEndpoint(endpoints.remote, endpoints.remotePort),
                               from: InetEndpoint(endpoints.local, endpoints.localPort))
        } catch {
            withdrawEngine()
            keepAlive = nil
            stack.live.tcpConnections.subtract(1, ordering: .relaxed)
            throw error
        }
        socket.worker?._withUnsafeGuaranteedRef { _ = $0.schedule() }
    }

    /// A connection that never got its PCB entry: reset it (on the
    /// listener's executor, before any run of its own).
    func abortUnstarted(sink: StackTCPSink) {
        var sink = sink
        connection.abort(now: tcpNow(), sink: &sink)
        socket.closeDeferred()
    }

    /// An active open whose PCB entry could not go in (its 4-tuple was
    /// taken meanwhile): its demux socket goes, nothing was sent (the SYN
    /// is still held). On the connecting thread, before any run.
    func discardUnstarted() {
        heldSYN = nil
        if CoreExecutor.current != nil { socket.closeDeferred() } else { socket.close() }
    }

    /// Puts `p` (a segment another path took) on `owner`'s receive queue
    /// and schedules its worker; a full queue drops it (TCP retransmits).
    ///
    /// Safe against a concurrent close of `owner`: the caller found it in
    /// the table just before, and the executor (a QSBR reader) passes no
    /// quiescent point between that lookup and this put (only a waiting
    /// mailbox send or call is one), so the close's teardown drain, which
    /// waits for a grace period, comes after the put and frees the packet.
    static func forward(_ p: PacketRef, to owner: Socket, core c: StackCore) {
        guard owner.stateWord.load(ordering: .relaxed) != SocketState.closed.rawValue, owner.queue.put(p) else {
            c.release(p)
            return
        }
        owner.worker?._withUnsafeGuaranteedRef { _ = $0.schedule() }
    }

    // MARK: The continuation

    private func run() {
        guard !finished, let c = stack.currentCore else { return }
        c.stats.socketWorkerRuns &+= 1
        let now = tcpNow()
        isRunning = true
        defer { isRunning = false }
        var sink = StackTCPSink(core: c)
        let acksBefore = connection.counters.pureAcksSent
        if let syn = heldSYN {
            heldSYN = nil
            sink.send(syn.header, payload: .empty, endpoints: syn.endpoints)
        }
        // Segments the input path's immediate-ACK step did not take (it
        // found the engine in use, or there was none: the listener's
        // forward, the first run).
        while let p = socket.tryReceive() {
            if let seg = ArrivedSegment(stack.buffers.bytes(p)) {
                connection.receive(seg.header, payload: seg.payload, now: now, sink: &sink)
            }
            c.release(p)
        }
        if let d = connection.nextDeadline, d <= now { connection.handleTimers(now: now, sink: &sink) }
        onReadable(self)
        connection.output(now: now, sink: &sink)
        c.stats.tcpDeferredAcks &+= connection.counters.pureAcksSent &- acksBefore
        if connection.state == .closed { return finish() }
        timer.arm(connection.nextDeadline, now: now)
    }

    /// CLOSED: out of the PCB table; the demux socket's teardown (its
    /// queue drained to the pool) after a grace period, deferred (this is
    /// an executor, a QSBR reader). The last run of the handler already
    /// saw `.closed`.
    private func finish() {
        if connection.closeReason == .finWait2Timeout, let c = stack.currentCore { c.stats.tcpFinWait2Timeouts &+= 1 }
        finished = true
        withdrawEngine()
        timer.stop()
        socket.closeDeferred()
        stack.live.tcpConnections.subtract(1, ordering: .relaxed)
        applicationContext = nil
        keepAlive = nil
    }

    private func checkOwner() {
        precondition(stack.group.executors[core].isCurrent, "TCPSocket used off its core's executor")
    }

    // MARK: Application interface (on executor `core`)

    /// The engine's state.
    public var state: TCPConnectionState { checkOwner(); return connection.state }
    /// Why it closed (nil while open).
    public var closeReason: TCPCloseReason? { checkOwner(); return connection.closeReason }
    /// Bytes that ``write(_:)`` takes now (backpressure: free send buffer).
    public var writableBytes: Int { checkOwner(); return connection.writableBytes }
    /// Bytes that ``read(into:)`` can return now.
    public var readableBytes: Int { checkOwner(); return connection.readableBytes }
    /// The peer finished and every byte was read.
    public var atEndOfFile: Bool { checkOwner(); return connection.atEndOfFile }
    /// The engine's counters.
    public var counters: TCPCounters { checkOwner(); return connection.counters }

    /// The application's per-connection state (a protocol parser, a
    /// response in progress), kept by the socket for its handler; nil at
    /// first. Set it on the first run; it is released when the socket
    /// finishes (after the handler's last run, with ``state`` `.closed`),
    /// so a context that refers back to the socket makes no lasting cycle.
    /// On executor ``core`` only; reading it retains it (once per run, not
    /// per byte).
    public var context: AnyObject? {
        get { checkOwner(); return applicationContext }
        set { checkOwner(); applicationContext = newValue }
    }

    /// Copies up to ``writableBytes`` bytes into the send buffer; sent at
    /// the end of this run (or the next, if called from a job). Returns
    /// how many were taken. No allocation.
    public func write(_ bytes: UnsafeRawBufferPointer) -> Int {
        checkOwner()
        let n = connection.write(bytes)
        if n > 0 && !isRunning { socket.worker?._withUnsafeGuaranteedRef { _ = $0.schedule() } }
        return n
    }

    /// Copies up to `buffer.count` received bytes out. No allocation.
    /// From a job (not the handler) a read that took bytes schedules a
    /// run, whose output sends the window update the freed buffer may be
    /// due (RFC 9293 §3.8.6.2.2): a peer stopped by a zero window would
    /// otherwise wait for its persist timer.
    public func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        checkOwner()
        let n = connection.read(into: buffer)
        if n > 0 && !isRunning { socket.worker?._withUnsafeGuaranteedRef { _ = $0.schedule() } }
        return n
    }

    /// Half-close (shutdown(SHUT_WR)): a FIN after the data written.
    public func shutdownWrite() {
        checkOwner()
        connection.shutdownWrite()
        if !isRunning { socket.worker?._withUnsafeGuaranteedRef { _ = $0.schedule() } }
    }

    /// Closes the connection (close(2), not shutdown(2)): a FIN after the
    /// data written, and the application reads nothing more: what is
    /// readable and what arrives later is dropped. Once in FIN-WAIT-2 the
    /// connection waits at most ``TCPConfiguration/finWait2Timeout`` for
    /// the peer's FIN (Linux's tcp_fin_timeout), then finishes (counted in
    /// ``StackStatistics/tcpFinWait2Timeouts``). The handler still runs
    /// until CLOSED (writing is over: ``writableBytes`` is 0).
    public func close() {
        checkOwner()
        connection.close(now: tcpNow())
        if !isRunning { socket.worker?._withUnsafeGuaranteedRef { _ = $0.schedule() } }
    }

    /// Resets the connection (RST in a synchronized state) and closes it.
    public func abort() {
        checkOwner()
        guard let c = stack.currentCore else { return }
        var sink = StackTCPSink(core: c)
        // An active open aborted before its first run (a cancelled
        // connect): its SYN never leaves.
        heldSYN = nil
        connection.abort(now: tcpNow(), sink: &sink)
        if !isRunning { socket.worker?._withUnsafeGuaranteedRef { _ = $0.schedule() } }
    }

}

extension EndpointStack {
    /// A TCP listening socket on `port` (IPv6 `::` dual-stack by default,
    /// IPv4 `0.0.0.0` for `.ipv4`). Any thread that is not an executor of
    /// the stack's; allocates (the listener's queues; each accepted
    /// connection allocates its buffers).
    ///
    /// - Parameters:
    ///   - family: IPv4 or IPv6 (dual stack unless `v6Only`).
    ///   - v6Only: IPV6_V6ONLY (IPv6 only): no IPv4 connections.
    ///   - port: the port (no ephemeral port: a listener names its port).
    ///   - configuration: buffers, options, timers of the connections
    ///     (``TCPConfiguration/maximumSegmentLifetime`` sets TIME-WAIT).
    ///   - backlog: the SYN-queue and accept-queue bounds.
    ///   - core: the executor that runs the listener engine.
    ///   - onReadable: the readiness handler of every accepted connection,
    ///     run on the connection's core after each batch of segments or
    ///     timer expiry (and once when it closes): read, write within
    ///     ``TCPSocket/writableBytes``, shut down.
    /// - Throws: `SocketError.addressInUse` when something listens there.
    public func makeTCPListener(_ family: AddressFamily = .ipv6, v6Only: Bool = false, port: UInt16,
                                configuration: TCPConfiguration = TCPConfiguration(), backlog: Int = 128,
                                core: Int = 0, onReadable: @escaping @Sendable (TCPSocket) -> Void)
        throws(SocketError) -> TCPListenerSocket
    {
        precondition(core >= 0 && core < self.configuration.cores)
        let wildcard = family == .ipv4 ? IPAddress(ipv4: 0) : IPAddress(ipv6High: 0, low: 0)
        return try TCPListenerSocket(stack: self, local: InetEndpoint(wildcard, port),
                                     v6Only: family == .ipv6 && v6Only, core: core, configuration: configuration,
                                     backlog: backlog, onReadable: onReadable)
    }
}
