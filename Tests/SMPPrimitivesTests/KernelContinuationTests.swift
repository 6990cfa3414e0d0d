import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

/// Waits (polling) until `condition` holds or `seconds` pass.
func waitFor(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicNanoseconds() + Int(seconds * 1e9)
    while !condition() {
        if monotonicNanoseconds() > deadline { return false }
        usleep(500)
    }
    return true
}

/// `waitFor` for async tests: polls every millisecond with `Task.sleep`, so
/// the wait holds no thread of the cooperative pool (a blocking wait there
/// can starve the very job it waits for).
func waitForAsync(seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
    let deadline = monotonicSeconds() + seconds
    while !condition() {
        if monotonicSeconds() > deadline { return false }
        try? await Task.sleep(for: .milliseconds(1))
    }
    return true
}

@Suite struct ContinuationTests {
    @Test func runsOnceOnItsExecutor() {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let exe = group.executor(for: 1)
        let runs = KAtomicInts(2)
        let c = KernelContinuation(on: exe) {
            runs.add(0)
            if exe.isCurrent { runs.add(1) }
        }
        #expect(c.schedule())
        #expect(waitFor { runs[0] == 1 })
        usleep(20_000)
        #expect(runs[0] == 1)
        #expect(runs[1] == 1)
        #expect(!c.isPending)
    }

    @Test func pendingScheduleCoalesces() {
        let group = CoreExecutorGroup(count: 1)
        defer { group.shutdown() }
        let runs = KAtomicInts(1)
        let c = KernelContinuation(on: group.executor(for: 0)) { runs.add(0) }
        #expect(c.schedule(after: .milliseconds(50)))
        #expect(!c.schedule(after: .milliseconds(50)))
        #expect(!c.schedule())
        #expect(c.isPending)
        #expect(waitFor { runs[0] == 1 })
        usleep(100_000)
        #expect(runs[0] == 1)
        // A new period after the run.
        #expect(c.schedule(after: .milliseconds(1)))
        #expect(waitFor { runs[0] == 2 })
    }

    @Test func delayIsRespected() {
        let group = CoreExecutorGroup(count: 1)
        defer { group.shutdown() }
        let ranAt = KAtomicInts(1)
        let c = KernelContinuation(on: group.executor(for: 0)) { ranAt[0] = monotonicNanoseconds() }
        // Sub-millisecond delays round up to whole ticks (1.5 ms -> 2).
        let delays: [(Duration, ticks: Int)] = [
            (.milliseconds(5), 5), (.milliseconds(30), 30), (.milliseconds(300), 300), (.microseconds(1_500), 2),
        ]
        for (delay, ticks) in delays {
            ranAt[0] = 0
            let t0 = monotonicNanoseconds()
            #expect(c.schedule(after: delay))
            #expect(waitFor { ranAt[0] != 0 })
            let elapsedMs = Double(ranAt[0] - t0) / 1e6
            // Tick granularity: at least ticks - 1 ms.
            #expect(elapsedMs >= Double(ticks - 1), "delay \(delay) ran after \(elapsedMs) ms")
        }
    }

    @Test func cancelWithdrawsPendingRun() {
        let group = CoreExecutorGroup(count: 1)
        defer { group.shutdown() }
        let runs = KAtomicInts(1)
        let c = KernelContinuation(on: group.executor(for: 0)) { runs.add(0) }
        #expect(!c.cancel())
        #expect(c.schedule(after: .milliseconds(40)))
        #expect(c.cancel())
        #expect(!c.isPending)
        usleep(120_000)
        #expect(runs[0] == 0)
        // Cancel, then schedule again before the owner saw either.
        #expect(c.schedule(after: .milliseconds(30)))
        #expect(c.cancel())
        #expect(c.schedule(after: .milliseconds(1)))
        #expect(waitFor { runs[0] == 1 })
        usleep(80_000)
        #expect(runs[0] == 1)
    }

