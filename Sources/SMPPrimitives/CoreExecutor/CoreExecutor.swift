import CSMPLinux
import Synchronization

/// A pinned thread per core that runs everything bound to that core:
/// mailbox messages from other cores, jobs from foreign threads,
/// ``KernelContinuation``s on a timer wheel, registered pollers and Swift tasks
/// (``CoreExecutor`` is a `TaskExecutor`).
///
/// The loop (see docs/ExecutorModel.md):
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
/// Concurrency contract: every method may be called from any thread unless
/// it says otherwise. Work submitted to one executor runs on its thread,
/// one item at a time. Create executors with ``CoreExecutorGroup``.
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
    private let handoffHead = Atomic<UnsafeMutableRawPointer?>(nil)
    private let foreignJobs = Mutex<[ForeignJob]>([])
    private let hasForeignJobs = Atomic<Bool>(false)
    private let pollers = Mutex<[@Sendable () -> Int]>([])
    private let pollersVersion = Atomic<Int>(0)
    /// 0 running, 1 stop (run pending continuations once), 2 stop (cancel them).
    private let stopRequest = Atomic<Int>(0)
    /// Set once the thread has ended and its leftovers were collected: from
    /// then on nobody will take the hand-off stack, so ``handOff(_:delay:)``
    /// must not leave a retained continuation on it (a continuation holds
    /// its executor strongly: that would be a reference cycle).
    private let closed = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(false)
    /// True while the executor is parked for at most one timer tick.
    private let tickParked = Atomic<Bool>(false)
    private let thread = Mutex<PinnedThread?>(nil)
    private let report = Mutex(CoreExecutorShutdownReport())

    // Statistics: single writer (the executor thread), relaxed load+store.
    private let statMessages = Atomic<Int>(0)
    private let statForeign = Atomic<Int>(0)
    private let statContinuations = Atomic<Int>(0)
    private let statPollerWork = Atomic<Int>(0)
    private let statParks = Atomic<Int>(0)
    private let statLoops = Atomic<Int>(0)

    // Owner-only state.
    @exclusivity(unchecked) private var wheel: TimerWheel
    @exclusivity(unchecked) private var localPollers: [@Sendable () -> Int] = []
    @exclusivity(unchecked) private var localPollersVersion = 0
    /// The staging buffer of the reentrant mailbox drain: messages copied
    /// out of a ring and not yet handled. A handler that waits (a
    /// synchronous call, a full ring) drains re-entrantly; it continues from
    /// `stagedIndex`, so every message is handled once and in order.
    private let staged: UnsafeMutablePointer<MailboxMessage>
    @exclusivity(unchecked) private var stagedIndex = 0
    @exclusivity(unchecked) private var stagedCount = 0
    @exclusivity(unchecked) private var stagedSender = 0
    @exclusivity(unchecked) private var drainSender = 0
    static let stageCapacity = 64

    init(core: Int, cpu: Int?, mesh: MailboxMesh, configuration: CoreExecutorGroup.Configuration,
         messageHandler: (@Sendable (Int, MailboxMessage) -> Void)?) {
        self.core = core
        self.cpu = cpu
        self.mesh = mesh
        self.doorbell = mesh.doorbell(of: core)
        self.configuration = configuration
        self.messageHandler = messageHandler
        self.wheel = TimerWheel(now: TimerWheel.nowTick())
        self.staged = .allocate(capacity: CoreExecutor.stageCapacity)
    }

    func start(name: String) {
        let t = PinnedThread(cpu: cpu, name: name) { [self] in self.threadMain() }
        thread.withLock { $0 = t }
    }

    deinit {
        // Continuations handed off after the thread ended: drop their retains.
        _ = releaseHandoffsAfterClose()
        staged.deallocate()
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
    private var currentPeer: CoreExecutor? {
        guard let me = CoreExecutor.current, me.mesh === mesh else { return nil }
        return me
    }

    // MARK: - submitting work

    /// Runs `body` on this executor's thread. Any thread.
    ///
    /// From an executor of the same group the job travels through that
    /// core's mailbox ring (waiting, and draining the caller's own mailboxes,
    /// while the ring is full); from any other thread it goes through a
    /// mutex-protected queue. Allocates one box for the closure.
    public func execute(_ body: @escaping @Sendable () -> Void) {
        if let me = currentPeer {
            let box = Unmanaged.passRetained(ClosureBox(body)).toOpaque()
            me.send(MailboxMessage(function: runClosureMessage, UInt(bitPattern: box)), to: self)
        } else {
            enqueueForeign(.closure(body))
        }
    }

    private func enqueueForeign(_ job: ForeignJob) {
        foreignJobs.withLock { $0.append(job) }
        // Set after the append (see drainForeign for why the order matters);
        // the doorbell's fence orders this store before its load.
        hasForeignJobs.store(true, ordering: .sequentiallyConsistent)
        doorbell.ring()
    }

    /// Sends `message` to `target` through the (self, target) ring, waiting
    /// while it is full; while waiting it handles this executor's own
    /// incoming messages, so two executors sending to each other cannot
    /// deadlock. Only on this executor's thread; `target` in the same group.
    public func send(_ message: MailboxMessage, to target: CoreExecutor) {
        precondition(isCurrent && target.mesh === mesh, "send(_:to:) belongs on the sending executor's thread")
        mesh.send(message, from: core, to: target.core) { _ = self.drainIncoming(max: 64) }
    }

    /// Sends `message` to `target` without waiting. Only on this executor's
    /// thread. Returns false (and counts a full event) if the ring is full.
    public func trySend(_ message: MailboxMessage, to target: CoreExecutor) -> Bool {
        precondition(isCurrent && target.mesh === mesh, "trySend(_:to:) belongs on the sending executor's thread")
        return mesh.trySend(message, from: core, to: target.core)
    }

    /// Runs `body` on this executor and returns its result, blocking the
    /// caller. On the executor itself it runs inline. From another executor
    /// the caller keeps handling its own incoming mailboxes while it waits
    /// (never its timers or pollers); from a foreign thread it blocks on a
    /// futex (from async code use the async overload instead: blocking a
    /// cooperative-pool thread can starve the tasks it waits for). Must not
    /// be used during shutdown.
    public func call<R: Sendable>(_ body: @escaping @Sendable () -> R) -> R {
        if isCurrent { return body() }
        let box = CallBox(body, waiter: currentPeer)
        execute { box.complete() }
        if let me = box.waiter {
            me.waitDraining { box.isDone }
        } else {
            box.event.wait()
        }
        return box.takeResult()
    }

    /// Runs `body` on this executor and resumes the caller with its result.
    public func call<R: Sendable>(_ body: @escaping @Sendable () -> R) async -> R {
        await withCheckedContinuation { (k: CheckedContinuation<R, Never>) in
            execute { k.resume(returning: body()) }
        }
    }

    /// Registers a poller, run once per loop pass; it returns how much work
    /// it did (0 = idle, which lets the executor park). While pollers exist
    /// an idle executor parks at most `Configuration.pollerParkNanoseconds`.
    /// Any thread; takes effect at the next pass.
    public func addPoller(_ poller: @escaping @Sendable () -> Int) {
        pollers.withLock { $0.append(poller) }
        pollersVersion.add(1, ordering: .releasing)
        doorbell.ring()
    }

    /// Wakes the executor if it is parked (e.g. after making input
    /// available to a poller). Any thread; one fence and one load when it
    /// is running.
    public func wake() { doorbell.ring() }

    // MARK: - continuation hand-off

    /// Pushes a continuation (whose `queued` bit the caller just set) onto
    /// the hand-off stack with a retain, then rings the doorbell.
    func handOff(_ c: KernelContinuation, delay: Int) {
        let raw = Unmanaged.passRetained(c).toOpaque()
        var head = handoffHead.load(ordering: .relaxed)
        while true {
            c.handoffNext = head
            // Release publishes handoffNext (and the state CAS before it) to
            // the owner's acquiring exchange; sequentially consistent so it
            // also serves as the store half of the doorbell protocol.
            let (ok, cur) = handoffHead.compareExchange(expected: head, desired: raw,
                                                        ordering: .sequentiallyConsistent)
            if ok { break }
            head = cur
        }
        // An executor parked for at most one tick wakes by itself before a
        // continuation delayed by a tick or more is due (it files it then,
        // at most one tick late): no wake-up system call. Otherwise ring.
        // Dekker with collectLeftovers: it stores `closed` then empties the
        // stack; we push (sequentially consistent) then load `closed`. Either
        // it sees our node, or we see `closed` and empty the stack ourselves.
        if closed.load(ordering: .sequentiallyConsistent) {
            _ = releaseHandoffsAfterClose()
            return
        }
        if delay > 0 && tickParked.load(ordering: .sequentiallyConsistent) { return }
        doorbell.ring()
    }

    /// Takes the whole hand-off stack and cancels and releases each
    /// continuation on it. Only once the executor thread is gone. Concurrent
    /// callers are fine: the exchange gives each node to exactly one caller.
    /// - Returns: how many pending runs were cancelled.
    private func releaseHandoffsAfterClose() -> Int {
        var cancelled = 0
        var p = handoffHead.exchange(nil, ordering: .acquiring)
        while let raw = p {
            let c = Unmanaged<KernelContinuation>.fromOpaque(raw)
            p = c._withUnsafeGuaranteedRef { $0.handoffNext }
            if c._withUnsafeGuaranteedRef({ $0.cancel() }) { cancelled += 1 }
            c.release()
        }
        return cancelled
    }

    // MARK: - the loop (executor thread only)

    private func threadMain() {
        smp_set_current_executor(Unmanaged.passUnretained(self).toOpaque())
        QSBR.registerThread()
        var idlePasses = 0
        while true {
            var work = drainIncoming(max: 1024)
            work += drainForeign()
            work += runContinuations()
            work += runPollers()
            QSBR.quiescentState()
            statLoops.store(statLoops.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            if work > 0 {
                idlePasses = 0
                continue
            }
            let stop = stopRequest.load(ordering: .acquiring)
            if stop != 0 {
                finish(runPending: stop == 1)
                break
            }
            idlePasses += 1
            if idlePasses < configuration.spinPasses {
                spinLoopHint()
                continue
            }
            idlePasses = 0
            parkIdle()
        }
        QSBR.unregisterThread()
        smp_set_current_executor(nil)
        finished.store(true, ordering: .releasing)
    }

    private func parkIdle() {
        var timeout: Int? = nil
        var tickPark = false
        if let next = wheel.nextEventTick() {
            // Timers pending: sleep at most one tick, so that schedulers with
            // a delay of at least one tick need not ring (see handOff).
            let untilNext = max(0, next &* 1_000_000 &- TimerWheel.nowNanoseconds())
            timeout = min(untilNext, 1_000_000)
            tickPark = true
        }
        if !localPollers.isEmpty {
            timeout = min(timeout ?? Int.max, configuration.pollerParkNanoseconds)
        }
        if timeout == 0 { return }
        statParks.store(statParks.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        QSBR.threadOffline()
        // Sequentially consistent, before the doorbell's parked store: a
        // scheduler that reads `true` here (and skips ringing) is ordered
        // before the re-check below, which then sees its hand-off.
        tickParked.store(tickPark, ordering: .sequentiallyConsistent)
        mesh.park(core, timeoutNanoseconds: timeout) {
            // The load half of the doorbell protocol: sequentially
            // consistent loads of every source a ringer publishes to.
            handoffHead.load(ordering: .sequentiallyConsistent) != nil
                || hasForeignJobs.load(ordering: .sequentiallyConsistent)
                || stopRequest.load(ordering: .sequentiallyConsistent) != 0
                || pollersVersion.load(ordering: .sequentiallyConsistent) != localPollersVersion
                || wheel.hasExpired
        }
        tickParked.store(false, ordering: .relaxed)
        QSBR.threadOnline()
    }

    /// Waits (on the executor thread) until `done()`; handles only incoming
    /// mailboxes and foreign jobs meanwhile, parking when idle.
    private func waitDraining(until done: () -> Bool) {
        var idle = 0
        while !done() {
            if drainIncoming(max: 64) + drainForeign() > 0 {
                idle = 0
                continue
            }
            idle += 1
            if idle < configuration.spinPasses {
                spinLoopHint()
                continue
            }
            idle = 0
            QSBR.threadOffline()
            mesh.park(core, timeoutNanoseconds: nil) {
                done() || hasForeignJobs.load(ordering: .sequentiallyConsistent)
            }
            QSBR.threadOnline()
        }
    }

    /// Handles up to `max` incoming messages (reentrant, see `staged`).
    @discardableResult
    func drainIncoming(max: Int) -> Int {
        var handled = 0
        while handled < max {
            if stagedIndex < stagedCount {
                let m = staged[stagedIndex]
                stagedIndex += 1
                handle(m, from: stagedSender)
                handled += 1
                continue
            }
            // Refill from the next non-empty ring, round-robin over senders.
            var found = false
            for _ in 0..<mesh.cores {
                let s = drainSender
                drainSender = s + 1 == mesh.cores ? 0 : s + 1
                let n = mesh.receive(from: s, at: core, into: staged, max: CoreExecutor.stageCapacity)
                if n > 0 {
                    stagedIndex = 0
                    stagedCount = n
                    stagedSender = s
                    found = true
                    break
                }
            }
            if !found { break }
        }
        if handled > 0 {
            statMessages.store(statMessages.load(ordering: .relaxed) &+ handled, ordering: .relaxed)
        }
        return handled
    }

    private func handle(_ m: MailboxMessage, from sender: Int) {
        if let f = m.function {
            f(m.a, m.b)
        } else if let h = messageHandler {
            h(sender, m)
        }
    }

    private func drainForeign() -> Int {
        guard hasForeignJobs.load(ordering: .acquiring) else { return 0 }
        // Clear before taking: an enqueuer that appends after our take sets
        // the flag again after our clear, so no job is stranded.
        hasForeignJobs.store(false, ordering: .sequentiallyConsistent)
        let jobs = foreignJobs.withLock { q -> [ForeignJob] in
            let j = q
            q.removeAll(keepingCapacity: true)
            return j
        }
        for job in jobs {
            switch job {
            case .closure(let body): body()
            case .task(let j): j.runSynchronously(on: asUnownedTaskExecutor())
            }
        }
        statForeign.store(statForeign.load(ordering: .relaxed) &+ jobs.count, ordering: .relaxed)
        return jobs.count
    }

    private func runPollers() -> Int {
        let v = pollersVersion.load(ordering: .acquiring)
        if v != localPollersVersion {
            localPollers = pollers.withLock { $0 }
            localPollersVersion = v
        }
        if localPollers.isEmpty { return 0 }
        var work = 0
        for p in localPollers { work += p() }
        if work > 0 { statPollerWork.store(statPollerWork.load(ordering: .relaxed) &+ work, ordering: .relaxed) }
        return work
    }

    /// Files handed-off continuations, advances the wheel, runs due ones.
    private func runContinuations() -> Int {
        let hasHandoff = handoffHead.load(ordering: .relaxed) != nil
        if !hasHandoff && wheel.count == 0 && !wheel.hasExpired { return 0 }
        // Advance first, so that hand-offs are filed relative to the
        // present tick (a popped node already on the expired list is
        // unlinked from it and filed again by its new delay).
        wheel.advance(to: TimerWheel.nowTick())
        if hasHandoff { takeHandoffs() }
        return runExpired()
    }

    private func takeHandoffs() {
        // Acquire pairs with the pushers' release: their handoffNext writes
        // and state CASes are visible.
        var p = handoffHead.exchange(nil, ordering: .acquiring)
        // The stack is LIFO; reverse so that earlier schedules file first.
        var fifo: UnsafeMutableRawPointer? = nil
        while let raw = p {
            let c = Unmanaged<KernelContinuation>.fromOpaque(raw)
            p = c._withUnsafeGuaranteedRef { $0.handoffNext }
            c._withUnsafeGuaranteedRef { $0.handoffNext = fifo }
            fifo = raw
        }
        while let raw = fifo {
            let u = Unmanaged<KernelContinuation>.fromOpaque(raw)
            let c = u._withUnsafeGuaranteedRef { $0 }
            fifo = c.handoffNext
            c.handoffNext = nil
            // Clear `queued` and read the phase in one atomic step; from now
            // on a new schedule pushes again.
            let s = c.state.bitwiseAnd(~KernelContinuation.queued, ordering: .sequentiallyConsistent).newValue
            if c.ownerHoldsReference {
                u.release()   // the pusher's retain; ours is still held
            } else {
                c.ownerHoldsReference = true
            }
            wheel.remove(u)
            if s & KernelContinuation.phaseMask == KernelContinuation.pending {
                wheel.insert(u, expires: wheel.currentTick + (s >> KernelContinuation.delayShift))
            } else {
                // Cancelled before we got to it (IDLE). It cannot be RUNNING:
                // only this thread runs bodies, never with `queued` set.
                dropOwnership(u)
            }
        }
    }

    private func dropOwnership(_ u: Unmanaged<KernelContinuation>) {
        u._withUnsafeGuaranteedRef { $0.ownerHoldsReference = false }
        u.release()
    }

    private func runExpired() -> Int {
        var ran = 0
        // One at a time: a body may re-file itself (delay 0 appends it to
        // this same list again, to run after the others).
        while let u = wheel.popExpired() {
            if runIfPending(u) { ran += 1 }
        }
        if ran > 0 { statContinuations.store(statContinuations.load(ordering: .relaxed) &+ ran, ordering: .relaxed) }
        return ran
    }

    /// Runs an expired continuation if it is still PENDING and not queued;
    /// re-files it if it was rescheduled while running.
    private func runIfPending(_ u: Unmanaged<KernelContinuation>) -> Bool {
        let c = u._withUnsafeGuaranteedRef { $0 }
        var s = c.state.load(ordering: .acquiring)
        while true {
            if s & KernelContinuation.queued != 0 { return false }   // a hand-off will re-file it
            if s & KernelContinuation.phaseMask != KernelContinuation.pending {
                dropOwnership(u)   // cancelled
                return false
            }
            // Sequentially consistent: pairs with the schedulers' fence
            // (see KernelContinuation.schedule) so the body sees their writes.
            let (ok, cur) = c.state.compareExchange(expected: s, desired: KernelContinuation.running,
                                                    ordering: .sequentiallyConsistent)
            if ok { break }
            s = cur
        }
        c.body()
        s = KernelContinuation.running
        while true {
            let (ok, cur) = c.state.compareExchange(expected: s, desired: KernelContinuation.idle,
                                                    ordering: .sequentiallyConsistent)
            if ok {
                dropOwnership(u)
                return true
            }
            s = cur
            if s & KernelContinuation.phaseMask == KernelContinuation.rescheduled {
                let d = s >> KernelContinuation.delayShift
                let new = KernelContinuation.pending | (s & KernelContinuation.queued) | (d << KernelContinuation.delayShift)
                let (ok2, cur2) = c.state.compareExchange(expected: s, desired: new,
                                                          ordering: .sequentiallyConsistent)
                if ok2 {
                    wheel.insert(u, expires: wheel.currentTick + d)
                    return true
                }
                s = cur2
            }
            // else: a cancel moved RESCHED back to RUNNING; retry.
        }
    }

    // MARK: - shutdown

    func requestStop(runPending: Bool) {
        stopRequest.store(runPending ? 1 : 2, ordering: .sequentiallyConsistent)
        doorbell.ring()
    }

    func join() -> CoreExecutorShutdownReport {
        let t = thread.withLock { t -> PinnedThread? in
            defer { t = nil }
            return t
        }
        t?.join()
        return report.withLock { $0 }
    }

    /// Final pass on the executor thread: run (once) or cancel every
    /// continuation still filed, then record what is left.
    private func finish(runPending: Bool) {
        var r = CoreExecutorShutdownReport()
        // Everything filed becomes due now.
        takeHandoffs()
        wheel.expireAll()
        if runPending {
            r.continuationsRunAtShutdown = runExpired()
        }
        // Whatever is still pending (rescheduled by a body just run, or all
        // of them with the cancel policy) is cancelled and reported.
        wheel.expireAll()
        while let u = wheel.popExpired() {
            let c = u._withUnsafeGuaranteedRef { $0 }
            if c.cancel() { r.continuationsCancelled += 1 }
            dropOwnership(u)
        }
        report.withLock { $0 = r }
    }

    /// After the thread ended: count (and release) what arrived too late.
    func collectLeftovers() -> CoreExecutorShutdownReport {
        var r = report.withLock { $0 }
        withUnsafeTemporaryAllocation(of: MailboxMessage.self, capacity: 64) { buf in
            for s in 0..<mesh.cores {
                while true {
                    let n = mesh.receive(from: s, at: core, into: buf.baseAddress!, max: 64)
                    if n == 0 { break }
                    for i in 0..<n {
                        r.messagesUndelivered += 1
                        releaseIfBoxed(buf[i])
                    }
                }
            }
        }
        r.messagesUndelivered += stagedCount - stagedIndex
        for i in stagedIndex..<stagedCount { releaseIfBoxed(staged[i]) }
        stagedIndex = stagedCount
        let jobs = foreignJobs.withLock { q -> [ForeignJob] in
            defer { q.removeAll() }
            return q
        }
        r.foreignJobsUndelivered += jobs.count
        closed.store(true, ordering: .sequentiallyConsistent)
        r.continuationsCancelled += releaseHandoffsAfterClose()
        report.withLock { $0 = r }
        return r
    }

    private func releaseIfBoxed(_ m: MailboxMessage) {
        guard let f = m.function else { return }
        if unsafeBitCast(f, to: UInt.self) == unsafeBitCast(runClosureMessage, to: UInt.self),
           let raw = UnsafeMutableRawPointer(bitPattern: m.a) {
            Unmanaged<ClosureBox>.fromOpaque(raw).release()
        }
    }

    /// A snapshot of this executor's counters. Any thread.
    public var statistics: CoreExecutorStatistics {
        var s = CoreExecutorStatistics()
        s.messagesHandled = statMessages.load(ordering: .relaxed)
        s.foreignJobsRun = statForeign.load(ordering: .relaxed)
        s.continuationsRun = statContinuations.load(ordering: .relaxed)
        s.pollerWork = statPollerWork.load(ordering: .relaxed)
        s.parks = statParks.load(ordering: .relaxed)
        s.loopPasses = statLoops.load(ordering: .relaxed)
        s.mailbox = mesh.statistics(of: core)
        return s
    }
}

// MARK: - Swift Concurrency bridge

extension CoreExecutor: TaskExecutor {
    /// Runs a task job on this executor's thread, so that
    /// `Task(executorPreference: executor) { ... }` and
    /// `withTaskExecutorPreference(executor) { ... }` pin async code to the
    /// core. From an executor of the same group the job is one mailbox
    /// message (no allocation); otherwise it goes through the foreign queue.
    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        if let me = currentPeer {
            let jobBits = unsafeBitCast(unowned, to: UInt.self)
            let exe = UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())
            me.send(MailboxMessage(function: runTaskJobMessage, jobBits, exe), to: self)
        } else {
            enqueueForeign(.task(unowned))
        }
    }
}

