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