    /// A schedule that lands while the body runs must run it again.
    @Test func scheduleWhileRunningRearms() {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let flags = KAtomicInts(3)   // 0 runs, 1 body entered, 2 release body
        let c = KernelContinuation(on: group.executor(for: 1)) {
            let n = flags.add(0)
            if n == 1 {
                flags[1] = 1
                while flags[2] == 0 { usleep(100) }
            }
        }
        #expect(c.schedule())
        #expect(waitFor { flags[1] == 1 })
        #expect(c.schedule())          // running -> rescheduled: accepted
        #expect(!c.schedule())         // now pending: coalesced
        flags[2] = 1
        #expect(waitFor { flags[0] == 2 })
        usleep(20_000)
        #expect(flags[0] == 2)
    }

    @Test func longDelaysCascadeThroughLevels() {
        // A standalone wheel (not an executor's) driven by a fake clock:
        // every entry must expire exactly at its tick, across the level-0
        // wrap and both upper levels it reaches.
        let group = CoreExecutorGroup(count: 1)
        defer { group.shutdown() }
        let wheel = TimerWheel(now: 1_000)
        var rng = SystemRandomNumberGenerator()
        var nodes: [(KernelContinuation, Int)] = []
        let deltas = [1, 2, 255, 256, 257, 300, 16_383, 16_384, 16_385, 40_000, 1_048_575, 1_048_576, 1_500_000]
            + (0..<200).map { _ in Int.random(in: 1...2_000_000, using: &rng) }
        for d in deltas {
            let c = KernelContinuation(on: group.executor(for: 0)) {}
            nodes.append((c, 1_000 + d))
            wheel.insert(Unmanaged.passUnretained(c), expires: 1_000 + d)
        }
        // Remove a few again (O(1) unlink from the middle of slot lists).
        for i in stride(from: 20, to: nodes.count, by: 17) {
            #expect(wheel.remove(Unmanaged.passUnretained(nodes[i].0)))
            nodes[i].1 = -1
        }
        var expiredAt: [ObjectIdentifier: Int] = [:]
        var t = 1_000
        let end = 1_000 + 2_000_001
        while t < end {
            let step = Int.random(in: 1...700, using: &rng)
            t = min(end, t + step)
            wheel.advance(to: t)
            while let u = wheel.popExpired() {
                let c = u.takeUnretainedValue()
                expiredAt[ObjectIdentifier(c)] = t
                #expect(c.expires <= t && c.expires > t - step, "expired late/early: \(c.expires) at \(t)")
            }
        }
        for (c, e) in nodes {
            if e < 0 {
                #expect(expiredAt[ObjectIdentifier(c)] == nil)
            } else {
                #expect(expiredAt[ObjectIdentifier(c)] != nil, "entry for \(e) never expired")
            }
        }
        #expect(wheel.count == 0)
    }

    /// The expired list is FIFO and counted: an entry filed with no delay
    /// while the owner works through the list joins its back, so a pass
    /// bounded by the count it read at its start does not reach it.
    @Test func expiredListIsCountedAndFIFO() {
        let group = CoreExecutorGroup(count: 1)
        defer { group.shutdown() }
        let wheel = TimerWheel(now: 500)
        let nodes = (0..<4).map { _ in KernelContinuation(on: group.executor(for: 0)) {} }
        let u = nodes.map { Unmanaged.passUnretained($0) }
        wheel.insert(u[0], expires: 502)
        wheel.insert(u[1], expires: 501)
        wheel.insert(u[2], expires: 503)
        wheel.advance(to: 503)
        #expect(wheel.expiredCount == 3 && wheel.count == 0)
        var due = wheel.expiredCount
        var order: [Int] = []
        while due > 0, let n = wheel.popExpired() {
            due -= 1
            let i = u.firstIndex { $0.toOpaque() == n.toOpaque() }!
            order.append(i)
            if i == 1 {
                wheel.insert(n, expires: wheel.currentTick)       // re-filed with no delay
                wheel.insert(u[3], expires: wheel.currentTick - 1) // already late
            }
        }
        #expect(order == [1, 0, 2])
        #expect(wheel.expiredCount == 2)
        #expect(wheel.remove(u[1]) == false)   // off the expired list, not a slot
        #expect(wheel.expiredCount == 1)
        #expect(wheel.popExpired()?.toOpaque() == u[3].toOpaque())
        #expect(wheel.popExpired() == nil && wheel.expiredCount == 0 && !wheel.hasExpired)
    }

