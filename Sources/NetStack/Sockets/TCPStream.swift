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
    /// The pending read: its buffer, its call's id, its task (resumed with
    /// nil when cancelled).
    var reader: (buffer: UnsafeMutableRawBufferPointer, id: UInt64, k: CheckedContinuation<Int?, Never>)?
    var writer: (bytes: [UInt8], offset: Int, id: UInt64, k: CheckedContinuation<Result<Void, any Error>, Never>)?
    var opener: (id: UInt64, k: CheckedContinuation<Result<Void, any Error>, Never>)?
    /// Cancellations that overtook their calls' jobs, per kind of call.
    var reads = TCPStreamCancellation(), writes = TCPStreamCancellation(), opens = TCPStreamCancellation()
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
        if let o = opener, state != .synSent && state != .synReceived {
            opener = nil
            o.k.resume(returning: state == .closed ? .failure(TCPSocketError(s.closeReason)) : .success(()))
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

extension TCPStreamWaiters {
    /// The cancel of read `id`, on the core: resumes the read with nil if
    /// it waits, marks it if its job has not run yet, else nothing (it
    /// completed: its resume happened in an earlier job or run on this
    /// thread, so there is no second one).
    func cancelRead(_ id: UInt64) {
        if let r = reader, r.id == id {
            // The buffer is not touched after this: the handler's runs
            // only read into `reader`'s buffer, now gone.
            reader = nil
            r.k.resume(returning: nil)
        } else {
            reads.cancel(id)
        }
    }

    /// The cancel of write `id`, on the core (as ``cancelRead(_:)``). What
    /// was already copied into the send buffer stays there and is sent.
    func cancelWrite(_ id: UInt64) {
        if let w = writer, w.id == id {
            writer = nil
            w.k.resume(returning: .failure(CancellationError()))
        } else {
            writes.cancel(id)
        }
    }

    /// The cancel of connect `id`, on the core: ABORT (RFC 9293 §3.10.5:
    /// in SYN-SENT the connection is dropped without a segment, in
    /// SYN-RECEIVED a RST goes out), which finishes and frees the socket
    /// at the end of its next run.
    func cancelOpen(_ id: UInt64, _ s: TCPSocket) {
        if let o = opener, o.id == id {
            opener = nil
            s.abort()
            o.k.resume(returning: .failure(CancellationError()))
        } else {
            opens.cancel(id)
        }
    }
}

/// The cancellation bookkeeping of one kind of call (read, write, connect)
/// of a ``TCPStream``, on the socket's core.
///
/// The race it settles: a call posts its job onto the core from its task;
/// its cancel handler (`withTaskCancellationHandler`'s `onCancel`) runs on
/// whatever thread cancels the task, at any time: before the call's job
/// was even posted (a task cancelled already runs the handler at once), or
/// while the task waits. The handler touches nothing itself: it posts a
/// second job onto the same core, so the waiter fields stay confined to
/// that one thread and every resume of the call's continuation happens
/// there, in some order of the two jobs and the handler's runs. Whichever
/// of them first finds the call does the single resume: the cancel job
/// finds a registered waiter with the call's id (takes it out, resumes
/// it); or it comes before the call's job (``started`` is older) and
/// leaves the id in ``cancelledEarly``, where the call's job finds it
/// and resumes with the cancellation instead of registering; or it comes
/// after the call completed (``started`` is the id, no waiter) and does
/// nothing. Ids come from one counter per stream, and calls of one kind
/// are sequential (a second concurrent read traps), so a kind's ids grow
/// in the order their jobs run.
struct TCPStreamCancellation {
    /// The id of the last call whose job ran.
    var started: UInt64 = 0
    /// A call cancelled before its job ran.
    var cancelledEarly: UInt64 = 0

    /// The call's job runs: true if it was cancelled already (resume it
    /// with the cancellation, do nothing else).
    mutating func start(_ id: UInt64) -> Bool {
        started = id
        return cancelledEarly == id
    }

    /// A cancel that found no waiter with its id.
    mutating func cancel(_ id: UInt64) {
        if started < id { cancelledEarly = id }
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
/// concurrent read (or write) traps. The calls that wait (``read(into:)``,
/// ``write(_:)``, ``EndpointStack/connectTCPStream(to:from:configuration:)``,
/// ``TCPStreamListener/accept()``) are cancellable: a cancelled task's call
/// ends promptly (one hop onto the core) with `CancellationError`; a
/// cancelled connect aborts its connection. Calls need the stack running: a call
/// made after ``EndpointStack/shutdown()`` never completes. Dropping the
/// last reference closes the stream (``close()``).
public final class TCPStream: Sendable {
    /// The connection (its ``TCPSocket/core`` and ``TCPSocket/endpoints``;
    /// its methods only on that core's executor).
    public let socket: TCPSocket
    let waiters: TCPStreamWaiters
    private let closed = Atomic<Bool>(false)
    /// The ids of the calls (``TCPStreamCancellation``).
    private let calls = Atomic<UInt64>(0)

    init(socket: TCPSocket, waiters: TCPStreamWaiters) {
        self.socket = socket
        self.waiters = waiters
    }

    deinit { close() }

    /// The two ends.
    public var endpoints: TCPEndpoints { socket.endpoints }

    private var executor: CoreExecutor { socket.stack.group.executors[socket.core] }

    /// A new call's id (never 0).
    private func nextCall() -> UInt64 { calls.wrappingAdd(1, ordering: .relaxed).newValue }

    /// Reads up to `buffer.count` bytes, suspending until at least one is
    /// there; 0 at end of file (the peer's FIN, after every byte before
    /// it), after a reset or a timeout (see ``closeReason``), or once
    /// ``close()`` ran. `buffer` must stay valid until the call returns
    /// (nothing writes it after that, a cancelled call included).
    /// - Throws: `CancellationError` when the task is cancelled before a
    ///   byte arrived (no byte was taken).
    public func read(into buffer: UnsafeMutableRawBufferPointer) async throws(CancellationError) -> Int {
        // The caller keeps `buffer` alive and untouched while suspended;
        // only the job (then the handler) writes it, on the core.
        nonisolated(unsafe) let buffer = buffer
        let socket = socket, waiters = waiters, executor = executor, id = nextCall()
        let n = await withTaskCancellationHandler {
            await withCheckedContinuation { (k: CheckedContinuation<Int?, Never>) in
                executor.execute {
                    if waiters.reads.start(id) { return k.resume(returning: nil) }
                    precondition(waiters.reader == nil, "TCPStream.read: another read is pending")
                    let n = socket.read(into: buffer)
                    if n > 0 || socket.atEndOfFile || socket.state == .closed || waiters.discarding {
                        k.resume(returning: n)
                    } else {
                        waiters.reader = (buffer, id, k)
                    }
                }
            }
        } onCancel: {
            // Any thread: settled on the core (see TCPStreamCancellation).
            executor.execute { waiters.cancelRead(id) }
        }
        guard let n else { throw CancellationError() }
        return n
    }

    /// Reads up to `maximum` bytes into a new array (empty at end of file).
    /// - Throws: `CancellationError` (see ``read(into:)``).
    public func read(upTo maximum: Int) async throws(CancellationError) -> [UInt8] {
        // A buffer of its own (the array's storage cannot be lent across
        // a suspension): two allocations per call.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(maximum, 1), alignment: 16)
        defer { buffer.deallocate() }
        let n = try await read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<maximum]))
        return Array(buffer[0..<n])
    }

    /// Writes all of `bytes`, suspending while the send buffer is full
    /// (backpressure: it resumes once ACKs made room for the rest). Returns
    /// when every byte is in the send buffer (not yet acknowledged).
    /// - Throws: ``TCPSocketError/writeShutDown`` after ``shutdownWrite()``,
    ///   ``TCPSocketError/closed`` after ``close()``, or the connection's
    ///   end (``TCPSocketError/reset``, ``TCPSocketError/timedOut``, ...);
    ///   `CancellationError` when the task is cancelled while it waits
    ///   for room (a prefix of `bytes` may be in the send buffer already,
    ///   and is sent).
    public func write(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        let socket = socket, waiters = waiters, executor = executor, id = nextCall()
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (k: CheckedContinuation<Result<Void, any Error>, Never>) in
                executor.execute {
                    if waiters.writes.start(id) { return k.resume(returning: .failure(CancellationError())) }
                    precondition(waiters.writer == nil, "TCPStream.write: another write is pending")
                    waiters.writer = (bytes, 0, id, k)
                    waiters.pumpWriter(socket)
                }
            }
        } onCancel: {
            executor.execute { waiters.cancelWrite(id) }
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
        /// Waiting accepts, by call id (nil: the listener closed).
        var waiters: [(id: UInt64, k: CheckedContinuation<Result<TCPStream, any Error>, Never>)] = []
        var closed = false
    }
    /// A pthread lock: the connections' cores and accepting tasks contend
    /// (see `PthreadMutex` for the thread sanitizer).
    let state = PthreadLockedValue(State())
    let limit: Int
    /// The ids of the accept calls (their cancel handlers find them by it).
    let calls = Atomic<UInt64>(0)

    init(limit: Int) { self.limit = limit }

    /// Hands `stream` to a waiting task or queues it; false when the
    /// listener is closed or `limit` streams already wait.
    func offer(_ stream: TCPStream) -> Bool {
        let (taken, waiter): (Bool, CheckedContinuation<Result<TCPStream, any Error>, Never>?) = state.withLock { s in
            if s.closed { return (false, nil) }
            if !s.waiters.isEmpty { return (true, s.waiters.removeFirst().k) }
            guard s.ready.count < limit else { return (false, nil) }
            s.ready.append(stream)
            return (true, nil)
        }
        waiter?.resume(returning: .success(stream))
        return taken
    }

    /// The cancel of accept `id` (any thread): resumes it if it still
    /// waits. One resume only: the waiter leaves the list under the lock,
    /// either here or in ``offer(_:)`` or ``TCPStreamListener/close()``,
    /// and only the one that took it resumes it.
    func cancel(_ id: UInt64) {
        let waiter = state.withLock { s in
            s.waiters.firstIndex { $0.id == id }.map { s.waiters.remove(at: $0).k }
        }
        waiter?.resume(returning: .failure(CancellationError()))
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
/// A cancelled task's accept ends with `CancellationError`.
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
    /// - Throws: ``TCPSocketError/closed`` once the listener is closed;
    ///   `CancellationError` when the task is cancelled while it waits.
    public func accept() async throws -> TCPStream {
        let queue = queue
        let id = queue.calls.wrappingAdd(1, ordering: .relaxed).newValue
        return try await withTaskCancellationHandler {
            await withCheckedContinuation { (k: CheckedContinuation<Result<TCPStream, any Error>, Never>) in
                let now: Result<TCPStream, any Error>? = queue.state.withLock { s in
                    // The race with the cancel handler, settled by the lock:
                    // the task's cancelled flag is set before its handler
                    // runs, and the handler takes this lock. If the handler's
                    // section comes first, the flag's store happens before
                    // this section (the lock's release/acquire), so this
                    // check sees it and the call ends here; if this section
                    // comes first and the flag was not yet seen, the waiter
                    // is in the list when the handler looks.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if !s.ready.isEmpty { return .success(s.ready.removeFirst()) }
                    if s.closed { return .failure(TCPSocketError.closed) }
                    s.waiters.append((id, k))
                    return nil
                }
                if let now { k.resume(returning: now) }
            }
        } onCancel: {
            queue.cancel(id)
        }.get()
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
        for w in waiters { w.k.resume(returning: .failure(TCPSocketError.closed)) }
        for s in ready { s.close() }
    }
}

