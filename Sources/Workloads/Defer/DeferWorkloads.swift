// defer-coalesce (specified in docs/BenchmarkWorkloads.md): 1,000 work
// items; a driver thread on CPU 0 schedules random items N = 10,000,000
// times with a 1 ms delay; a schedule of a pending item is coalesced. The
// worker (CPU 1 where the implementation allows pinning) runs due items.
//
// Check: every item scheduled at least once ran at least once after its
// last schedule. The driver bumps the item's stamp before each schedule;
// the body records the stamp it sees; at the end every item's recorded
// stamp must equal its final stamp.
//
// Implementations: `kcont` (the project's KernelContinuation on a
// CoreExecutor's timer wheel, KernelContinuationDefer.swift), and
// baselines that get the same coalescing from a per-item atomic pending
// flag (exchange on schedule, exchange on run; DeferBaselines.swift):
// `dispatch_after` (DispatchQueue.asyncAfter on a serial queue), `dispatch`
// (serial DispatchQueue.async; the block waits until the item is due),
// `actor` (a Task per accepted schedule sleeps 1 ms, then calls the worker
// actor), `asyncstream` (an AsyncStream of (item, due) drained by one task
// that sleeps until each is due) and `mutex_cond` (a worker thread with a
// FIFO of (item, due) under a pthread mutex, timed condvar waits).
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

/// Schedules per run when `--n` does not say.
let deferDefaultSchedules = 10_000_000
let deferItems = 1_000
let deferDelayMs = 1

/// Per-item stamps (driver-written) and the stamps the bodies saw.
final class DeferLedger: @unchecked Sendable {
    // @unchecked Sendable: owned storage, accessed only atomically.
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

/// What the driver loop did.
struct DriveOutcome: Sendable {
    var schedules = 0
    var seconds = 0.0
    /// Schedules the implementation took (not coalesced).
    var accepted = 0
}

/// The driver loop: for each of `n` schedules, pick one of the
/// ``deferItems`` items, bump its stamp, `schedule(item)` (true if
/// accepted); stops at the cap.
@inline(__always)
func drive(n: Int, ledger: DeferLedger, cap: Double, _ schedule: (Int) -> Bool) -> DriveOutcome {
    assert(ledger.items == deferItems)
    var rng: UInt64 = 0x9E37_79B9_7F4A_7C15
    var accepted = 0
    let start = monotonicSeconds()
    var k = 0
    while k < n {
        // A constant modulus: a multiply, not a division. (A division here
        // slows the driver enough to double the accepted schedules.)
        let i = Int(xorshift(&rng) % UInt64(deferItems))
        // The stamp is written before the schedule; the body must see it.
        ledger.stamp[i].store(k &+ 1, ordering: .relaxed)
        if schedule(i) { accepted += 1 }
        k += 1
        if k & 65535 == 0 && monotonicSeconds() - start > cap { break }
    }
    return DriveOutcome(schedules: k, seconds: monotonicSeconds() - start, accepted: accepted)
}

/// The cost of the driver loop without the schedule (RNG + stamp store).
private func driverOverhead(n: Int, ledger: DeferLedger) -> Double {
    let r = drive(n: Swift.min(n, 1_000_000), ledger: ledger, cap: 10) { _ in false }
    for i in 0..<ledger.items { ledger.stamp[i].store(0, ordering: .relaxed) }
    return r.schedules > 0 ? r.seconds * 1e9 / Double(r.schedules) : 0
}

/// One run, the same for every implementation: measures the driver loop's
/// own cost, runs `driver(n, cap)` (the N schedules) on a thread pinned to
/// CPU 0, waits up to `settleSeconds` for every item to have seen its final
/// stamp, calls `finish` (stops the worker and returns the note), and
/// checks.
func runDefer(_ options: WorkloadOptions, impl: String, ledger: DeferLedger, settleSeconds: Double,
              driver: sending @escaping (_ n: Int, _ cap: Double) -> DriveOutcome,
              finish: () -> String) -> BenchResult {
    let n = options.n ?? deferDefaultSchedules
    let cap = options.capSeconds
    let overhead = driverOverhead(n: n, ledger: ledger)
    let d = PinnedThread(cpu: 0, name: "defer-driver") { driver(n, cap) }.join()
    let settled = ledger.settle(seconds: settleSeconds)
    let note = finish()

    let done = d.schedules
    let runs = ledger.runs.load(ordering: .relaxed)
    var notes = [note]
    if !settled { notes.append("some item did not run after its last schedule") }
    if done < n { notes.append("capped after \(done) of \(n) schedules") }
    if let pin = pinningNote(requiredCPUs: 2) { notes.append(pin) }
    return BenchResult(workload: "defer-coalesce", impl: impl, ops: done, seconds: d.seconds,
                       nsPerOp: done > 0 ? d.seconds * 1e9 / Double(done) : 0,
                       checked: settled && done > 0,
                       note: notes.joined(separator: "; "),
                       extra: [("runs", .int(runs)),
                               ("coalescing_ratio", .double(runs > 0 ? Double(done) / Double(runs) : 0)),
                               ("accepted_schedules", .int(d.accepted)),
                               ("loop_overhead_ns", .double(overhead)),
                               ("complete", .bool(done == n))])
}
