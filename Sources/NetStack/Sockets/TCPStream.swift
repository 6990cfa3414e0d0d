import SMPPrimitives
import Synchronization

/// The waiters of a ``TCPStream``: the tasks suspended in its async calls,
/// with what each waits for. The stream's ``TCPSocket/context`` (so the
/// socket's readiness handler finds it and releases it when the
/// connection finishes); it refers to neither the socket nor the stream,
/// so no cycle forms.
final class TCPStreamWaiters: @unchecked Sendable {
    // @unchecked Sendable: every field is read and written only on the
    // socket's core executor, in the handler's runs and in the jobs the
    // stream posts there (one at a time on that thread). A job's `execute`
    // (a mutex-protected queue or a mailbox ring) orders what the posting
    // task did before it; a continuation's resume orders what the core did
    // before it for the resumed task.
    var reader: (buffer: UnsafeMutableRawBufferPointer, k: CheckedContinuation<Int, Never>)?
    var writer: (bytes: [UInt8], offset: Int, k: CheckedContinuation<Result<Void, TCPSocketError>, Never>)?
    var opener: CheckedContinuation<Result<Void, TCPSocketError>, Never>?
    /// ``TCPStream/shutdownWrite()`` or ``TCPStream/close()`` ran.
    var writeShut = false
    /// ``TCPStream/close()`` ran: what arrives is read and dropped.
    var discarding = false

    /// The readiness handler of every stream's socket: it captures
    /// nothing; the waiters are the socket's context.
    static let handler: @Sendable (TCPSocket) -> Void = { s in
        (s.context as? TCPStreamWaiters)?.service(s)
    }

    /// One run of the handler: resumes what the run made possible.
    func service(_ s: TCPSocket) {
        let state = s.state
        if let k = opener, state != .synSent && state != .synReceived {
            opener = nil
            k.resume(returning: state == .closed ? .failure(TCPSocketError(s.closeReason)) : .success(()))
        }
        if let r = reader {
            let n = s.read(into: r.buffer)
            if n > 0 || s.atEndOfFile || state == .closed {
                reader = nil
                r.k.resume(returning: n)
            }
        }
        if writer != nil { pumpWriter(s) }
    }

    /// Writes what fits of the pending write; resumes its task when all
    /// of it is in the send buffer or it can never be.
    func pumpWriter(_ s: TCPSocket) {
        guard var w = writer else { return }
        let n = w.bytes.withUnsafeBytes { s.write(UnsafeRawBufferPointer(rebasing: $0[w.offset...])) }
        w.offset += n
        if w.offset == w.bytes.count {
            writer = nil
            w.k.resume(returning: .success(()))
            return
        }
        let state = s.state
        let maySend = state == .synSent || state == .synReceived || state == .established || state == .closeWait
        if discarding || writeShut || !maySend {
            writer = nil
            let error: TCPSocketError = discarding ? .closed
                : writeShut ? .writeShutDown : TCPSocketError(s.closeReason)
            w.k.resume(returning: .failure(error))
            return
        }
        writer = w
    }

    /// ``TCPStream/close()`` on the core: FIN after what was written,
    /// later data dropped, waiting calls ended.
    func close(_ s: TCPSocket) {
        discarding = true
        writeShut = true
        // The engine's orphan close: it drops what arrives, and an orphan
        // in FIN-WAIT-2 ends after TCPConfiguration.finWait2Timeout.
        s.close()
        if let r = reader {
            reader = nil
            r.k.resume(returning: 0)
        }
        pumpWriter(s)
    }
}