    /// Continuations scheduled, cancelled and rescheduled from several
    /// threads; after a final round of schedules every continuation must
    /// run at least once after its last schedule, observing the counter
    /// the scheduler wrote just before it.
    @Test(arguments: [2, 4, 8])
    func scheduleCancelStress(threads: Int) {
        let rounds = runningUnderTSan ? 4 : 10
        let opsPerThread = runningUnderTSan ? 1_000 : 5_000
        let items = 16
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        for _ in 0..<rounds {
            // stamp[i]: bumped by schedulers before scheduling item i;
            // seen[i]: the stamp the body saw at its latest run.
            let stamp = KAtomicInts(items)
            let seen = KAtomicInts(items)
            let runs = KAtomicInts(1)
            let conts = (0..<items).map { i in
                KernelContinuation(on: group.executor(for: i)) {
                    seen[i] = stamp[i]
                    runs.add(0)
                }
            }
            let barrier = SpinBarrier(parties: threads)
            let workers = (0..<threads).map { me in
                PinnedThread(cpu: me) {
                    var rng = SystemRandomNumberGenerator()
                    barrier.wait()
                    for _ in 0..<opsPerThread {
                        let i = Int.random(in: 0..<items, using: &rng)
                        switch Int.random(in: 0..<4, using: &rng) {
                        case 0: conts[i].cancel()
                        default:
                            stamp.add(i)
                            conts[i].schedule(after: .milliseconds(Int.random(in: 0...2, using: &rng)))
                        }
                    }
                    barrier.wait()
                    // The last operations: schedules only.
                    for i in stride(from: me, to: items, by: threads) {
                        stamp.add(i)
                        conts[i].schedule(after: .milliseconds(1))
                    }
                }
            }
            for w in workers { w.join() }
            let ok = waitFor(seconds: 20) { (0..<items).allSatisfy { seen[$0] == stamp[$0] } }
            #expect(ok, "some continuation did not run after its last schedule")
            #expect(runs[0] >= items)
        }
    }
}

/// A continuation whose body re-schedules itself with no delay, over and
/// over, until ``stop()``: a timer that re-arms itself at once. Every test
/// stops it once it has made its observation (or timed out), so a broken
/// executor is reported by `#expect`, and cleanup still works.
final class SelfRescheduler: @unchecked Sendable {
    // @unchecked: `continuation` is set in init, before the first
    // schedule (whose release publishes it to the body), and never changes.
    let runs = Atomic<Int>(0)
    private let stopped = Atomic<Bool>(false)
    private(set) var continuation: KernelContinuation!

    init(on executor: CoreExecutor) {
        // weak, not unowned: a run at the group's shutdown may come after
        // the test's last use of this object, which Swift may release.
        continuation = KernelContinuation(on: executor) { [weak self] in
            guard let self else { return }
            self.runs.add(1, ordering: .relaxed)
            if !self.stopped.load(ordering: .relaxed) { self.continuation.schedule() }
        }
    }

    func start() { continuation.schedule() }

    /// Stops re-scheduling and waits (bounded) until no run is pending.
    func stop() {
        stopped.store(true, ordering: .relaxed)
        _ = waitFor(seconds: 10) { !continuation.isPending }
    }

    var runCount: Int { runs.load(ordering: .relaxed) }
}

