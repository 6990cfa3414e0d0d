import CSMPLinux
import Synchronization

/// A pinned thread per core that runs everything bound to that core:
/// mailbox messages from other cores, jobs from foreign threads,
/// ``KernelContinuation``s on a timer wheel, registered pollers and Swift tasks
/// (``CoreExecutor`` is a `TaskExecutor`).
///
/// The loop (see <doc:ExecutorModel>):
/// 1. drain incoming mailboxes (batches, per-sender order),
/// 2. run jobs queued by non-executor threads,
/// 3. take hand-offs of newly scheduled continuations, advance the timer
///    wheel to the current millisecond and run the due continuations,
/// 4. run pollers,
/// 5. report an RCU (QSBR) quiescent state,
/// 6. when a pass found nothing to do: spin a bounded number of passes,
///    then go RCU-offline and park on the core's ``Doorbell`` until a
///    sender rings, the next timer tick is due, or (with pollers) a poll
///    interval passes.
///
/// The type is split by concept over the files of this folder: the loop
/// (`CoreExecutor+Loop.swift`), jobs and calls (`+Jobs`), the continuation
/// hand-off (`+Handoff`), pollers (`+Pollers`), shutdown (`+Shutdown`), the
/// `TaskExecutor` bridge (`+TaskExecutor`), statistics, the group and its
/// configuration. The stored state below is internal so those extensions
/// can reach it; its comments say which thread may touch what.
///
/// Concurrency contract: every method may be called from any thread unless
/// it says otherwise. Work submitted to one executor runs on its thread,
/// one item at a time, never nested inside another item except inside a
/// synchronous `call(_:)` that the item makes. Code on the executor is
/// inside an implicit QSBR read section until it returns or makes one of
/// the library's blocking calls (`call(_:)`, ``send(_:to:)`` to a full
/// ring, ``KernelContinuation/cancelAndWait()``): those are quiescent
/// points (see "What may block" in <doc:ExecutorModel>). Create executors
/// with ``CoreExecutorGroup``.
public final class CoreExecutor: @unchecked Sendable {
    // @unchecked: the `@exclusivity(unchecked)` fields are touched only by
    // the executor's own thread; everything shared is atomic, a Mutex, or
    // immutable.

    /// The index of this executor in its group (its mailbox "core").
    public let core: Int
    /// The CPU the thread is pinned to (nil if unpinned).
    public let cpu: Int?
    let mesh: MailboxMesh
    let doorbell: Doorbell
    let configuration: CoreExecutorGroup.Configuration
    let messageHandler: (@Sendable (_ sender: Int, _ message: MailboxMessage) -> Void)?

    /// Continuations handed to this executor by schedulers (an intrusive
    /// Treiber stack of retained `KernelContinuation`s, taken whole by the owner).
    let handoffHead = Atomic<UnsafeMutableRawPointer?>(nil)
    /// Jobs from threads that are not executors. A pthread lock, not a
    /// `Mutex`: several foreign threads append at once, and the thread
    /// sanitizer must see each one's hand-off to this executor (a contended
    /// `Mutex` hides it; `hasForeignJobs` orders only the last appender).
    let foreignJobs = PthreadLockedValue<[ForeignJob]>([])
    let hasForeignJobs = Atomic<Bool>(false)
    let pollers = Mutex<[@Sendable () -> Int]>([])
    let pollersVersion = Atomic<Int>(0)
    /// 0 running, 1 stop (run pending continuations once), 2 stop (cancel them).
    let stopRequest = Atomic<Int>(0)
    /// Set once the thread has ended and its leftovers were collected: from
    /// then on nobody will take the hand-off stack, so ``handOff(_:delay:)``
    /// must not leave a retained continuation on it (a continuation holds
    /// its executor strongly: that would be a reference cycle).
    let closed = Atomic<Bool>(false)
    let finished = Atomic<Bool>(false)
    /// True while the executor is parked for at most one timer tick.
    let tickParked = Atomic<Bool>(false)
    let thread = Mutex<PinnedThread<Void>?>(nil)
    let report = Mutex(CoreExecutorShutdownReport())

