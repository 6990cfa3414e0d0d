// defer-coalesce (BENCHMARKS.md): 1,000 work items; a driver thread on
// CPU 0 schedules random items N = 10,000,000 times with a 1 ms delay; a
// schedule of a pending item is coalesced. The worker (CPU 1 where the
// implementation allows pinning) runs due items.
//
// Check: every item scheduled at least once ran at least once after its
// last schedule. The driver bumps the item's stamp before each schedule;
// the body records the stamp it sees; at the end every item's recorded
// stamp must equal its final stamp.
//
// Implementations: `kcont` (the project's KernelContinuation on a CoreExecutor's
// timer wheel), and baselines that get the same coalescing from a per-item
// atomic pending flag (exchange on schedule, exchange on run):
// `dispatch_after` (DispatchQueue.asyncAfter on a serial queue), `dispatch`
// (serial DispatchQueue.async; the block waits until the item is due),
// `actor` (a Task per accepted schedule sleeps 1 ms, then calls the worker
// actor), `asyncstream` (an AsyncStream of (item, due) drained by one task
// that sleeps until each is due) and `mutex_cond` (a worker thread with a
// FIFO of (item, due) under a pthread mutex, timed condvar waits).
import DequeModule
import Dispatch
import Glibc
import SMPPrimitives
import Synchronization

let deferWorkloads: [Workload] = [
    Workload(
        name: "defer-coalesce",
        summary: "1,000 items; a driver (CPU 0) schedules random items N = 10,000,000 times with a 1 ms delay, coalescing pending ones; a worker (CPU 1) runs them",
        impls: [
            ("kcont", { deferKcont($0) }),
            ("dispatch", { deferBaseline($0, impl: "dispatch", makeDeferDispatch) }),
            ("actor", { deferBaseline($0, impl: "actor", makeDeferActor) }),
            ("asyncstream", { deferBaseline($0, impl: "asyncstream", makeDeferAsyncStream) }),
            ("mutex_cond", { deferBaseline($0, impl: "mutex_cond", makeDeferMutexCond) }),
            ("dispatch_after", { deferBaseline($0, impl: "dispatch_after", makeDeferDispatchAfter) }),
        ]),
]

private let deferItems = 1_000
private let deferDelayMs = 1

/// Per-item stamps (driver-written) and the stamps the bodies saw.
final class DeferLedger: @unchecked Sendable {
    // @unchecked: owned storage, accessed only atomically.
    let stamp: UnsafeMutablePointer<Atomic<Int>>
    let seen: UnsafeMutablePointer<Atomic<Int>>
    let runs = Atomic<Int>(0)
    let items: Int
    init(items: Int) {
        self.items = items
        stamp = .allocate(capacity: items)
        seen = .allocate(capacity: items)
        for i in 0..<items {
            (stamp + i).initialize(to: Atomic(0))
            (seen + i).initialize(to: Atomic(0))
        }
    }
    deinit {
        stamp.deinitialize(count: items)
        seen.deinitialize(count: items)
        stamp.deallocate()
        seen.deallocate()
    }
    /// The body of item i (any worker).
    @inline(__always) func run(_ i: Int) {
        seen[i].store(stamp[i].load(ordering: .relaxed), ordering: .relaxed)
        runs.add(1, ordering: .relaxed)
    }
    /// Waits until every item saw its final stamp (or `seconds` pass).
    func settle(seconds: Double) -> Bool {
        let deadline = monotonicSeconds() + seconds
        while true {
            var ok = true
            for i in 0..<items where seen[i].load(ordering: .relaxed) != stamp[i].load(ordering: .relaxed) {
                ok = false
                break
            }
            if ok { return true }
            if monotonicSeconds() > deadline { return false }
            usleep(1_000)
        }
    }
}

/// A tiny xorshift generator: the driver's per-schedule cost stays small
/// and is measured separately (`loop_overhead_ns`).
@inline(__always)
private func xorshift(_ s: inout UInt64) -> UInt64 {
    s ^= s << 13
    s ^= s >> 7
    s ^= s << 17
    return s
}