/// A body that re-schedules itself with no delay must run on a later loop
/// pass, not in the same one: the executor must keep draining its
/// mailboxes, reporting QSBR quiescent states and honouring shutdown.
@Suite struct SelfReschedulingContinuationTests {
    @Test func mailboxesAndForeignJobsStillDrain() {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let exe = group.executor(for: 0)
        let spinner = SelfRescheduler(on: exe)
        defer { spinner.stop() }
        spinner.start()
        #expect(waitFor(seconds: 5) { spinner.runCount >= 100 }, "the body does not re-run")
        let passes = exe.statistics.loopPasses
        let ran = KAtomicInts(2)
        exe.execute { ran.add(0) }                                 // a foreign thread's job
        group.executor(for: 1).execute { exe.execute { ran.add(1) } } // a peer's, through the ring
        #expect(waitFor(seconds: 5) { ran[0] == 1 }, "a foreign job did not run while the body re-schedules itself")
        #expect(waitFor(seconds: 5) { ran[1] == 1 }, "a peer's message was not handled while the body re-schedules itself")
        #expect(waitFor(seconds: 5) { exe.statistics.loopPasses > passes + 10 }, "the loop does not pass")
    }

    @Test func gracePeriodsComplete() {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let spinner = SelfRescheduler(on: group.executor(for: 0))
        defer { spinner.stop() }
        spinner.start()
        #expect(waitFor(seconds: 5) { spinner.runCount >= 100 }, "the body does not re-run")
        let done = KAtomicInts(2)
        let waiter = PinnedThread { QSBR.synchronize(); done[0] = 1 }
        QSBR.afterGracePeriod { done[1] = 1 }
        #expect(waitFor(seconds: 5) { done[0] == 1 }, "QSBR.synchronize() stalls")
        #expect(waitFor(seconds: 5) { done[1] == 1 }, "QSBR.afterGracePeriod stalls")
        spinner.stop()
        waiter.join()
        #expect(waitFor(seconds: 10) { done[1] == 1 })
    }

    @Test func shutdownReturnsAndCancelsTheReschedule() {
        let group = CoreExecutorGroup(count: 2)
        let spinner = SelfRescheduler(on: group.executor(for: 0))
        spinner.start()
        #expect(waitFor(seconds: 5) { spinner.runCount >= 100 }, "the body does not re-run")
        let done = KAtomicInts(1)
        let stopper = PinnedThread { () -> CoreExecutorShutdownReport in
            let report = group.shutdown()
            done[0] = 1
            return report
        }
        let returned = waitFor(seconds: 5) { done[0] == 1 }
        #expect(returned, "shutdown does not return while a body re-schedules itself")
        spinner.stop()
        let report = stopper.join()
        if returned {
            // The re-schedule made by the body's last run (at shutdown) is
            // cancelled and reported.
            #expect(report.continuationsCancelled == 1)
            #expect(!spinner.continuation.isPending)
        }
    }
}

/// Plain (non-atomic) integers that test threads share on purpose: each
/// test orders its accesses only through the primitive under test, so that
/// ThreadSanitizer checks that the primitive does order them.
final class PlainInts: @unchecked Sendable {
    // @unchecked: deliberately unsynchronized (see above).
    let base: UnsafeMutablePointer<Int>
    let count: Int
    init(_ count: Int) {
        self.count = count
        base = .allocate(capacity: count)
        base.initialize(repeating: 0, count: count)
    }
    deinit { base.deallocate() }
    subscript(i: Int) -> Int {
        get { base[i] }
        set { base[i] = newValue }
    }
}

/// Atomic integers accessed with relaxed ordering only: signals that must
/// create no happens-before (unlike ``KAtomicInts``' release/acquire, whose
/// storage they use).
final class RelaxedInts: Sendable {
    let storage: KAtomicInts
    init(_ count: Int) { storage = KAtomicInts(count) }
    subscript(i: Int) -> Int {
        get { storage.base[i].load(ordering: .relaxed) }
        set { storage.base[i].store(newValue, ordering: .relaxed) }
    }
}