/// What a shutdown did with work that was still pending.
public struct CoreExecutorShutdownReport: Sendable, Equatable {
    /// Continuations that were pending and ran (early) during shutdown.
    public var continuationsRunAtShutdown = 0
    /// Continuations that were pending and were cancelled instead.
    public var continuationsCancelled = 0
    /// Mailbox messages that arrived after the executor stopped (not run).
    public var messagesUndelivered = 0
    /// Jobs from foreign threads that arrived after it stopped (not run).
    public var foreignJobsUndelivered = 0

    public init() {}

    static func + (l: Self, r: Self) -> Self {
        var s = l
        s.continuationsRunAtShutdown += r.continuationsRunAtShutdown
        s.continuationsCancelled += r.continuationsCancelled
        s.messagesUndelivered += r.messagesUndelivered
        s.foreignJobsUndelivered += r.foreignJobsUndelivered
        return s
    }
}

/// Counters of one executor (racy snapshot).
public struct CoreExecutorStatistics: Sendable {
    public var messagesHandled = 0
    public var foreignJobsRun = 0
    public var continuationsRun = 0
    public var pollerWork = 0
    public var parks = 0
    public var loopPasses = 0
    /// Counters of the rings into this executor.
    public var mailbox = MailboxStatistics()
}

enum ForeignJob {
    case closure(@Sendable () -> Void)
    case task(UnownedJob)
}

