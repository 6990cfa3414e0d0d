// The defer-coalesce baselines: a per-item atomic pending flag gives them
// the coalescing a kernel continuation has built in, and each hands the
// accepted schedules to its own kind of worker.
import DequeModule
import Dispatch
import Glibc
import SMPPrimitives
import Synchronization

/// Coalescing for the baselines: `pending[i]` exchanged true on schedule
/// (coalesced if it was already true) and exchanged false by the worker
/// before it reads the stamp (an RMW on both sides, so the worker sees the
/// stamp written before any schedule that found the flag set).
final class DeferPendingFlags: @unchecked Sendable {
    // @unchecked Sendable: owned storage, accessed only atomically.
    let flags: UnsafeMutablePointer<Atomic<Bool>>
    let count: Int
    init(_ count: Int) {
        self.count = count
        flags = .allocate(capacity: count)
        for i in 0..<count { (flags + i).initialize(to: Atomic(false)) }
    }
    deinit {
        flags.deinitialize(count: count)
        flags.deallocate()
    }
    @inline(__always) func trySetPending(_ i: Int) -> Bool {
        !flags[i].exchange(true, ordering: .sequentiallyConsistent)
    }
    @inline(__always) func clear(_ i: Int) {
        _ = flags[i].exchange(false, ordering: .sequentiallyConsistent)
    }
}

/// A baseline's worker: `submit(i, dueNs)` hands an accepted schedule over;
/// `finish()` stops it after everything submitted has run.
struct DeferWorker: Sendable {
    var submit: @Sendable (Int, Int) -> Void
    var finish: @Sendable () -> Void
    var note: String
}

/// A baseline run: the driver takes a schedule only if it sets the item's
/// pending flag, and hands it to the worker `make` builds.
func deferBaseline(_ options: WorkloadOptions, impl: String,
                   _ make: (DeferLedger, DeferPendingFlags) -> DeferWorker) -> BenchResult {
    let ledger = DeferLedger(items: deferItems)
    let pending = DeferPendingFlags(deferItems)
    let worker = make(ledger, pending)
    return runDefer(options, impl: impl, ledger: ledger, settleSeconds: 20, driver: { n, cap in
        drive(n: n, ledger: ledger, cap: cap) { i in
            guard pending.trySetPending(i) else { return false }
            worker.submit(i, monotonicNanoseconds() &+ deferDelayMs * 1_000_000)
            return true
        }
    }, finish: {
        worker.finish()
        return worker.note
    })
}

@inline(__always)
private func runItem(_ i: Int, _ ledger: DeferLedger, _ pending: DeferPendingFlags) {
    pending.clear(i)
    ledger.run(i)
}

func makeDeferDispatchAfter(_ ledger: DeferLedger, _ pending: DeferPendingFlags) -> DeferWorker {
    let q = DispatchQueue(label: "defer.worker")
    return DeferWorker(
        submit: { i, _ in
            q.asyncAfter(deadline: .now() + .milliseconds(deferDelayMs)) { runItem(i, ledger, pending) }
        },
        finish: { q.sync {} },
        note: "per-item atomic pending flag; accepted schedules do serialQueue.asyncAfter(.now() + 1 ms)")
}

func makeDeferDispatch(_ ledger: DeferLedger, _ pending: DeferPendingFlags) -> DeferWorker {
    let q = DispatchQueue(label: "defer.worker")
    return DeferWorker(
        submit: { i, due in
            q.async {
                let now = monotonicNanoseconds()
                if due > now { usleep(UInt32((due - now) / 1_000)) }
                runItem(i, ledger, pending)
            }
        },
        finish: { q.sync {} },
        note: "per-item atomic pending flag; accepted schedules do serialQueue.async { wait until due; run } (FIFO: every delay is 1 ms)")
}

private actor DeferActorWorker {
    let ledger: DeferLedger
    let pending: DeferPendingFlags
    init(ledger: DeferLedger, pending: DeferPendingFlags) {
        self.ledger = ledger
        self.pending = pending
    }
    func run(_ i: Int) { runItem(i, ledger, pending) }
}

func makeDeferActor(_ ledger: DeferLedger, _ pending: DeferPendingFlags) -> DeferWorker {
    let worker = DeferActorWorker(ledger: ledger, pending: pending)
    return DeferWorker(
        submit: { i, _ in
            Task {
                try? await Task.sleep(for: .milliseconds(deferDelayMs))
                await worker.run(i)
            }
        },
        finish: {},
        note: "per-item atomic pending flag; each accepted schedule starts a Task that sleeps 1 ms and then calls the worker actor")
}

func makeDeferAsyncStream(_ ledger: DeferLedger, _ pending: DeferPendingFlags) -> DeferWorker {
    let (stream, cont) = AsyncStream<(Int, Int)>.makeStream()
    let consumer = Task {
        for await (i, due) in stream {
            let now = monotonicNanoseconds()
            if due > now { try? await Task.sleep(for: .nanoseconds(Int(due - now))) }
            runItem(i, ledger, pending)
        }
    }
    return DeferWorker(
        submit: { i, due in cont.yield((i, due)) },
        finish: {
            cont.finish()
            blockingAwait { await consumer.value }
        },
        note: "per-item atomic pending flag; accepted schedules yield (item, due) into an AsyncStream; one task sleeps until each is due and runs it")
}

/// A worker thread with a FIFO of (item, due) under a pthread mutex.
private final class DeferCondWorker: @unchecked Sendable {
    // @unchecked Sendable: `queue`, `waiting` and `stop` are accessed with
    // `mutex` locked.
    let mutex = PthreadMutex()
    let condition = PthreadCondition()
    var queue = Deque<(Int, Int)>()
    var waiting = false
    var stop = false

    func submit(_ i: Int, _ due: Int) {
        mutex.lock()
        queue.append((i, due))
        // Only an idle (untimed) waiter needs the signal: a timed waiter
        // is already waiting for an earlier item (FIFO, equal delays).
        if waiting && queue.count == 1 { condition.signal() }
        mutex.unlock()
    }

    func loop(_ ledger: DeferLedger, _ pending: DeferPendingFlags) {
        mutex.lock()
        while true {
            if let item = queue.first {
                let (i, due) = item
                let now = monotonicNanoseconds()
                if due > now {
                    condition.wait(mutex, untilMonotonicNanoseconds: due)
                    continue
                }
                queue.removeFirst()
                mutex.unlock()
                runItem(i, ledger, pending)
                mutex.lock()
            } else if stop {
                break
            } else {
                waiting = true
                condition.wait(mutex)
                waiting = false
            }
        }
        mutex.unlock()
    }

    /// Stops the loop once the queue is empty.
    func requestStop() {
        mutex.lock()
        stop = true
        condition.signal()
        mutex.unlock()
    }
}

func makeDeferMutexCond(_ ledger: DeferLedger, _ pending: DeferPendingFlags) -> DeferWorker {
    let w = DeferCondWorker()
    let thread = PinnedThread(cpu: 1, name: "defer-worker") { w.loop(ledger, pending) }
    return DeferWorker(
        submit: { i, due in w.submit(i, due) },
        finish: {
            w.requestStop()
            thread.join()
        },
        note: "per-item atomic pending flag; worker thread (CPU 1) with a FIFO of (item, due) under a pthread mutex, timed condvar waits, signalled only when idle")
}