/// The guarantee "the body sees the writes that preceded a schedule" for a
/// schedule that coalesces, checked in the memory model rather than on x86:
/// several threads write plain memory and then schedule a continuation
/// that is certainly pending (its executor is held, or its body is held
/// with a re-schedule already made), so every one of those schedules
/// coalesces; then the body reads the memory. Nothing but the schedules
/// orders the writers before the body (the executor is held and released
/// through relaxed atomics), so under ThreadSanitizer, which tracks
/// happens-before and ignores fences, a coalesced path that performs no
/// release operation is reported as a data race.
@Suite struct CoalescedScheduleOrderingTests {
    @Test(arguments: ["pending", "rescheduled"])
    func coalescedScheduleOrdersTheCallersWritesBeforeTheBody(phase: String) {
        let writers = 4
        let rounds = runningUnderTSan ? 20 : 200
        let holdInBody = phase == "rescheduled"
        let group = CoreExecutorGroup(count: 1)
        defer { group.shutdown() }
        let exe = group.executor(for: 0)
        let data = PlainInts(writers)
        let bodyRuns = PlainInts(1)   // touched by the body only
        let gate = RelaxedInts(2)     // [0] the round held, [1] the round released
        let seen = KAtomicInts(2)     // [0] the round the body read, [1] stale reads
        let coalesced = KAtomicInts(1)
        let c = KernelContinuation(on: exe) {
            bodyRuns[0] += 1
            let n = bodyRuns[0]
            if holdInBody && n % 2 == 1 {
                // The first run of a round: hold the body (RUNNING) while
                // the test re-schedules it and the writers coalesce.
                let r = (n + 1) / 2
                gate[0] = r
                while gate[1] != r { spinLoopHint() }
                return
            }
            let r = holdInBody ? n / 2 : n
            for w in 0..<writers where data[w] != r { seen.add(1) }
            seen[0] = r
        }
        for r in 1...rounds {
            if holdInBody {
                #expect(c.schedule())                     // IDLE -> PENDING
                #expect(waitFor { gate[0] == r })         // now RUNNING, held
                #expect(c.schedule())                     // RUNNING -> RESCHEDULED
            } else {
                exe.execute {
                    gate[0] = r
                    while gate[1] != r { spinLoopHint() }
                }
                #expect(waitFor { gate[0] == r })         // the executor is held
                #expect(c.schedule())                     // IDLE -> PENDING
            }
            let threads = (0..<writers).map { w in
                PinnedThread(cpu: w) {
                    data[w] = r
                    if !c.schedule() { coalesced.add(0) }
                }
            }
            for t in threads { t.join() }
            gate[1] = r
            #expect(waitFor { seen[0] == r }, "round \(r): the body did not run")
        }
        #expect(coalesced[0] == writers * rounds)
        #expect(seen[1] == 0, "the body read data older than a schedule that preceded its run")
    }
}

/// ``KernelContinuation/cancelAndWait()`` (NetBSD's callout_halt): when it
/// returns, the body is not running and will not run. The body's writes
/// are plain, so under ThreadSanitizer a return that is not ordered after
/// the body's end is also reported as a race with the caller's writes.
@Suite struct CancelAndWaitTests {
    /// A body that sleeps `ms` on its executor, recording entry and exit;
    /// it re-arms itself at its end when `rearm` is set.
    final class SlowBody: @unchecked Sendable {
        // @unchecked: `continuation` is set in init before any schedule;
        // `touched` is plain on purpose (see the suite).
        let flags = KAtomicInts(3)   // 0 entered, 1 exited, 2 runs
        let touched = PlainInts(1)
        private(set) var continuation: KernelContinuation!
        init(on executor: CoreExecutor, ms: Int, rearm: Bool = false) {
            // weak, not unowned: a run at the group's shutdown may come after
            // the test's last use of this object, which Swift may release.
            continuation = KernelContinuation(on: executor) { [weak self] in
                guard let self else { return }
                self.flags.add(2)
                self.flags[0] = 1
                usleep(UInt32(ms * 1_000))
                self.touched[0] += 1
                if rearm { self.continuation.schedule() }
                self.flags[1] = 1
            }
        }
    }

