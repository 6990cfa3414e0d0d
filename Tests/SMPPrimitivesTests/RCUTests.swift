import CURCU
import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

/// Counts callbacks of `rcuTestCallback` (a C callback cannot capture).
let rcuTestCallbacks = Atomic<Int>(0)

/// A node reclaimed through call_rcu: `rcu_head` at offset 0.
private struct RCUTestNode {
    var head = rcu_head()
    var payload: Int
}

private let rcuTestCallback: RCUCallback = { head in
    let node = UnsafeMutableRawPointer(head!).assumingMemoryBound(to: RCUTestNode.self)
    precondition(node.pointee.payload >= 0)
    rcuTestCallbacks.add(1, ordering: .relaxed)
    node.deinitialize(count: 1)
    node.deallocate()
}

private func allocateTestNode(_ payload: Int) -> UnsafeMutablePointer<rcu_head> {
    let node = UnsafeMutablePointer<RCUTestNode>.allocate(capacity: 1)
    node.initialize(to: RCUTestNode(payload: payload))
    return UnsafeMutableRawPointer(node).assumingMemoryBound(to: rcu_head.self)
}

/// Flags shared between a test's threads.
final class RCUTestFlags: Sendable {
    let entered = Atomic<Bool>(false)
    let left = Atomic<Bool>(false)
    let observedLeftAfterWait = Atomic<Int>(-1)
}

private func waitUntil(_ flag: borrowing Atomic<Bool>) {
    while !flag.load(ordering: .acquiring) { sched_yield() }
}

// call_rcu callbacks are counted in one global: these tests must not overlap.
@Suite(.serialized) struct RCUTests {
    @Test func registrationIsTrackedPerThreadAndFlavour() {
        let t = PinnedThread(name: "rcu-reg") {
            precondition(!QSBR.isThreadRegistered && !Memb.isThreadRegistered)
            QSBR.registerThread()
            precondition(QSBR.isThreadRegistered && !Memb.isThreadRegistered)
            precondition(QSBR.isInReadSection)
            QSBR.threadOffline()
            precondition(!QSBR.isInReadSection)
            QSBR.threadOnline()
            QSBR.unregisterThread()
            precondition(!QSBR.isThreadRegistered)
            Memb.registerThread()
            precondition(Memb.isThreadRegistered)
            Memb.withReadSection {
                Memb.withReadSection { precondition(Memb.isInReadSection) }
            }
            Memb.unregisterThread()
            // bp: every thread is a reader, registration is automatic.
            precondition(Bulletproof.isThreadRegistered && !Bulletproof.isInReadSection)
            Bulletproof.withReadSection {
                Bulletproof.withReadSection { precondition(Bulletproof.isInReadSection && !Memb.isInReadSection) }
                precondition(Bulletproof.isInReadSection)
            }
            precondition(!Bulletproof.isInReadSection)
            Bulletproof.registerThread()  // optional and idempotent
            Bulletproof.registerThread()
            Bulletproof.unregisterThread()  // a no-op
        }
        t.join()
        // Another thread's registration is not this thread's.
        #expect(!QSBR.isThreadRegistered)
        #expect(!Memb.isThreadRegistered)
    }

    /// A reader that entered its section before synchronize() began must
    /// have left it before synchronize() returns.
    @Test(arguments: ["memb", "qsbr", "bp"])
    func synchronizeWaitsForPreExistingReader(flavour: String) {
        let flags = RCUTestFlags()
        let reader = PinnedThread(cpu: 0, name: "rcu-reader") {
            if flavour == "bp" {
                // No registration: the first read lock registers the thread.
                Bulletproof.readLock()
                flags.entered.store(true, ordering: .releasing)
                usleep(50_000)
                flags.left.store(true, ordering: .releasing)
                Bulletproof.readUnlock()
            } else if flavour == "memb" {
                Memb.registerThread()
                Memb.readLock()
                flags.entered.store(true, ordering: .releasing)
                usleep(50_000)
                flags.left.store(true, ordering: .releasing)
                Memb.readUnlock()
                Memb.unregisterThread()
            } else {
                QSBR.registerThread()  // online: a reader from now on
                flags.entered.store(true, ordering: .releasing)
                usleep(50_000)
                flags.left.store(true, ordering: .releasing)
                QSBR.quiescentState()
                // Stay online a little: the grace period must have ended
                // on the quiescent state, not on unregistration.
                usleep(20_000)
                QSBR.unregisterThread()
            }
        }
        let writer = PinnedThread(cpu: 1, name: "rcu-sync") {
            waitUntil(flags.entered)
            switch flavour {
            case "memb": Memb.synchronize()
            case "bp": Bulletproof.synchronize()
            default: QSBR.synchronize()
            }
            flags.observedLeftAfterWait.store(flags.left.load(ordering: .acquiring) ? 1 : 0, ordering: .releasing)
        }
        reader.join()
        writer.join()
        #expect(flags.observedLeftAfterWait.load(ordering: .acquiring) == 1)
    }

