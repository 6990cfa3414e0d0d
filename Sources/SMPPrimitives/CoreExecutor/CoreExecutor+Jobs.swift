import Synchronization

// Work submitted to an executor from outside its loop: closures (`execute`),
// synchronous and async calls that return a value (`call`), and messages
// sent from one executor to another.

extension CoreExecutor {
    /// Runs `body` on this executor's thread, once. Any thread.
    ///
    /// `body` is `sending`: what it captures moves to the executor thread
    /// (the caller must not use it afterwards), so it need not be
    /// `Sendable`. From an executor of the same group the job travels
    /// through that core's mailbox ring (waiting, and draining the caller's
    /// own mailboxes, while the ring is full); from any other thread it goes
    /// through a mutex-protected queue. Allocates one box for the closure.
    public func execute(_ body: sending @escaping () -> Void) {
        if let me = currentPeer {
            let box = Unmanaged.passRetained(ClosureBox(body)).toOpaque()
            me.send(MailboxMessage(function: runClosureMessage, UInt(bitPattern: box)), to: self)
        } else {
            enqueueForeign(.closure(body))
        }
    }

    func enqueueForeign(_ job: ForeignJob) {
        foreignJobs.withLock { $0.append(job) }
        // Set after the append (see drainForeign for why the order matters);
        // the doorbell's fence orders this store before its load.
        hasForeignJobs.store(true, ordering: .sequentiallyConsistent)
        // Dekker with collectLeftovers, which stores `closed` and then
        // empties the queue: we append, then load `closed` (both seq_cst).
        // Either it takes our job, or we see `closed` and dispose of
        // whatever is still queued ourselves: nothing stays queued forever.
        if closed.load(ordering: .sequentiallyConsistent) {
            disposeLateJobs()
            return
        }
        doorbell.ring()
    }

    /// Sends `message` to `target` through the (self, target) ring.
    /// Only on this executor's thread; `target` in the same group.
    ///
    /// When the ring is full it waits, and while it waits it *absorbs* its
    /// own incoming rings into a private backlog without running anything
    /// (so a handler is never re-entered from inside another, and two
    /// executors sending to each other cannot deadlock: each frees the
    /// rings the other waits on). The wait is a quiescent point: the thread
    /// reports a QSBR quiescent state on every attempt (a target that waits
    /// for a grace period cannot deadlock with this sender), so it must not
    /// be inside an explicit RCU read section. If the target has left its
    /// loop (shutdown), the message is not delivered: it is counted
    /// (``CoreExecutorShutdownReport/messagesUndelivered``), a boxed
    /// closure is released, and a Swift task job is handed to the global
    /// concurrent executor instead (see ``CoreExecutorShutdownReport/taskJobsRedirected``).
    ///
    /// Cost when the ring has room: a slot copy, a release store and the
    /// doorbell check (see ``MailboxMesh``).
    public func send(_ message: MailboxMessage, to target: CoreExecutor) {
        precondition(isCurrent && target.mesh === mesh, "send(_:to:) belongs on the sending executor's thread")
        if mesh.post(message, from: core, to: target.core) {
            mesh.ringDoorbell(of: target.core, from: core)
            return
        }
        sendWaitingForRoom(message, to: target)
    }

    private func sendWaitingForRoom(_ message: MailboxMessage, to target: CoreExecutor) {
        let sent = mesh.sendWaitingForRoom(
            message, from: core, to: target.core,
            whileFull: { absorbIncoming() },
            // Acquire pairs with the target's release when it left its loop:
            // nothing will ever make room.
            giveUp: { target.leftLoop.load(ordering: .acquiring) })
        if !sent { target.disposeLate(message) }
    }

    /// Sends `message` to `target` without waiting. Only on this executor's
    /// thread. Returns false (and counts a full event) if the ring is full.
    public func trySend(_ message: MailboxMessage, to target: CoreExecutor) -> Bool {
        precondition(isCurrent && target.mesh === mesh, "trySend(_:to:) belongs on the sending executor's thread")
        return mesh.trySend(message, from: core, to: target.core)
    }

    /// Runs `body` on this executor and returns its result, blocking the
    /// caller. On the executor itself it runs inline.
    ///
    /// - From another executor of the group the caller waits *draining*:
    ///   it keeps running its own incoming messages and foreign jobs (never
    ///   its timers or pollers), so the target may call back into it. Such
    ///   nested waits are bounded by `Configuration.maxCallNesting` (the
    ///   call traps beyond it, as DragonFly BSD panics past a fixed IPI
    ///   nesting depth).
    /// - From any other thread it blocks on a futex; a QSBR-registered,
    ///   online caller goes offline while it waits. From async code use the
    ///   async overload instead: blocking a cooperative-pool thread can
    ///   starve the tasks it waits for.
    ///
    /// The wait is a quiescent point: it ends the caller's implicit QSBR
    /// read section (a pointer looked up before the call must be looked
    /// up again after it), and calling it inside an explicit read section
    /// (any flavour) traps. A call whose target has shut down before
    /// running `body` traps too (it could never return).
    ///
    /// `body` and its result are `sending`: the closure's captures move to
    /// the executor thread and the result moves back, so neither needs to
    /// be `Sendable`. Allocates the closure box and one result box.
    public func call<R>(_ body: sending @escaping () -> sending R) -> sending R {
        if isCurrent { return body() }
        rcuCheckMayBlock("CoreExecutor.call(_:)")
        let box = CallBox<R>(waiter: currentPeer)
        execute { box.complete(body()) }
        if let me = box.waiter {
            me.callNesting += 1
            defer { me.callNesting -= 1 }
            if me.callNesting > me.configuration.maxCallNesting {
                fatalError("CoreExecutor.call(_:) nested \(me.callNesting) deep on core \(me.core) (Configuration.maxCallNesting)")
            }
            // seq_cst: `leftLoop` is part of the park's re-check.
            me.waitDraining { box.isDone || leftLoop.load(ordering: .sequentiallyConsistent) }
        } else {
            _ = QSBR.withThreadOffline {
                box.event.wait(givingUpWhen: { leftLoop.load(ordering: .acquiring) })
            }
        }
        // The reply first: a target that completed it in its final pass
        // set `leftLoop` after it (release), so we see the reply.
        guard box.isDone else {
            fatalError("CoreExecutor.call(_:) to core \(core), which shut down before running the call")
        }
        return box.takeResult()
    }

