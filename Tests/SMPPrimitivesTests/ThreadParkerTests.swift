import Glibc
import Synchronization
import Testing
import SMPPrimitives

/// A parker shared by a test's threads (the parker itself is `~Copyable`).
final class SharedParker: Sendable {
    let parker = ThreadParker()
}

@Suite struct ThreadParkerTests {
    @Test func ringBeforeParkMakesParkReturnAtOnce() {
        // (`#expect` cannot borrow a noncopyable value: results go to lets.)
        let p = ThreadParker()
        let armedAtFirst = p.isArmed
        let rangIdle = p.ringIfArmed()     // nobody waits: no ring
        p.prepareToPark()
        let armed = p.isArmed
        let rang = p.ringIfArmed()         // armed: this call rings
        let armedAfterRing = p.isArmed
        let rangAgain = p.ring()           // only one ringer signals
        p.park()                           // already rung: returns at once
        #expect(!armedAtFirst && !rangIdle)
        #expect(armed && rang)
        #expect(!armedAfterRing && !rangAgain)
    }

    @Test func cancelledParkIsNotRung() {
        let p = ThreadParker()
        p.prepareToPark()
        p.cancelPark()
        let armed = p.isArmed
        let rang = p.ringIfArmed()
        #expect(!armed && !rang)
    }

    @Test func timedParkTimesOutAndDisarms() {
        let p = ThreadParker()
        p.prepareToPark()
        let t0 = monotonicNanoseconds()
        p.park(timeout: .milliseconds(20))
        let elapsed = monotonicNanoseconds() - t0
        let armed = p.isArmed
        #expect(elapsed >= 19_000_000, "returned after \(elapsed) ns")
        #expect(!armed)
    }

    @Test func parkedThreadIsWokenByAnotherThread() {
        let shared = SharedParker()
        let state = KAtomicInts(2)   // 0 item published, 1 waiter parked
        let waiter = PinnedThread(name: "parker-waiter") { () -> Int in
            var wakeUps = 0
            while state[0] == 0 {
                shared.parker.prepareToPark()
                if state[0] != 0 {
                    shared.parker.cancelPark()
                    break
                }
                state[1] = 1
                shared.parker.park()
                wakeUps += 1
            }
            return wakeUps
        }
        #expect(waitFor { state[1] == 1 })
        usleep(5_000)
        state[0] = 1
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        shared.parker.ringIfArmed()
        #expect(waiter.join() <= 1)
    }

    @Test func asyncWaiterIsResumedByARing() async {
        let shared = SharedParker()
        let published = KAtomicInts(1)
        let ringer = PinnedThread(name: "parker-ringer") {
            usleep(10_000)
            published[0] = 1
            shared.parker.ringAlways()
        }
        while published[0] == 0 {
            shared.parker.prepareToPark()
            if published[0] != 0 {
                shared.parker.cancelPark()
                break
            }
            await shared.parker.parkAsync()
        }
        ringer.join()
        #expect(published[0] == 1)
    }

    /// A producer publishes items one by one and rings only when the
    /// consumer announced parking; the consumer parks whenever it finds
    /// nothing. A lost wake-up would leave the consumer asleep with an item
    /// waiting: each park has a 2 s timeout, and a timeout with an item
    /// present counts as a lost wake-up.
    @Test func producerConsumerCyclesLoseNoWakeUp() {
        let items = runningUnderTSan ? 20_000 : 200_000
        let shared = SharedParker()
        let published = KAtomicInts(1)
        let consumer = PinnedThread(cpu: 1, name: "parker-consumer") { () -> (announced: Int, parks: Int, lost: Int) in
            var taken = 0, announced = 0, parks = 0, lost = 0
            while taken < items {
                if published[0] > taken {
                    taken += 1
                    continue
                }
                shared.parker.prepareToPark()
                announced += 1
                if published[0] > taken {
                    shared.parker.cancelPark()
                    continue
                }
                parks += 1
                let t0 = monotonicNanoseconds()
                shared.parker.park(timeout: .seconds(2))
                if monotonicNanoseconds() - t0 > 1_900_000_000 && published[0] > taken { lost += 1 }
            }
            return (announced, parks, lost)
        }
        let producer = ringingProducer(shared, published, items: items)
        let rings = producer.join()
        let (announced, parks, lost) = consumer.join()
        #expect(lost == 0, "a wake-up was lost")
        // A ring needs an announcement (it may land before the cancel).
        #expect(rings <= announced)
        print("thread parker: \(items) items, \(announced) announcements, \(parks) parks, \(rings) rings")
    }

    /// ``producerConsumerCyclesLoseNoWakeUp()`` with an async consumer:
    /// many parks, each resumed from the producer's thread while the
    /// consumer's next `parkAsync` may already be reading the parker (the
    /// thread sanitizer once reported `ring()`'s take of the waiter through
    /// the stored slot pointer as a write racing that read). Every item is
    /// taken; a lost wake-up hangs the task, which the time limit turns
    /// into a failure.
    @Test(.timeLimit(.minutes(5))) func asyncConsumerCyclesLoseNoWakeUp() async {
        let items = runningUnderTSan ? 20_000 : 200_000
        let shared = SharedParker()
        let published = KAtomicInts(1)
        let producer = ringingProducer(shared, published, items: items)
        var taken = 0, announced = 0, parks = 0
        while taken < items {
            if published[0] > taken {
                taken += 1
                continue
            }
            shared.parker.prepareToPark()
            announced += 1
            if published[0] > taken {
                shared.parker.cancelPark()
                continue
            }
            parks += 1
            await shared.parker.parkAsync()
        }
        let rings = producer.join()
        #expect(taken == items)
        // A ring needs an announcement (it may land before the cancel).
        #expect(rings <= announced)
        print("thread parker (async): \(items) items, \(announced) announcements, \(parks) parks, \(rings) rings")
    }
}

/// The producer of the cycle tests, on CPU 0: publishes `items` one by one
/// and rings the parker only when the consumer announced parking. Returns
/// how many rings woke it.
private func ringingProducer(_ shared: SharedParker, _ published: KAtomicInts, items: Int) -> PinnedThread<Int> {
    PinnedThread(cpu: 0, name: "parker-producer") { () -> Int in
        var rings = 0
        for i in 1...items {
            published[0] = i   // release store: the item
            // The producer's half of the handshake: fence, then the load.
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            if shared.parker.ringIfArmed() { rings += 1 }
            if i & 63 == 0 { sched_yield() }
        }
        return rings
    }
}