    @Test(arguments: ["memb", "qsbr", "bp"])
    func deferredCallbacksRunAfterGracePeriodAndBarrier(flavour: String) {
        rcuTestCallbacks.store(0, ordering: .relaxed)
        let flags = RCUTestFlags()
        let n = 100
        let box = RCUTestBox()
        let reader = PinnedThread(cpu: 0, name: "rcu-reader") {
            switch flavour {
            case "memb": Memb.registerThread(); Memb.readLock()
            case "bp": Bulletproof.readLock()
            default: QSBR.registerThread()
            }
            flags.entered.store(true, ordering: .releasing)
            waitUntil(box.release)
            switch flavour {
            case "memb": Memb.readUnlock(); Memb.unregisterThread()
            case "bp": Bulletproof.readUnlock()
            default: QSBR.unregisterThread()
            }
        }
        let writer = PinnedThread(cpu: 1, name: "rcu-writer") {
            waitUntil(flags.entered)
            for i in 0..<n {
                switch flavour {
                case "memb": Memb.deferFree(allocateTestNode(i), rcuTestCallback)
                case "bp": Bulletproof.deferFree(allocateTestNode(i), rcuTestCallback)
                default: QSBR.deferFree(allocateTestNode(i), rcuTestCallback)
                }
            }
            // The reader is still in its section: nothing may run yet.
            usleep(30_000)
            box.countWhileReading.store(rcuTestCallbacks.load(ordering: .relaxed), ordering: .relaxed)
            box.release.store(true, ordering: .releasing)
            switch flavour {
            case "memb": Memb.barrier()
            case "bp": Bulletproof.barrier()
            default: QSBR.barrier()
            }
            box.countAfterBarrier.store(rcuTestCallbacks.load(ordering: .relaxed), ordering: .relaxed)
        }
        reader.join()
        writer.join()
        #expect(box.countWhileReading.load(ordering: .relaxed) == 0)
        #expect(box.countAfterBarrier.load(ordering: .relaxed) == n)
    }

    @Test func deferFreeFromUnregisteredThreadAndBarrierFromOnlineQSBRThread() {
        rcuTestCallbacks.store(0, ordering: .relaxed)
        // This test's own thread is not registered with either flavour.
        QSBR.deferFree(allocateTestNode(1), rcuTestCallback)
        Memb.deferFree(allocateTestNode(2), rcuTestCallback)
        Bulletproof.deferFree(allocateTestNode(4), rcuTestCallback)
        #expect(!QSBR.isThreadRegistered && !Memb.isThreadRegistered)
        let t = PinnedThread(name: "rcu-online") {
            QSBR.registerThread()
            QSBR.deferFree(allocateTestNode(3), rcuTestCallback)
            QSBR.barrier()  // online caller: taken offline for the wait
            precondition(QSBR.isInReadSection, "barrier must leave the thread online")
            QSBR.unregisterThread()
        }
        t.join()
        Memb.barrier()
        Bulletproof.barrier()
        #expect(rcuTestCallbacks.load(ordering: .relaxed) == 4)
    }

    /// A grace-period job runs once, on another thread, only after a reader
    /// that was in a read section when it was scheduled has left it; a
    /// barrier waits for it; the job may take read sections and schedule
    /// more jobs there (the worker is a registered reader).
    @Test(arguments: ["memb", "qsbr", "bp"])
    func afterGracePeriodRunsOnceAfterReaderLeftAndBarrierWaitsForIt(flavour: String) {
        switch flavour {
        case "memb": graceJobRound(Memb.self)
        case "bp": graceJobRound(Bulletproof.self)
        default: graceJobRound(QSBR.self)
        }
    }