    /// Runs `body` on this executor and resumes the caller with its result
    /// (`sending` both ways, as in the synchronous overload). Any task; the
    /// caller suspends instead of blocking its thread. As with the
    /// synchronous overload, a call whose target shut down before running
    /// `body` traps (the task could never be resumed).
    public func call<R>(_ body: sending @escaping () -> sending R) async -> sending R {
        // `body` arrived as `sending` (disconnected) and is used only by the
        // one job below; the region checker cannot follow it through the
        // synchronous continuation closure into that job, hence unsafe.
        nonisolated(unsafe) let body = body
        return await withCheckedContinuation { (k: CheckedContinuation<R, Never>) in
            let pending = PendingResumption(k, core: core)
            execute { pending.resume(returning: body()) }
        }
    }

    /// Runs the jobs foreign threads queued (step 2 of the loop). Executor
    /// thread only.
    func drainForeign() -> Int {
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
}

/// A job queued by a non-executor thread.
enum ForeignJob: @unchecked Sendable {
    // @unchecked Sendable: a closure job was received as `sending` by
    // `execute`: only the queue refers to it, and the executor thread takes
    // it out under the queue's mutex and runs it once. A task job is an
    // `UnownedJob` (Sendable).
    case closure(() -> Void)
    case task(UnownedJob)
}

/// A closure on its way through a mailbox ring (as the message's word `a`,
/// retained once; `runClosureMessage` takes the retain).
final class ClosureBox {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// The result slot of a synchronous call: filled once on the target
/// executor, emptied once by the caller.
final class CallBox<R>: @unchecked Sendable {
    // @unchecked Sendable: `result` is written once by the target executor
    // before the releasing store of `done` (or the event's signal) and read
    // by the caller only after the matching acquire; the value it holds was
    // produced as `sending` and is handed on as `sending`, so no other
    // reference to it exists.
    let waiter: CoreExecutor?
    let event = OneShotEvent()
    private let done = Atomic<Bool>(false)
    private var result: R?

    init(waiter: CoreExecutor?) {
        self.waiter = waiter
    }

    /// Sequentially consistent, not just acquire: besides pairing with
    /// `complete`'s release, this load is the caller's park re-check in the
    /// doorbell protocol (see ``Doorbell``: a seq_cst announcement, then
    /// seq_cst loads of every work source). With an acquire load there,
    /// the completer's store/fence/load and the parker's store/load are not
    /// ordered in the single total order S, and both could miss each other
    /// (the parker sleeps, the completer does not ring).
    var isDone: Bool { done.load(ordering: .sequentiallyConsistent) }

    func complete(_ value: sending R) {
        result = value
        // Release publishes `result` to the caller's load of `done`; the
        // doorbell's fence (or the parker's membarrier) then orders this
        // store before the ring's load of the doorbell word.
        done.store(true, ordering: .releasing)
        if let w = waiter {
            w.doorbell.ring()
        } else {
            event.signal()
        }
    }

    func takeResult() -> sending R {
        // Written by `complete` before the release this caller acquired;
        // the box is dropped after this, so the value is disconnected.
        nonisolated(unsafe) let value = result.take()!
        return value
    }
}

/// The continuation of an async `CoreExecutor.call(_:)`, held by its job.
/// If the job is dropped unrun (its executor shut down), the last release
/// traps instead of leaving the task suspended forever.
final class PendingResumption<R>: @unchecked Sendable {
    // @unchecked Sendable: `continuation` is written at init and taken once,
    // by the job on the executor thread; deinit runs after the last
    // reference is gone, so no access is concurrent.
    private var continuation: CheckedContinuation<R, Never>?
    private let core: Int

    init(_ continuation: CheckedContinuation<R, Never>, core: Int) {
        self.continuation = continuation
        self.core = core
    }

    func resume(returning value: sending R) {
        continuation.take()!.resume(returning: value)
    }

    deinit {
        if continuation != nil {
            fatalError("async CoreExecutor.call(_:) to core \(core), which shut down before running the call")
        }
    }
}

let runClosureMessage: MailboxMessage.Function = { a, _ in
    let box = Unmanaged<ClosureBox>.fromOpaque(UnsafeMutableRawPointer(bitPattern: a)!).takeRetainedValue()
    box.body()
}