/// A TCP connection of an ``EndpointStack`` for Swift Concurrency (the
/// async form of ``TCPSocket``): made by
/// ``EndpointStack/connectTCPStream(to:from:configuration:)`` or
/// ``TCPStreamListener/accept()``.
///
/// Built on the executor form: the connection is a ``TCPSocket`` on its
/// flow's owner core, whose readiness handler is the stream's. Each call
/// posts one job onto that core (`CoreExecutor.execute`), which does what
/// it can at once (copies bytes out of the receive buffer, into the send
/// buffer) and otherwise leaves the task's continuation with the socket;
/// the handler's next run (segments arrived, ACKs freed the send buffer,
/// the peer's FIN, a reset) finishes the work and resumes the task. No
/// polling, no lock on the data path.
///
/// Cost per call: one hop onto the core and one back (the job: a closure
/// box and, from a thread that is not an executor of the stack, the
/// executor's foreign-job mutex and a doorbell ring; the resume: the
/// continuation's canary and an enqueue of the task on its executor):
/// about two allocations and two thread hand-offs, plus one copy of the
/// bytes. Read into large buffers and write large arrays to amortise it.
///
/// Concurrency contract: a `Sendable` handle, usable from any task or
/// thread. One ``read(into:)`` and one ``write(_:)`` may be pending at a
/// time (a reader task and a writer task may run concurrently); a second
/// concurrent read (or write) traps. The calls are not cancellable: a
/// cancelled task stays suspended until its call completes (``close()``
/// from another task completes it). Calls need the stack running: a call
/// made after ``EndpointStack/shutdown()`` never completes. Dropping the
/// last reference closes the stream (``close()``).
public final class TCPStream: Sendable {
    /// The connection (its ``TCPSocket/core`` and ``TCPSocket/endpoints``;
    /// its methods only on that core's executor).
    public let socket: TCPSocket
    let waiters: TCPStreamWaiters
    private let closed = Atomic<Bool>(false)

    init(socket: TCPSocket, waiters: TCPStreamWaiters) {
        self.socket = socket
        self.waiters = waiters
    }

    deinit { close() }

    /// The two ends.
    public var endpoints: TCPEndpoints { socket.endpoints }

    private var executor: CoreExecutor { socket.stack.group.executors[socket.core] }

    /// Reads up to `buffer.count` bytes, suspending until at least one is
    /// there; 0 at end of file (the peer's FIN, after every byte before
    /// it), after a reset or a timeout (see ``closeReason``), or once
    /// ``close()`` ran. `buffer` must stay valid until the call returns.
    public func read(into buffer: UnsafeMutableRawBufferPointer) async -> Int {
        // The caller keeps `buffer` alive and untouched while suspended;
        // only the job (then the handler) writes it, on the core.
        nonisolated(unsafe) let buffer = buffer
        let socket = socket, waiters = waiters
        return await withCheckedContinuation { (k: CheckedContinuation<Int, Never>) in
            executor.execute {
                precondition(waiters.reader == nil, "TCPStream.read: another read is pending")
                let n = socket.read(into: buffer)
                if n > 0 || socket.atEndOfFile || socket.state == .closed || waiters.discarding {
                    k.resume(returning: n)
                } else {
                    waiters.reader = (buffer, k)
                }
            }
        }
    }