    /// Waits for `job` to set `done[0]` on another thread; meanwhile rings
    /// `executor` now and then. A peer's wait parks until rung or until its
    /// park times out: the rings keep this test's deadline independent of
    /// that timeout.
    func waitRinging(_ executor: CoreExecutor, _ done: KAtomicInts) -> Bool {
        waitFor(seconds: 10) {
            executor.wake()
            return done[0] == 1
        }
    }

    /// "running": the body runs when the call comes; "rescheduled": it was
    /// also re-scheduled (the call withdraws that, and says so);
    /// "rearming": the body re-arms itself while the call waits (withdrawn,
    /// not counted: nothing was pending when the call began).
    @Test(arguments: ["running", "rescheduled", "rearming"])
    func fromAForeignThreadWaitsForTheRunningBody(_ state: String) {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let slow = SlowBody(on: group.executor(for: 1), ms: 50, rearm: state == "rearming")
        let c = slow.continuation!
        #expect(c.schedule())
        #expect(waitFor { slow.flags[0] == 1 })
        if state == "rescheduled" { #expect(c.schedule()) }    // RUNNING -> RESCHEDULED
        let t0 = monotonicNanoseconds()
        #expect(c.cancelAndWait() == (state == "rescheduled"))
        #expect(slow.flags[1] == 1, "returned while the body was still running")
        #expect(monotonicNanoseconds() - t0 < 5_000_000_000)
        slow.touched[0] += 1                        // ours now (TSan checks the order)
        usleep(100_000)
        #expect(slow.flags[2] == 1, "the body ran again after cancelAndWait")
        #expect(!c.isPending)
    }

    @Test func cancelsAPendingRunWithoutWaiting() {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let slow = SlowBody(on: group.executor(for: 1), ms: 0)
        let c = slow.continuation!
        #expect(!c.cancelAndWait())                 // idle: nothing to withdraw
        #expect(c.schedule(after: .milliseconds(50)))
        let t0 = monotonicNanoseconds()
        #expect(c.cancelAndWait())
        #expect(monotonicNanoseconds() - t0 < 1_000_000_000)
        usleep(100_000)
        #expect(slow.flags[2] == 0, "a cancelled run ran")
        #expect(!c.isPending)
        // Usable again afterwards.
        #expect(c.schedule())
        #expect(waitFor { slow.flags[2] == 1 })
    }

    @Test func fromInsideTheBodyReturnsAtOnce() {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let result = KAtomicInts(4)  // 0 runs, 1 withdrew the re-arm, 2 ns taken, 3 done
        let box = SelfRef()
        box.continuation = KernelContinuation(on: group.executor(for: 0)) {
            let c = box.continuation!
            guard result.add(0) == 1 else { return }   // must not run again
            c.schedule()                                // re-arm ...
            let t0 = monotonicNanoseconds()
            if c.cancelAndWait() { result[1] = 1 }      // ... and halt from inside
            result[2] = monotonicNanoseconds() - t0
            result[3] = 1
        }
        #expect(box.continuation.schedule())
        #expect(waitFor(seconds: 5) { result[3] == 1 })
        #expect(result[1] == 1, "the body's re-arm was not withdrawn")
        #expect(result[2] < 100_000_000, "cancelAndWait from the body waited")
        usleep(100_000)
        #expect(result[0] == 1, "the body ran again")
        #expect(!box.continuation.isPending)
        box.continuation = nil
    }

    @Test func fromAPeerExecutorWaitsDraining() {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let slow = SlowBody(on: group.executor(for: 0), ms: 1_000)
        let c = slow.continuation!
        let peer = group.executor(for: 1)
        #expect(c.schedule())
        #expect(waitFor { slow.flags[0] == 1 })
        #expect(c.schedule())                       // RUNNING -> RESCHEDULED
        let result = KAtomicInts(4)   // 0 done, 1 cancelled, 2 exited at return, 3 waiting
        let handled = KAtomicInts(1)
        peer.execute {
            result[3] = 1
            if c.cancelAndWait() { result[1] = 1 }
            result[2] = slow.flags[1]
            slow.touched[0] += 1
            result[0] = 1
        }
        // While it waits, the peer keeps handling its own foreign jobs
        // (1: handled while the body still ran).
        // Enqueued once the peer is in its wait; whether the body was still
        // running then is recorded, so a loaded machine that lets the body
        // end first cannot make the check below fail spuriously.
        _ = waitFor { result[3] == 1 }
        let bodyStillRan = slow.flags[1] == 0
        peer.execute { handled[0] = slow.flags[1] == 0 ? 1 : 2 }
        #expect(waitRinging(peer, result))
        #expect(result[1] == 1)
        #expect(result[2] == 1, "returned while the body was still running")
        if bodyStillRan {
            // The body runs 1 s: a peer that drains while it waits handles
            // the job before the body ends (1); one that does not, after (2).
            #expect(handled[0] == 1, "the waiting peer did not handle its foreign jobs")
        }
        usleep(100_000)
        #expect(slow.flags[2] == 1, "the body ran again after cancelAndWait")
    }
}

/// A mutable reference to a continuation, for a body that refers to its
/// own continuation. Set before the first schedule, cleared after the
/// last run (breaking the cycle).
final class SelfRef: @unchecked Sendable {
    // @unchecked: written before the first schedule (whose release
    // publishes it) and after the last run (ordered by the test's waits).
    var continuation: KernelContinuation!
}

/// cancelAndWait against runs that start, re-arm and end at random points:
/// after every call the body is not running and does not run again until
/// the test schedules it; the memory it touches is then the caller's
/// (under ThreadSanitizer, plain accesses check the ordering).
@Suite struct CancelAndWaitStressTests {
    @Test(arguments: ["foreign", "peer"])
    func haltRacesRunsAndReArms(from caller: String) {
        let rounds = runningUnderTSan ? 300 : 2_000
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let flags = KAtomicInts(3)   // 0 in body, 1 runs, 2 violations
        let touched = PlainInts(1)
        let rearm = RelaxedInts(1)
        let box = SelfRef()
        box.continuation = KernelContinuation(on: group.executor(for: 0)) {
            if flags.add(0) != 1 { flags.add(2) }
            flags.add(1)
            touched[0] += 1
            for _ in 0..<Int.random(in: 0..<200) { spinLoopHint() }
            if rearm[0] != 0 { box.continuation.schedule() }
            flags.add(0, -1)
        }
        let c = box.continuation!
        let work: @Sendable () -> Int = {
            var violations = 0
            var rng = SystemRandomNumberGenerator()
            for round in 0..<rounds {
                rearm[0] = round % 3 == 0 ? 1 : 0
                c.schedule(after: .milliseconds(Int.random(in: 0...1, using: &rng)))
                for _ in 0..<Int.random(in: 0..<2_000, using: &rng) { spinLoopHint() }
                c.cancelAndWait()
                if flags[0] != 0 { violations += 1 }
                let runs = flags[1]
                touched[0] += 1   // the body's memory is ours now
                for _ in 0..<200 { spinLoopHint() }
                if flags[1] != runs || c.isPending { violations += 1 }
            }
            return violations
        }
        let violations: Int
        if caller == "peer" {
            let result = KAtomicInts(2)   // 0 done, 1 violations
            group.executor(for: 1).execute {
                result[1] = work()
                result[0] = 1
            }
            // Rings, as in CancelAndWaitTests.waitRinging.
            #expect(waitFor(seconds: 60) { group.executor(for: 1).wake(); return result[0] == 1 })
            violations = result[1]
        } else {
            violations = work()
        }
        #expect(violations == 0, "a body ran, or was running, after cancelAndWait returned")
        #expect(flags[2] == 0, "the body ran concurrently with itself")
        #expect(flags[1] > 0)
        box.continuation = nil
    }
}