/// The driver loop: bump the stamp, schedule. Returns (schedules done,
/// seconds, accepted schedules).
@inline(__always)
private func drive(n: Int, items: Int, ledger: DeferLedger, cap: Double,
                   _ schedule: (Int) -> Bool) -> (Int, Double, Int) {
    var rng: UInt64 = 0x9E37_79B9_7F4A_7C15
    var accepted = 0
    let start = monotonicSeconds()
    var k = 0
    while k < n {
        let i = Int(xorshift(&rng) % UInt64(items))
        // The stamp is written before the schedule; the body must see it.
        ledger.stamp[i].store(k &+ 1, ordering: .relaxed)
        if schedule(i) { accepted += 1 }
        k += 1
        if k & 65535 == 0 && monotonicSeconds() - start > cap { break }
    }
    return (k, monotonicSeconds() - start, accepted)
}

/// The cost of the driver loop without the schedule (RNG + stamp store).
private func driverOverhead(n: Int, items: Int, ledger: DeferLedger) -> Double {
    let (k, secs, _) = drive(n: Swift.min(n, 1_000_000), items: items, ledger: ledger, cap: 10) { _ in false }
    for i in 0..<items { ledger.stamp[i].store(0, ordering: .relaxed) }
    return k > 0 ? secs * 1e9 / Double(k) : 0
}

private func deferResult(impl: String, planned: Int, done: Int, seconds: Double, accepted: Int,
                         ledger: DeferLedger, settled: Bool, overheadNs: Double, note: String) -> BenchResult {
    let runs = ledger.runs.load(ordering: .relaxed)
    var notes = [note]
    if !settled { notes.append("some item did not run after its last schedule") }
    if done < planned { notes.append("capped after \(done) of \(planned) schedules") }
    if let pin = pinningNote(requiredCPUs: 2) { notes.append(pin) }
    return BenchResult(workload: "defer-coalesce", impl: impl, ops: done, seconds: seconds,
                       nsPerOp: done > 0 ? seconds * 1e9 / Double(done) : 0,
                       checked: settled && done > 0,
                       note: notes.joined(separator: "; "),
                       extra: [("runs", .int(runs)),
                               ("coalescing_ratio", .double(runs > 0 ? Double(done) / Double(runs) : 0)),
                               ("accepted_schedules", .int(accepted)),
                               ("loop_overhead_ns", .double(overheadNs)),
                               ("complete", .bool(done == planned))])
}

// MARK: - kcont (the project)

private func deferKcont(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? 10_000_000
    let ledger = DeferLedger(items: deferItems)
    let group = CoreExecutorGroup(count: 2)
    let worker = group.executor(for: 1)
    let conts = (0..<deferItems).map { i in KernelContinuation(on: worker) { ledger.run(i) } }
    let overhead = driverOverhead(n: n, items: deferItems, ledger: ledger)
    let out = Mutex<(Int, Double, Int)>((0, 0, 0))
    // Unmanaged references: the driver's array lookups add no retain/release
    // (an atomic RMW on the continuation's header line) per schedule; the
    // `conts` array keeps every continuation alive.
    let refs = conts.map { Unmanaged.passUnretained($0) }
    let driver = PinnedThread(cpu: 0, name: "defer-driver") {
        let r = refs.withUnsafeBufferPointer { cs in
            drive(n: n, items: deferItems, ledger: ledger, cap: options.capSeconds) { i in
                cs[i]._withUnsafeGuaranteedRef { $0.schedule(after: .milliseconds(deferDelayMs)) }
            }
        }
        out.withLock { $0 = r }
    }
    driver.join()
    let (done, secs, accepted) = out.withLock { $0 }
    let settled = ledger.settle(seconds: 10)
    let stats = worker.statistics
    group.shutdown()
    withExtendedLifetime(conts) {}
    return deferResult(impl: "kcont", planned: n, done: done, seconds: secs, accepted: accepted,
                       ledger: ledger, settled: settled, overheadNs: overhead,
                       note: "KernelContinuation.schedule(after: .milliseconds(1)) from a plain pinned thread; worker = CoreExecutor on CPU 1 (hierarchical timer wheel, MPSC hand-off); coalesced path = fence + load; ns_per_op includes the driver loop (loop_overhead_ns); executor parks \(stats.parks), loop passes \(stats.loopPasses), runs \(stats.continuationsRun)")
}

// MARK: - baselines: per-item pending flags + a submit function

