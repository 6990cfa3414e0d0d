import Glibc
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

    @Test func joinHandsOverTheBodysResult() {
        let t = PinnedThread(name: "t-sum") { (1...100).reduce(0, +) }
        #expect(t.join() == 5050)
    }

    /// Values that are not `Sendable` move in (captured by the `sending`
    /// body) and out (the `sending` result) without a box.
    @Test func nonSendableValuesMoveInAndOut() {
        let bag = NonSendableBag()
        bag.items = [1, 2]
        let t = PinnedThread(name: "t-bag") { [bag] () -> NonSendableBag in
            bag.items.append(3)
            let out = NonSendableBag()
            out.items = bag.items.map { $0 * 10 }
            return out
        }
        let out = t.join()
        out.items.append(40)
        #expect(out.items == [10, 20, 30, 40])
    }

    @Test func deinitJoinsAThreadNobodyJoined() {
        let box = CounterBox()
        do {
            _ = PinnedThread(name: "t-unjoined") {
                usleep(20_000)
                box.count.store(1, ordering: .releasing)
            }
        }
        #expect(box.count.load(ordering: .acquiring) == 1)
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

/// Deliberately not `Sendable`.
final class NonSendableBag {
    var items: [Int] = []
}