    // Statistics: single writer (the executor thread), relaxed load+store.
    let statMessages = Atomic<Int>(0)
    let statForeign = Atomic<Int>(0)
    let statContinuations = Atomic<Int>(0)
    let statPollerWork = Atomic<Int>(0)
    let statParks = Atomic<Int>(0)
    let statLoops = Atomic<Int>(0)
    let statAbsorbed = Atomic<Int>(0)
    // Any thread (added to): work that reached the executor after it left
    // its loop.
    let statLateMessages = Atomic<Int>(0)
    let statLateJobs = Atomic<Int>(0)
    let statTaskJobsRedirected = Atomic<Int>(0)

    // Owner-only state (the executor thread).
    @exclusivity(unchecked) var wheel: TimerWheel
    @exclusivity(unchecked) var localPollers: [@Sendable () -> Int] = []
    @exclusivity(unchecked) var localPollersVersion = 0
    /// Messages taken out of the rings and not yet handled (see
    /// ``MessageBacklog``): the loop's drain handles them in order; a
    /// `send` to a full ring absorbs into it instead of running handlers.
    @exclusivity(unchecked) var backlog: MessageBacklog
    @exclusivity(unchecked) var drainSender = 0
    /// How many synchronous `call(_:)` waits are active on this thread
    /// (bounded by `Configuration.maxCallNesting`).
    @exclusivity(unchecked) var callNesting = 0
    /// Messages moved per ring batch.
    static let batchSize = 64

    /// Set (release) right after the thread left its loop, before it
    /// reports and unregisters: from then on nothing in its rings or queue
    /// runs, so senders stop waiting for room (see ``send(_:to:)``) and
    /// callers stop waiting for replies.
    let leftLoop = Atomic<Bool>(false)
    /// Set by ``wake()`` and cleared by the loop before it runs the pollers:
    /// a wake that lands after the last poll is still seen by the park.
    let wakeRequested = Atomic<Bool>(false)

    init(core: Int, cpu: Int?, mesh: MailboxMesh, configuration: CoreExecutorGroup.Configuration,
         messageHandler: (@Sendable (Int, MailboxMessage) -> Void)?) {
        self.core = core
        self.cpu = cpu
        self.mesh = mesh
        self.doorbell = mesh.doorbell(of: core)
        self.configuration = configuration
        self.messageHandler = messageHandler
        self.wheel = TimerWheel(now: TimerWheel.nowTick())
        self.backlog = MessageBacklog(initialCapacity: CoreExecutor.batchSize * 4)
    }

    func start(name: String) {
        let t = PinnedThread(cpu: cpu, name: name) { [self] in self.threadMain() }
        thread.withLock { $0 = t }
    }

    deinit {
        // Continuations handed off after the thread ended: drop their retains.
        _ = releaseHandoffsAfterClose()
    }

    /// The executor whose thread is the calling thread, or nil.
    public static var current: CoreExecutor? {
        guard let raw = smp_current_executor() else { return nil }
        return Unmanaged<CoreExecutor>.fromOpaque(raw).takeUnretainedValue()
    }

    /// True on this executor's own thread.
    public var isCurrent: Bool {
        smp_current_executor() == Unmanaged.passUnretained(self).toOpaque()
    }

    /// The executor of the calling thread if it belongs to the same mesh
    /// (so it may use the SPSC rings as sender `core`).
    var currentPeer: CoreExecutor? {
        guard let me = CoreExecutor.current, me.mesh === mesh else { return nil }
        return me
    }

    /// Wakes the executor so that its pollers run again soon: call it after
    /// making input available to a poller. Any thread.
    ///
    /// Never lost: the request is a flag the loop clears before it runs its
    /// pollers and that the park re-checks, so a wake that lands after the
    /// last poll of a pass (when the doorbell still reads "running") keeps
    /// the executor from sleeping. Costs a store plus the doorbell's fence
    /// and load; a `futex_wake` only if the executor is parked.
    public func wake() {
        // Release: the loop's acquiring exchange that clears the flag (see
        // runPollers) synchronizes with this store, so the poll after the
        // clear sees the input published before `wake()`. For the park:
        // this store is the ringer's publication in the doorbell protocol
        // (the ring's fence, or the parker's membarrier, orders it before
        // the load of the doorbell word; the park re-checks the flag with a
        // sequentially consistent load after announcing).
        wakeRequested.store(true, ordering: .releasing)
        doorbell.ring()
    }

    /// The mesh this executor's mailboxes belong to (its group's).
    var mailboxes: MailboxMesh { mesh }
}