/// Coalescing for the baselines: `pending[i]` exchanged true on schedule
/// (coalesced if it was already true) and exchanged false by the worker
/// before it reads the stamp (an RMW on both sides, so the worker sees the
/// stamp written before any schedule that found the flag set).
final class DeferPendingFlags: @unchecked Sendable {
    // @unchecked: owned storage, accessed only atomically.
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

private func deferBaseline(_ options: WorkloadOptions, impl: String,
                           _ make: (DeferLedger, DeferPendingFlags) -> DeferWorker) -> BenchResult {
    let n = options.n ?? 10_000_000
    let ledger = DeferLedger(items: deferItems)
    let pending = DeferPendingFlags(deferItems)
    let worker = make(ledger, pending)
    let overhead = driverOverhead(n: n, items: deferItems, ledger: ledger)
    let out = Mutex<(Int, Double, Int)>((0, 0, 0))
    let driver = PinnedThread(cpu: 0, name: "defer-driver") {
        let r = drive(n: n, items: deferItems, ledger: ledger, cap: options.capSeconds) { i in
            guard pending.trySetPending(i) else { return false }
            worker.submit(i, monotonicNanoseconds() &+ deferDelayMs * 1_000_000)
            return true
        }
        out.withLock { $0 = r }
    }
    driver.join()
    let (done, secs, accepted) = out.withLock { $0 }
    let settled = ledger.settle(seconds: 20)
    worker.finish()
    return deferResult(impl: impl, planned: n, done: done, seconds: secs, accepted: accepted,
                       ledger: ledger, settled: settled, overheadNs: overhead, note: worker.note)
}

@inline(__always)
private func runItem(_ i: Int, _ ledger: DeferLedger, _ pending: DeferPendingFlags) {
    pending.clear(i)
    ledger.run(i)
}

private func makeDeferDispatchAfter(_ ledger: DeferLedger, _ pending: DeferPendingFlags) -> DeferWorker {
    let q = DispatchQueue(label: "defer.worker")
    return DeferWorker(
        submit: { i, _ in
            q.asyncAfter(deadline: .now() + .milliseconds(deferDelayMs)) { runItem(i, ledger, pending) }
        },
        finish: { q.sync {} },
        note: "per-item atomic pending flag; accepted schedules do serialQueue.asyncAfter(.now() + 1 ms)")
}

private func makeDeferDispatch(_ ledger: DeferLedger, _ pending: DeferPendingFlags) -> DeferWorker {
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

private func makeDeferActor(_ ledger: DeferLedger, _ pending: DeferPendingFlags) -> DeferWorker {
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

private func makeDeferAsyncStream(_ ledger: DeferLedger, _ pending: DeferPendingFlags) -> DeferWorker {
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

/// A worker thread with a FIFO of (item, due) under a pthread monitor.
private final class DeferCondWorker: @unchecked Sendable {
    // @unchecked: `queue`, `waiting` and `stop` are accessed with the
    // monitor locked.
    let monitor = PThreadMonitor()
    var queue = Deque<(Int, Int)>()
    var waiting = false
    var stop = false

    func submit(_ i: Int, _ due: Int) {
        monitor.lock()
        queue.append((i, due))
        // Only an idle (untimed) waiter needs the signal: a timed waiter
        // is already waiting for an earlier item (FIFO, equal delays).
        if waiting && queue.count == 1 { monitor.signal() }
        monitor.unlock()
    }

    func loop(_ ledger: DeferLedger, _ pending: DeferPendingFlags) {
        monitor.lock()
        while true {
            if let item = queue.first {
                let (i, due) = item
                let now = monotonicNanoseconds()
                if due > now {
                    monitor.wait(untilNanoseconds: due)
                    continue
                }
                queue.removeFirst()
                monitor.unlock()
                runItem(i, ledger, pending)
                monitor.lock()
            } else if stop {
                break
            } else {
                waiting = true
                monitor.wait()
                waiting = false
            }
        }
        monitor.unlock()
    }
}

private func makeDeferMutexCond(_ ledger: DeferLedger, _ pending: DeferPendingFlags) -> DeferWorker {
    let w = DeferCondWorker()
    let thread = PinnedThread(cpu: 1, name: "defer-worker") { w.loop(ledger, pending) }
    return DeferWorker(
        submit: { i, due in w.submit(i, due) },
        finish: {
            w.monitor.lock()
            w.stop = true
            w.monitor.signal()
            w.monitor.unlock()
            thread.join()
        },
        note: "per-item atomic pending flag; worker thread (CPU 1) with a FIFO of (item, due) under a pthread mutex, timed condvar waits, signalled only when idle")
}