final class ClosureBox {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// The result slot of a synchronous call.
final class CallBox<R: Sendable>: @unchecked Sendable {
    // @unchecked: `result` is written once by the target executor before the
    // releasing store of `done` (or the event's signal) and read by the
    // caller only after the matching acquire.
    let body: @Sendable () -> R
    let waiter: CoreExecutor?
    let event = OneShotEvent()
    private let done = Atomic<Bool>(false)
    private var result: R?

    init(_ body: @escaping @Sendable () -> R, waiter: CoreExecutor?) {
        self.body = body
        self.waiter = waiter
    }

    var isDone: Bool { done.load(ordering: .acquiring) }

    func complete() {
        result = body()
        if let w = waiter {
            done.store(true, ordering: .releasing)
            w.doorbell.ring()
        } else {
            event.signal()
        }
    }

    func takeResult() -> R { result! }
}

let runClosureMessage: MailboxMessage.Function = { a, _ in
    let box = Unmanaged<ClosureBox>.fromOpaque(UnsafeMutableRawPointer(bitPattern: a)!).takeRetainedValue()
    box.body()
}

let runTaskJobMessage: MailboxMessage.Function = { a, b in
    let job = unsafeBitCast(a, to: UnownedJob.self)
    let exe = Unmanaged<CoreExecutor>.fromOpaque(UnsafeMutableRawPointer(bitPattern: b)!)
    exe._withUnsafeGuaranteedRef { job.runSynchronously(on: $0.asUnownedTaskExecutor()) }
}

/// N executors, one per core, each on its own pinned thread, sharing one
/// ``MailboxMesh``.
///
/// Concurrency contract: any thread may use the executors; ``shutdown(runPending:)``
/// once, from a thread that is not one of the executors.
public final class CoreExecutorGroup: Sendable {
    /// Tuning knobs.
    public struct Configuration: Sendable {
        /// Idle loop passes (each with a CPU pause) before parking.
        public var spinPasses = 2_000
        /// Slots per mailbox ring.
        public var mailboxCapacity = 1_024
        /// Longest park while pollers are registered.
        public var pollerParkNanoseconds = 1_000_000
        /// Pin executor i to CPU i (modulo the CPU count); false leaves them unpinned.
        public var pinned = true
        public init() {}
    }

