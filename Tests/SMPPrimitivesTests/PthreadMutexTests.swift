import Glibc
import Synchronization
import Testing
import SMPPrimitives

/// A counter guarded by a `PthreadMutex` (deliberately a plain `var`: a
/// missing hand-off edge would be a data race TSan reports).
final class LockedCounter: @unchecked Sendable {
    // @unchecked Sendable: `value` is only touched while holding `mutex`.
    let mutex = PthreadMutex()
    let condition = PthreadCondition()
    var value = 0
}

struct TestError: Error {}

@Suite struct PthreadMutexTests {
    @Test func mutexSerializesIncrements() {
        let counter = LockedCounter()
        let perThread = runningUnderTSan ? 2_000 : 50_000
        let threads = (0..<4).map { i in
            PinnedThread(cpu: i, name: "mutex-" + String(i)) {
                for _ in 0..<perThread { counter.mutex.withLock { counter.value += 1 } }
            }
        }
        for t in threads { t.join() }
        #expect(counter.mutex.withLock { counter.value } == 4 * perThread)
    }

    @Test func tryLockFailsWhileAnotherThreadHoldsIt() {
        let counter = LockedCounter()
        let flags = KAtomicInts(2)   // 0 held, 1 release
        let holder = PinnedThread(name: "mutex-holder") {
            counter.mutex.lock()
            flags[0] = 1
            while flags[1] == 0 { usleep(100) }
            counter.mutex.unlock()
        }
        #expect(waitFor { flags[0] == 1 })
        let tookHeld = counter.mutex.tryLock()
        #expect(!tookHeld)
        flags[1] = 1
        holder.join()
        let tookFree = counter.mutex.tryLock()
        #expect(tookFree)
        counter.mutex.unlock()
    }

    @Test func withLockUnlocksWhenTheBodyThrows() {
        let m = PthreadMutex()
        #expect(throws: TestError.self) { try m.withLock { () throws(TestError) -> Int in throw TestError() } }
        let took = m.tryLock()
        #expect(took)
        m.unlock()
    }

    @Test func conditionWaitsAreSignalledOrTimeOut() {
        let counter = LockedCounter()
        // Timed out: nobody signals.
        counter.mutex.lock()
        let t0 = monotonicNanoseconds()
        var woken = true
        while woken && counter.value == 0 {
            woken = counter.condition.wait(counter.mutex, untilMonotonicNanoseconds: t0 + 20_000_000)
        }
        counter.mutex.unlock()
        #expect(!woken)
        #expect(monotonicNanoseconds() - t0 >= 19_000_000)
        // Signalled: the waiter sees the value set under the mutex.
        let waiter = PinnedThread(name: "cond-waiter") { () -> Int in
            counter.mutex.withLock {
                while counter.value == 0 { counter.condition.wait(counter.mutex) }
                return counter.value
            }
        }
        usleep(5_000)
        counter.mutex.withLock { counter.value = 7 }
        counter.condition.signal()
        #expect(waiter.join() == 7)
    }
}

@Suite struct ClockTests {
    @Test func monotonicClockAdvancesAndAgreesWithItself() {
        let n0 = monotonicNanoseconds()
        let s0 = monotonicSeconds()
        usleep(10_000)
        let n1 = monotonicNanoseconds()
        let s1 = monotonicSeconds()
        #expect(n1 - n0 >= 9_000_000)
        #expect(s1 - s0 >= 0.009)
        #expect(abs(Double(n0) * 1e-9 - s0) < 0.5)
    }

    @Test func threadCPUTimeCountsOnlyWork() {
        let c0 = threadCPUNanoseconds()
        let s0 = threadCPUSeconds()
        var x: UInt64 = 1
        // Work until the thread's own CPU clock shows 2 ms, not for a fixed
        // wall time: on a loaded machine (CI's two lanes, load 10) 20 ms
        // of wall time once gave this thread only 0.8 ms of CPU. The wall
        // deadline only keeps a stuck clock from spinning forever.
        let wall0 = monotonicNanoseconds()
        while threadCPUNanoseconds() - c0 < 2_000_000 && monotonicNanoseconds() - wall0 < 30_000_000_000 {
            for _ in 0..<1000 { x = x &* 6364136223846793005 &+ 1 }
        }
        let busy = threadCPUNanoseconds() - c0
        #expect(x != 0)
        #expect(busy >= 2_000_000, "the thread's CPU clock advances while it works")
        #expect(threadCPUSeconds() - s0 >= 0.002)
        // CPU time of this thread alone never exceeds the wall time it took.
        #expect(busy <= monotonicNanoseconds() - wall0 + 1_000_000)
        let c1 = threadCPUNanoseconds()
        usleep(20_000)   // sleeping uses (almost) no CPU time
        #expect(threadCPUNanoseconds() - c1 < 10_000_000)
    }

    @Test func durationsRoundUp() {
        #expect(Duration.zero.millisecondsRoundedUp == 0)
        #expect(Duration.milliseconds(-5).millisecondsRoundedUp == 0)
        #expect(Duration.nanoseconds(1).millisecondsRoundedUp == 1)
        #expect(Duration.milliseconds(1).millisecondsRoundedUp == 1)
        #expect(Duration.microseconds(1_500).millisecondsRoundedUp == 2)
        #expect(Duration.seconds(60).millisecondsRoundedUp == 60_000)
        #expect(Duration.nanoseconds(1).nanosecondsRoundedUp == 1)
        #expect(Duration.nanoseconds(-1).nanosecondsRoundedUp == 0)
        // Over ~9.2 s the 128-bit path.
        #expect(Duration.seconds(20).nanosecondsRoundedUp == 20_000_000_000)
        #expect((Duration.seconds(20) + .nanoseconds(1)).millisecondsRoundedUp == 20_001)
        #expect(Duration.seconds(Int64.max).millisecondsRoundedUp == Int.max)
    }
}
