import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

@Suite struct CoreExecutorTests {
    @Test func executeRunsOnTheExecutorThread() {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let hits = KAtomicInts(2)
        for e in group.executors {
            e.execute {
                if e.isCurrent && CoreExecutor.current === e { hits.add(e.core) }
            }
        }
        #expect(waitFor { hits[0] == 1 && hits[1] == 1 })
        #expect(CoreExecutor.current == nil)
    }

    @Test func synchronousCallsFromForeignAndExecutorThreads() {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let a = group.executor(for: 0)
        let b = group.executor(for: 1)
        #expect(b.call { b.isCurrent ? 42 : -1 } == 42)
        #expect(group.call(on: 1) { CoreExecutor.current?.core ?? -1 } == 1)
        // From executor a to b (a drains its own mailbox while waiting),
        // and b calling back into a while a waits: no deadlock.
        let r = a.call { () -> Int in
            b.call { () -> Int in
                a.call { a.isCurrent ? 7 : -1 } + 1
            } * 10
        }
        #expect(r == 80)
        // Calling yourself runs inline.
        #expect(a.call { a.call { 5 } } == 5)
    }

    /// `execute` and `call` take `sending` closures and `call` returns a
    /// `sending` result: non-Sendable values cross without boxes.
    @Test func nonSendableValuesCrossInCallsAndJobs() {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let b = group.executor(for: 1)
        let bag = NonSendableBag()
        bag.items = [1]
        let fromSync = b.call { [bag] () -> NonSendableBag in
            let out = NonSendableBag()
            out.items = bag.items + [b.isCurrent ? 2 : -1]
            return out
        }
        #expect(fromSync.items == [1, 2])
        let seen = KAtomicInts(1)
        let jobBag = NonSendableBag()
        jobBag.items = [5, 6]
        b.execute { [jobBag] in seen[0] = jobBag.items.reduce(0, +) }
        #expect(waitFor { seen[0] == 11 })
    }

    @Test func nonSendableResultOfAnAsyncCall() async {
        let group = CoreExecutorGroup(count: 1)
        defer { group.shutdown() }
        let fromAsync = await group.call(on: 0) { () -> NonSendableBag in
            let out = NonSendableBag()
            out.items = [CoreExecutor.current?.core ?? -1]
            return out
        }
        #expect(fromAsync.items == [0])
    }

    @Test func asyncCallAndTaskExecutorPreference() async {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let b = group.executor(for: 1)
        let v = await b.call { b.isCurrent ? 3 : 0 }
        #expect(v == 3)
        let w = await group.call(on: 0) { CoreExecutor.current?.core ?? -1 }
        #expect(w == 0)
        let onCore = await withTaskExecutorPreference(b) { () async -> Bool in
            // Suspend and resume a few times: every resumption is on b.
            var ok = b.isCurrent
            for _ in 0..<10 {
                await Task.yield()
                ok = ok && b.isCurrent
            }
            return ok
        }
        #expect(onCore)
        let t = Task(executorPreference: b) { b.isCurrent }
        #expect(await t.value)
    }

    /// Two executors flood each other through 4-slot rings while each is
    /// also waiting for its own sends: the DragonFly drain-while-full rule
    /// keeps both moving. Checks exactly-once and per-pair order.
    @Test func mutualFloodThroughFullRingsDoesNotDeadlock() {
        var config = CoreExecutorGroup.Configuration()
        config.mailboxCapacity = 4
        let received = KAtomicInts(4)   // per receiver: count, order errors
        let group = CoreExecutorGroup(count: 2, configuration: config) { sender, m in
            let me = 1 - sender
            if m.a != UInt(received[me]) { received.add(2 + me) }
            received.add(me)
        }
        defer { group.shutdown() }
        let n = runningUnderTSan ? 5_000 : 50_000
        let done = KAtomicInts(1)
        for e in group.executors {
            let other = group.executor(for: e.core + 1)
            e.execute {
                for i in 0..<n { e.send(MailboxMessage(UInt(i)), to: other) }
                done.add(0)
            }
        }
        #expect(waitFor(seconds: 60) { done[0] == 2 && received[0] == n && received[1] == n })
        #expect(received[2] == 0 && received[3] == 0)
        let stats = group.mailboxes.totalStatistics
        #expect(stats.sent >= 2 * n)
        #expect(stats.fullEvents > 0)
    }

    @Test func pollersRunAndParkedExecutorsWake() {
        let group = CoreExecutorGroup(count: 1)
        defer { group.shutdown() }
        let e = group.executor(for: 0)
        let polls = KAtomicInts(2)
        e.addPoller {
            polls.add(0)
            if polls[1] > 0 {
                polls.add(1, -1)
                return 1
            }
            return 0
        }
        #expect(waitFor { polls[0] > 5 })
        // Idle with a poller: parks with the poll timeout, so polls continue.
        let before = polls[0]
        usleep(30_000)
        #expect(polls[0] > before)
        polls.add(1)
        e.wake()
        #expect(waitFor { polls[1] == 0 })
        #expect(e.statistics.pollerWork >= 1)
    }

    @Test func executorsPassRCUGracePeriods() {
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        // Busy and parked executors alike must not block synchronize.
        group.executor(for: 0).execute { usleep(5_000) }
        for _ in 0..<5 { QSBR.synchronize() }
        usleep(20_000)
        for _ in 0..<5 { QSBR.synchronize() }
    }

    @Test func shutdownRunsOrReportsPendingWork() {
        for runPending in [true, false] {
            let group = CoreExecutorGroup(count: 2)
            let runs = KAtomicInts(2)
            let conts = (0..<10).map { i in
                KernelContinuation(on: group.executor(for: i)) { runs.add(0) }
            }
            for c in conts { c.schedule(after: .seconds(60)) }
            for e in group.executors { e.execute { runs.add(1) } }
            #expect(waitFor { runs[1] == 2 })
            usleep(10_000)
            let report = group.shutdown(runPending: runPending)
            if runPending {
                #expect(runs[0] == 10)
                #expect(report.continuationsRunAtShutdown == 10)
            } else {
                #expect(runs[0] == 0)
                #expect(report.continuationsCancelled == 10)
            }
            #expect(conts.allSatisfy { !$0.isPending })
            // Late work is reported, not run, and nothing hangs.
            #expect(conts[0].schedule())
            group.executor(for: 0).execute { runs.add(1) }
            #expect(group.shutdown() == CoreExecutorShutdownReport())
            #expect(runs[1] == 2)
        }
    }

    @Test func shutdownDrainsQueuedMessages() {
        let group = CoreExecutorGroup(count: 2)
        let count = KAtomicInts(1)
        let a = group.executor(for: 0)
        let b = group.executor(for: 1)
        a.execute {
            for _ in 0..<100 { b.execute { count.add(0) } }
        }
        usleep(50_000)
        let report = group.shutdown()
        #expect(count[0] + report.messagesUndelivered == 100)
        #expect(count[0] == 100)
    }
}