    public let executors: [CoreExecutor]
    public let mailboxes: MailboxMesh
    private let stopped = Atomic<Bool>(false)

    /// Starts `count` executors.
    /// - Parameter messageHandler: called on the receiving executor for
    ///   messages without a function (`MailboxMessage(a, b, c)`).
    public init(count: Int = onlineCPUCount, configuration: Configuration = Configuration(),
                messageHandler: (@Sendable (_ sender: Int, _ message: MailboxMessage) -> Void)? = nil) {
        precondition(count >= 1)
        let mesh = MailboxMesh(cores: count, capacity: configuration.mailboxCapacity)
        mailboxes = mesh
        executors = (0..<count).map {
            CoreExecutor(core: $0, cpu: configuration.pinned ? $0 : nil, mesh: mesh,
                         configuration: configuration, messageHandler: messageHandler)
        }
        for e in executors { e.start(name: "smp-core-\(e.core)") }
    }

    /// The executor of core `core` (modulo the group size).
    public func executor(for core: Int) -> CoreExecutor { executors[core % executors.count] }

    /// Runs `body` on core `core` and returns its result, blocking the
    /// caller (see ``CoreExecutor``'s `call`; from async code prefer
    /// the async overload, which does not block a cooperative thread).
    public func call<R: Sendable>(on core: Int, _ body: @escaping @Sendable () -> R) -> R {
        executor(for: core).call(body)
    }

    /// Runs `body` on core `core` and resumes the caller with its result.
    public func call<R: Sendable>(on core: Int, _ body: @escaping @Sendable () -> R) async -> R {
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

    deinit { shutdown() }
}

extension CoreExecutor {
    var mailboxes: MailboxMesh { mesh }
}
