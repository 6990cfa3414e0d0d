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
    ///
    /// `body` and its result are `sending`: the closure's captures move to
    /// the executor thread and the result moves back, so neither needs to
    /// be `Sendable`. Allocates the closure box and one result box.
    public func call<R>(_ body: sending @escaping () -> sending R) -> sending R {
        if isCurrent { return body() }
        let box = CallBox<R>(waiter: currentPeer)
        execute { box.complete(body()) }
        if let me = box.waiter {
            me.waitDraining { box.isDone }
        } else {
            box.event.wait()
        }
        return box.takeResult()
    }

    /// Runs `body` on this executor and resumes the caller with its result
    /// (`sending` both ways, as in the synchronous overload). Any task; the
    /// caller suspends instead of blocking its thread.
    public func call<R>(_ body: sending @escaping () -> sending R) async -> sending R {
        // `body` arrived as `sending` (disconnected) and is used only by the
        // one job below; the region checker cannot follow it through the
        // synchronous continuation closure into that job, hence unsafe.
        nonisolated(unsafe) let body = body
        return await withCheckedContinuation { (k: CheckedContinuation<R, Never>) in
            execute { k.resume(returning: body()) }
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

    var isDone: Bool { done.load(ordering: .acquiring) }

    func complete(_ value: sending R) {
        result = value
        if let w = waiter {
            done.store(true, ordering: .releasing)
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

let runClosureMessage: MailboxMessage.Function = { a, _ in
    let box = Unmanaged<ClosureBox>.fromOpaque(UnsafeMutableRawPointer(bitPattern: a)!).takeRetainedValue()
    box.body()
}