    private func graceJobRound<F: RCUFlavor>(_: F.Type) {
        let flags = RCUTestFlags()
        let box = RCUTestBox()
        let job = RCUJobTally()
        let reader = PinnedThread(cpu: 0, name: "rcu-reader") {
            F.registerThread()  // QSBR: online, so a reader from now on
            if F.self != QSBR.self { F.readLock() }  // QSBR: online is enough
            flags.entered.store(true, ordering: .releasing)
            waitUntil(box.release)
            flags.left.store(true, ordering: .releasing)
            if F.self != QSBR.self { F.readUnlock() } else { QSBR.quiescentState() }
            F.unregisterThread()
        }
        let writer = PinnedThread(cpu: 1, name: "rcu-writer") {
            F.registerThread()
            waitUntil(flags.entered)
            let me = pthread_self()
            F.afterGracePeriod {
                // Slow, so that the barrier below really has to wait.
                usleep(20_000)
                job.sawReaderLeft.store(flags.left.load(ordering: .acquiring) ? 1 : 0, ordering: .relaxed)
                job.onOtherThread.store(pthread_equal(pthread_self(), me) == 0 ? 1 : 0, ordering: .relaxed)
                job.workerRegistered.store(F.isThreadRegistered ? 1 : 0, ordering: .relaxed)
                F.withReadSection { precondition(F.isInReadSection) }
                F.afterGracePeriod { job.nestedRuns.add(1, ordering: .relaxed) }
                job.runs.add(1, ordering: .releasing)
            }
            // The reader is still in its section: the job may not run yet.
            F.withThreadOfflineIfQSBR { usleep(30_000) }
            box.countWhileReading.store(job.runs.load(ordering: .relaxed), ordering: .relaxed)
            box.release.store(true, ordering: .releasing)
            F.barrier()
            box.countAfterBarrier.store(job.runs.load(ordering: .acquiring), ordering: .relaxed)
            // The nested job was queued before this barrier started.
            F.barrier()
            job.nestedAfterSecondBarrier.store(job.nestedRuns.load(ordering: .relaxed), ordering: .relaxed)
            F.unregisterThread()
        }
        reader.join()
        writer.join()
        #expect(box.countWhileReading.load(ordering: .relaxed) == 0)
        #expect(box.countAfterBarrier.load(ordering: .relaxed) == 1)
        #expect(job.sawReaderLeft.load(ordering: .relaxed) == 1)
        #expect(job.onOtherThread.load(ordering: .relaxed) == 1)
        #expect(job.workerRegistered.load(ordering: .relaxed) == 1)
        #expect(job.nestedAfterSecondBarrier.load(ordering: .relaxed) == 1)
        // Once only.
        F.barrier()
        #expect(job.runs.load(ordering: .relaxed) == 1)
        #expect(job.nestedRuns.load(ordering: .relaxed) == 1)
    }

    /// An unregistered thread may schedule a job (it is registered for the
    /// call), and the job's captures are released after it ran.
    @Test func afterGracePeriodFromUnregisteredThreadReleasesItsCaptures() {
        #expect(!QSBR.isThreadRegistered && !Memb.isThreadRegistered)
        let job = RCUJobTally()
        weak var weakTally: RCUJobTally?
        do {
            let captured = RCUJobTally()
            weakTally = captured
            QSBR.afterGracePeriod { job.runs.add(1, ordering: .relaxed); _ = captured }
            Memb.afterGracePeriod { job.runs.add(1, ordering: .relaxed); _ = captured }
            Bulletproof.afterGracePeriod { job.runs.add(1, ordering: .relaxed); _ = captured }
        }
        #expect(!QSBR.isThreadRegistered && !Memb.isThreadRegistered)
        QSBR.barrier()
        Memb.barrier()
        Bulletproof.barrier()
        #expect(job.runs.load(ordering: .relaxed) == 3)
        #expect(weakTally == nil)
    }
}

/// What a grace-period job observed.
final class RCUJobTally: Sendable {
    let runs = Atomic<Int>(0)
    let nestedRuns = Atomic<Int>(0)
    let sawReaderLeft = Atomic<Int>(-1)
    let onOtherThread = Atomic<Int>(-1)
    let workerRegistered = Atomic<Int>(-1)
    let nestedAfterSecondBarrier = Atomic<Int>(-1)
}

extension RCUFlavor {
    /// QSBR: runs `body` offline (it sleeps); memb: just runs it.
    static func withThreadOfflineIfQSBR(_ body: () -> Void) {
        if Self.self == QSBR.self { QSBR.withThreadOffline(body) } else { body() }
    }
}

final class RCUTestBox: Sendable {
    let release = Atomic<Bool>(false)
    let countWhileReading = Atomic<Int>(-1)
    let countAfterBarrier = Atomic<Int>(-1)
}