    /// Reads up to `maximum` bytes into a new array (empty at end of file).
    public func read(upTo maximum: Int) async -> [UInt8] {
        // A buffer of its own (the array's storage cannot be lent across
        // a suspension): two allocations per call.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(maximum, 1), alignment: 16)
        defer { buffer.deallocate() }
        let n = await read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<maximum]))
        return Array(buffer[0..<n])
    }

    /// Writes all of `bytes`, suspending while the send buffer is full
    /// (backpressure: it resumes once ACKs made room for the rest). Returns
    /// when every byte is in the send buffer (not yet acknowledged).
    /// - Throws: ``TCPSocketError/writeShutDown`` after ``shutdownWrite()``,
    ///   ``TCPSocketError/closed`` after ``close()``, or the connection's
    ///   end (``TCPSocketError/reset``, ``TCPSocketError/timedOut``, ...).
    public func write(_ bytes: [UInt8]) async throws(TCPSocketError) {
        guard !bytes.isEmpty else { return }
        let socket = socket, waiters = waiters
        let result = await withCheckedContinuation { (k: CheckedContinuation<Result<Void, TCPSocketError>, Never>) in
            executor.execute {
                precondition(waiters.writer == nil, "TCPStream.write: another write is pending")
                waiters.writer = (bytes, 0, k)
                waiters.pumpWriter(socket)
            }
        }
        try result.get()
    }

    /// Half-close (shutdown(SHUT_WR)): a FIN after the bytes written;
    /// reading goes on. Returns once the FIN is queued (a pending write
    /// then fails with ``TCPSocketError/writeShutDown``).
    public func shutdownWrite() async {
        let socket = socket, waiters = waiters
        await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
            executor.execute {
                waiters.writeShut = true
                socket.shutdownWrite()
                waiters.pumpWriter(socket)
                k.resume()
            }
        }
    }

    /// Closes the stream: a FIN after the bytes written, what arrives
    /// later is dropped, a pending read returns 0 and a pending write
    /// fails with ``TCPSocketError/closed``. The connection then finishes
    /// on its own (after TIME-WAIT, or the peer's FIN acknowledged).
    /// Idempotent; any thread; does not wait (one job onto the core).
    public func close() {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        let socket = socket, waiters = waiters
        executor.execute { waiters.close(socket) }
    }

    /// A stream handed to no one (its connection is aborted by the caller).
    func abandon() { closed.store(true, ordering: .relaxed) }

    /// The connection's state (one hop onto the core).
    public var state: TCPConnectionState {
        get async {
            let socket = socket
            return await socket.stack.group.call(on: socket.core) { socket.state }
        }
    }

    /// Why the connection closed, nil while open (one hop onto the core).
    public var closeReason: TCPCloseReason? {
        get async {
            let socket = socket
            return await socket.stack.group.call(on: socket.core) { socket.closeReason }
        }
    }
}

/// The accepted streams of a ``TCPStreamListener`` not yet taken, and the
/// tasks waiting in ``TCPStreamListener/accept()``.
final class TCPAcceptQueue: Sendable {
    struct State {
        var ready: [TCPStream] = []
        var waiters: [CheckedContinuation<TCPStream?, Never>] = []
        var closed = false
    }
    /// A pthread lock: the connections' cores and accepting tasks contend
    /// (see `PthreadMutex` for the thread sanitizer).
    let state = PthreadLockedValue(State())
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Hands `stream` to a waiting task or queues it; false when the
    /// listener is closed or `limit` streams already wait.
    func offer(_ stream: TCPStream) -> Bool {
        let (taken, waiter): (Bool, CheckedContinuation<TCPStream?, Never>?) = state.withLock { s in
            if s.closed { return (false, nil) }
            if !s.waiters.isEmpty { return (true, s.waiters.removeFirst()) }
            guard s.ready.count < limit else { return (false, nil) }
            s.ready.append(stream)
            return (true, nil)
        }
        waiter?.resume(returning: stream)
        return taken
    }
}

/// A TCP listening socket for Swift Concurrency: ``accept()`` returns each
/// connection as a ``TCPStream``. Made by
/// ``EndpointStack/makeTCPStreamListener(_:v6Only:port:configuration:backlog:core:)``.
///
/// Built on ``TCPListenerSocket``: a handshake completes on the listener's
/// core, the connection's socket starts on its owner core, and its first
/// handler run there makes the stream and hands it to a task waiting in
/// ``accept()`` (or queues it, at most `backlog` of them: beyond that the
/// connection is reset, as Linux drops the handshake's ACK when the
/// accept queue is full).
///
/// Concurrency contract: any task or thread; several tasks may wait in
/// ``accept()`` (served in order). ``close()`` ends every waiting accept
/// (they throw ``TCPSocketError/closed``) and closes the queued streams.
/// Cost per accept: one lock, and when it waits one continuation resumed
/// from the connection's core.
public final class TCPStreamListener: Sendable {
    /// The listening socket underneath.
    public let listener: TCPListenerSocket
    private let queue: TCPAcceptQueue

    init(listener: TCPListenerSocket, queue: TCPAcceptQueue) {
        self.listener = listener
        self.queue = queue
    }

    deinit { close() }