extension EndpointStack {
    /// Active open for Swift Concurrency: connects as
    /// ``connectTCP(to:from:configuration:onReadable:)`` and returns the
    /// stream once the connection is established. Any task.
    /// - Throws: the errors of ``connectTCP(to:from:configuration:onReadable:)``,
    ///   ``TCPSocketError/refused`` (the peer's RST),
    ///   ``TCPSocketError/timedOut`` (no answer to the SYNs), or
    ///   `CancellationError`: the task was cancelled before the handshake
    ///   completed; the connection is aborted (RFC 9293 §3.10.5: dropped
    ///   in SYN-SENT, reset in SYN-RECEIVED) and freed.
    public func connectTCPStream(to remote: InetEndpoint, from local: InetEndpoint? = nil,
                                 configuration: TCPConfiguration = TCPConfiguration()) async throws
        -> TCPStream
    {
        let waiters = TCPStreamWaiters()
        let s = try openTCP(to: remote, from: local, configuration: configuration,
                            onReadable: TCPStreamWaiters.handler, context: waiters)
        let stream = TCPStream(socket: s, waiters: waiters)
        let executor = group.executors[s.core], id: UInt64 = 1
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (k: CheckedContinuation<Result<Void, any Error>, Never>) in
                executor.execute {
                    if waiters.opens.start(id) {
                        s.abort()
                        return k.resume(returning: .failure(CancellationError()))
                    }
                    let state = s.state
                    if state == .synSent || state == .synReceived {
                        waiters.opener = (id, k)
                    } else {
                        k.resume(returning: state == .closed ? .failure(TCPSocketError(s.closeReason)) : .success(()))
                    }
                }
            }
        } onCancel: {
            // Any thread: settled on the core (see TCPStreamCancellation).
            executor.execute { waiters.cancelOpen(id, s) }
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
