import Synchronization
import Testing
@testable import SMPPrimitives

@Suite struct PinnedThreadTests {
    @Test func threadsRunAndJoin() {
        let box = CounterBox()
        let threads = (0..<4).map { i in
            PinnedThread(cpu: i, name: "t-" + String(i)) { box.count.add(1, ordering: .relaxed) }
        }
        for t in threads { t.join() }
        #expect(box.count.load(ordering: .relaxed) == 4)
    }

    @Test func barrierSeparatesRounds() {
        // Each round every thread writes its slot before the barrier and
        // checks every slot after it: a barrier that let a thread through
        // early would see a stale round number.
        let parties = 3
        let rounds = 200
        let barrier = SpinBarrier(parties: parties)
        let slots = SlotArray(count: parties)
        let errors = CounterBox()
        let threads = (0..<parties).map { me in
            PinnedThread(cpu: me) {
                for r in 1...rounds {
                    slots.store(me, r)
                    barrier.wait()
                    for j in 0..<parties where slots.load(j) < r {
                        errors.count.add(1, ordering: .relaxed)
                    }
                    barrier.wait()
                }
            }
        }
        for t in threads { t.join() }
        #expect(errors.count.load(ordering: .relaxed) == 0)
    }

    @Test func cpuCountIsPositive() {
        #expect(onlineCPUCount >= 1)
    }
}

final class CounterBox: Sendable {
    let count = Atomic<Int>(0)
}

final class SlotArray: Sendable {
    private let slots: [CounterBox]
    init(count: Int) { slots = (0..<count).map { _ in CounterBox() } }
    func store(_ i: Int, _ v: Int) { slots[i].count.store(v, ordering: .relaxed) }
    func load(_ i: Int) -> Int { slots[i].count.load(ordering: .relaxed) }
}
