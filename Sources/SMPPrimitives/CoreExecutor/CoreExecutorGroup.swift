import Synchronization

/// N executors, one per core, each on its own pinned thread, sharing one
/// ``MailboxMesh``.
///
/// Concurrency contract: any thread may use the executors; ``shutdown(runPending:)``
/// once, from a thread that is not one of the executors.
public final class CoreExecutorGroup: Sendable {
    /// The executors, indexed by core (their ``CoreExecutor/core``).
    public let executors: [CoreExecutor]
    /// The mesh of mailbox rings between the executors.
    public let mailboxes: MailboxMesh
    private let stopped = Atomic<Bool>(false)

    /// Starts `count` executors, each on its own (by default pinned) thread.
    /// Any thread; costs `count` thread creations and the mesh's `count²`
    /// rings.
    /// - Parameters:
    ///   - count: the number of executors (≥ 1); core `i`'s thread is
    ///     pinned to CPU `i` (modulo the CPU count) unless
    ///     `configuration.pinned` is false.
    ///   - configuration: spinning, mailbox capacity, the pollers' park
    ///     timeout and pinning (see ``Configuration``).
    ///   - messageHandler: called on the receiving executor for messages
    ///     without a function (`MailboxMessage(a, b)`).
    public init(count: Int = onlineCPUCount, configuration: Configuration = Configuration(),
                messageHandler: (@Sendable (_ sender: Int, _ message: MailboxMessage) -> Void)? = nil) {
        precondition(count >= 1)
        let mesh = MailboxMesh(cores: count, capacity: configuration.mailboxCapacity,
                               fence: configuration.doorbellFence)
        mailboxes = mesh
        executors = (0..<count).map {
            CoreExecutor(core: $0, cpu: configuration.pinned ? $0 : nil, mesh: mesh,
                         configuration: configuration, messageHandler: messageHandler)
        }
        for e in executors { e.start(name: "smp-core-\(e.core)") }
    }

    /// The executor of core `core` (modulo the group size). Any thread.
    public func executor(for core: Int) -> CoreExecutor { executors[core % executors.count] }

    /// Runs `body` on core `core` and returns its result, blocking the
    /// caller (see ``CoreExecutor``'s `call`; from async code prefer
    /// the async overload, which does not block a cooperative thread).
    public func call<R>(on core: Int, _ body: sending @escaping () -> sending R) -> sending R {
        executor(for: core).call(body)
    }

    /// Runs `body` on core `core` and resumes the caller with its result
    /// (see ``CoreExecutor``'s async `call`). Any task; the caller suspends
    /// instead of blocking its thread.
    public func call<R>(on core: Int, _ body: sending @escaping () -> sending R) async -> sending R {
        await executor(for: core).call(body)
    }

    /// Stops every executor and joins its thread. Messages and jobs already
    /// queued run; pending continuations run once now (`runPending`) or are
    /// cancelled; work that arrives after an executor stopped is counted in
    /// the report and dropped. Threads unregister from RCU. Idempotent.
    @discardableResult
    public func shutdown(runPending: Bool = true) -> CoreExecutorShutdownReport {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else {
            return CoreExecutorShutdownReport()
        }
        precondition(CoreExecutor.current?.mailboxes !== mailboxes, "shutdown from one of the group's own executors")
        for e in executors { e.requestStop(runPending: runPending) }
        for e in executors { _ = e.join() }
        return executors.reduce(CoreExecutorShutdownReport()) { $0 + $1.collectLeftovers() }
    }

    /// Shuts down (running pending continuations) if nobody did.
    deinit { shutdown() }
}