    /// The bound endpoint.
    public var local: InetEndpoint { listener.local }

    /// The next connection, suspending until one is established.
    /// - Throws: ``TCPSocketError/closed`` once the listener is closed.
    public func accept() async throws(TCPSocketError) -> TCPStream {
        let queue = queue
        let stream = await withCheckedContinuation { (k: CheckedContinuation<TCPStream?, Never>) in
            let now: TCPStream?? = queue.state.withLock { s in
                if !s.ready.isEmpty { return .some(s.ready.removeFirst()) }
                if s.closed { return .some(nil) }
                s.waiters.append(k)
                return .none
            }
            if let now { k.resume(returning: now) }
        }
        guard let stream else { throw .closed }
        return stream
    }

    /// Stops listening (see ``TCPListenerSocket/close()``), ends waiting
    /// accepts, closes the streams nobody accepted. Idempotent; any thread
    /// that is not an executor of the stack's.
    public func close() {
        let (ready, waiters) = queue.state.withLock { s in
            s.closed = true
            defer { s.ready = []; s.waiters = [] }
            return (s.ready, s.waiters)
        }
        listener.close()
        for k in waiters { k.resume(returning: nil) }
        for s in ready { s.close() }
    }
}

extension EndpointStack {
    /// Active open for Swift Concurrency: connects as
    /// ``connectTCP(to:from:configuration:onReadable:)`` and returns the
    /// stream once the connection is established. Any task.
    /// - Throws: the errors of ``connectTCP(to:from:configuration:onReadable:)``,
    ///   ``TCPSocketError/refused`` (the peer's RST),
    ///   ``TCPSocketError/timedOut`` (no answer to the SYNs).
    public func connectTCPStream(to remote: InetEndpoint, from local: InetEndpoint? = nil,
                                 configuration: TCPConfiguration = TCPConfiguration()) async throws(TCPSocketError)
        -> TCPStream
    {
        let waiters = TCPStreamWaiters()
        let s = try openTCP(to: remote, from: local, configuration: configuration,
                            onReadable: TCPStreamWaiters.handler, context: waiters)
        let stream = TCPStream(socket: s, waiters: waiters)
        let result = await withCheckedContinuation { (k: CheckedContinuation<Result<Void, TCPSocketError>, Never>) in
            group.executors[s.core].execute {
                let state = s.state
                if state == .synSent || state == .synReceived {
                    waiters.opener = k
                } else {
                    k.resume(returning: state == .closed ? .failure(TCPSocketError(s.closeReason)) : .success(()))
                }
            }
        }
        try result.get()
        return stream
    }

    /// A TCP listener for Swift Concurrency (the async form of
    /// ``makeTCPListener(_:v6Only:port:configuration:backlog:core:onReadable:)``,
    /// same parameters): its connections come out of
    /// ``TCPStreamListener/accept()``; `backlog` also bounds the
    /// established streams waiting for an accept. Any thread that is not
    /// an executor of the stack's.
    /// - Throws: `SocketError.addressInUse` when something listens there.
    public func makeTCPStreamListener(_ family: AddressFamily = .ipv6, v6Only: Bool = false, port: UInt16,
                                      configuration: TCPConfiguration = TCPConfiguration(), backlog: Int = 128,
                                      core: Int = 0) throws(SocketError) -> TCPStreamListener
    {
        let queue = TCPAcceptQueue(limit: backlog)
        let listener = try makeTCPListener(family, v6Only: v6Only, port: port, configuration: configuration,
                                           backlog: backlog, core: core) { [weak queue] s in
            if s.context == nil {
                // The first run of an accepted connection (on its core).
                guard s.state != .closed else { return }
                let waiters = TCPStreamWaiters()
                s.context = waiters
                let stream = TCPStream(socket: s, waiters: waiters)
                guard let queue, queue.offer(stream) else {
                    stream.abandon()
                    s.abort()
                    return
                }
            }
            (s.context as? TCPStreamWaiters)?.service(s)
        }
        return TCPStreamListener(listener: listener, queue: queue)
    }
}
