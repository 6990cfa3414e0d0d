import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

/// Multi-producer stress of ``PCQ``: many short rounds behind a barrier,
/// 2 to 8 producers plus the consumer (so every round is oversubscribed on
/// a 2-CPU machine), small capacities to force the full path. Every round
/// checks exactly-once delivery, per-producer order, and that the counters
/// agree with what the threads did; with one-word elements and with
/// two-word structs. ``ManagedPCQ`` gets the same under reference counting.
@Suite(.serialized) struct PCQStressTests {
    struct Config: CustomTestStringConvertible, Sendable {
        var producers: Int
        var capacity: Int
        var itemsPerProducer: Int
        var rounds: Int
        /// One in `stallEvery` puts is split into reserve / yield / publish,
        /// so a "preempted" producer holds a reserved slot while the others
        /// run (0 = never).
        var stallEvery: Int
        var testDescription: String {
            "\(producers)P cap \(capacity) \(rounds)x\(itemsPerProducer) stall 1/\(stallEvery)"
        }
    }

    // Sized so the whole suite stays within a few seconds in debug and
    // about ten under the thread sanitizer.
    static let configs: [Config] = [
        Config(producers: 2, capacity: 2, itemsPerProducer: 300, rounds: 30, stallEvery: 0),
        Config(producers: 2, capacity: 64, itemsPerProducer: 1_000, rounds: 20, stallEvery: 0),
        Config(producers: 3, capacity: 4, itemsPerProducer: 300, rounds: 20, stallEvery: 16),
        Config(producers: 4, capacity: 64, itemsPerProducer: 300, rounds: 20, stallEvery: 64),
        Config(producers: 8, capacity: 2, itemsPerProducer: 60, rounds: 15, stallEvery: 8),
        Config(producers: 8, capacity: 4, itemsPerProducer: 100, rounds: 15, stallEvery: 0),
        Config(producers: 5, capacity: 1, itemsPerProducer: 60, rounds: 15, stallEvery: 4),
    ]

    @Test(arguments: configs)
    func exactlyOnceAndPerProducerOrder(config: Config) {
        exactlyOnceAndPerProducerOrder(config: config, encode: { $0 }, decode: { $0 })
    }

    /// The same with a 16-byte element: the value and its complement, so a
    /// value whose two words came from different puts (or a stale lap) is
    /// an error even if one of the words is right.
    @Test(arguments: configs)
    func exactlyOnceAndPerProducerOrderTwoWords(config: Config) {
        exactlyOnceAndPerProducerOrder(
            config: config,
            encode: { StressPair(value: $0, complement: ~$0) },
            decode: { $0.complement == ~$0.value ? $0.value : nil })
    }

    /// The stress round of both tests: producers put `encode(tag | seq)`,
    /// the consumer checks `decode` (nil = corrupt) for exactly-once and
    /// per-producer order.
    private func exactlyOnceAndPerProducerOrder<Element: BitwiseCopyable & Equatable & Sendable>(
        config: Config, encode: @escaping @Sendable (UInt) -> Element,
        decode: @escaping @Sendable (Element) -> UInt?
    ) {
        let q = PCQ<Element>(capacity: config.capacity)
        let barrier = SpinBarrier(parties: config.producers + 1)
        let failures = StressCounters(count: config.producers)
        let report = StressReport()
        let tagShift: UInt = 32

        let producers = (0..<config.producers).map { id in
            PinnedThread(name: "pcq-stress-p") {
                var rng = SplitMix(seed: UInt64(id) &+ 1)
                var failed = 0
                for _ in 0..<config.rounds {
                    barrier.wait()
                    for s in 1...config.itemsPerProducer {
                        let v = encode(UInt(id) << tagShift | UInt(s))
                        var spins = 0
                        while true {
                            if config.stallEvery > 0 && rng.next() % UInt64(config.stallEvery) == 0 {
                                // Reserve, get descheduled, then publish.
                                if let t = q.reserve() {
                                    sched_yield()
                                    q.publish(v, at: t)
                                    break
                                }
                            } else if q.put(v) {
                                break
                            }
                            failed += 1
                            spins += 1
                            if spins & 15 == 0 { sched_yield() } else { spinLoopHint() }
                        }
                    }
                    barrier.wait()
                }
                failures.add(id, failed)
            }
        }

        let consumer = PinnedThread(name: "pcq-stress-c") {
            var rng = SplitMix(seed: 99)
            var errors = 0
            let expectedPerRound = config.producers * config.itemsPerProducer
            var next = [UInt](repeating: 1, count: config.producers)
            for _ in 0..<config.rounds {
                barrier.wait()
                for i in next.indices { next[i] = 1 }
                func check(_ item: Element) {
                    guard let v = decode(item) else {
                        errors += 1
                        return
                    }
                    let p = Int(v >> tagShift)
                    if p < next.count && v & 0xFFFF_FFFF == next[p] {
                        next[p] += 1
                    } else {
                        errors += 1
                    }
                }
                let inconsistent = consumeRandomly(q, count: expectedPerRound, rng: &rng, same: ==, check: check)
                errors += inconsistent
                if q.get() != nil { errors += 1 }  // nothing extra
                if next.contains(where: { $0 != UInt(config.itemsPerProducer) + 1 }) { errors += 1 }
                barrier.wait()
            }
            report.errors.store(errors, ordering: .relaxed)
        }
        for t in producers { t.join() }
        consumer.join()

        let total = config.producers * config.itemsPerProducer * config.rounds
        #expect(report.errors.load(ordering: .relaxed) == 0)
        let s = q.statistics
        #expect(s.puts == total, "successful puts == items got")
        #expect(s.gets == total)
        #expect(s.failedPuts == failures.total)
        #expect(s.highWater >= 1 && s.highWater <= config.capacity)
        #expect(q.approximateCount == 0)
    }

    /// One producer holds a reserved slot for a long time while others put
    /// and the consumer polls: the others must reach exactly `capacity`
    /// outstanding items (no false "full", no overfill), and the consumer
    /// must deliver everything in ticket order once the slot is published.
    @Test func longStalledProducerDoesNotStopTheOthers() throws {
        let capacity = 64
        for round in 0..<20 {
            let q = PCQ<UInt>(capacity: capacity)
            for i in 0..<(round % capacity) {  // move the hole around the ring
                #expect(q.put(UInt(i)))
                #expect(q.get() == UInt(i))
            }
            let hole = try #require(q.reserve())
            let accepted = StressCounters(count: 2)
            let barrier = SpinBarrier(parties: 2)
            let threads = (0..<2).map { id in
                PinnedThread(name: "pcq-stall") {
                    barrier.wait()
                    var ok = 0
                    var failedInARow = 0
                    // Keep putting until the queue has refused us many times.
                    while failedInARow < 200 {
                        if q.put(UInt(1_000 + id)) {
                            ok += 1
                            failedInARow = 0
                        } else {
                            failedInARow += 1
                            sched_yield()
                        }
                    }
                    accepted.add(id, ok)
                }
            }
            for t in threads { t.join() }
            #expect(accepted.total == capacity - 1, "the stalled slot is the only one missing")
            #expect(q.get() == nil, "the consumer waits for the stalled ticket")
            q.publish(7, at: hole)
            var got: [UInt] = []
            q.drain(max: capacity * 2) { got.append($0) }
            #expect(got.count == capacity)
            #expect(got.first == 7)
            #expect(got.dropFirst().allSatisfy { $0 == 1_000 || $0 == 1_001 })
        }
    }

    // MARK: ManagedPCQ

    struct ManagedConfig: CustomTestStringConvertible, Sendable {
        var producers: Int
        var capacity: Int
        var itemsPerProducer: Int
        /// Objects each producer puts after the consumer's share: they are
        /// still queued when the queue is dropped (`producers * leftovers`
        /// must fit in `capacity`).
        var leftovers: Int
        var testDescription: String {
            "\(producers)P cap \(capacity) \(itemsPerProducer)+\(leftovers)"
        }
    }

    static let managedConfigs: [ManagedConfig] = [
        ManagedConfig(producers: 2, capacity: 4, itemsPerProducer: 10_000, leftovers: 2),
        ManagedConfig(producers: 4, capacity: 8, itemsPerProducer: 5_000, leftovers: 2),
        ManagedConfig(producers: 8, capacity: 64, itemsPerProducer: 2_000, leftovers: 8),
    ]

    /// Producers put objects concurrently, the consumer takes its share with
    /// a mix of get, peek + get and drain and drops them, and the rest are
    /// still queued when the last reference to the queue goes: every object
    /// must be released exactly once (the consumer's on its thread, the
    /// leftovers by the queue's deinit), in per-producer order.
    @Test(arguments: managedConfigs)
    func managedObjectsReleasedExactlyOnce(config: ManagedConfig) {
        let perProducer = config.itemsPerProducer + config.leftovers
        let tally = PCQReleaseTally(count: config.producers * perProducer)
        let report = StressReport()
        do {
            let q = ManagedPCQ<PCQToken>(capacity: config.capacity)
            let barrier = SpinBarrier(parties: config.producers + 1)
            let producers = (0..<config.producers).map { p in
                PinnedThread(name: "mpcq-stress-p") {
                    barrier.wait()
                    for s in 0..<perProducer {
                        let token = PCQToken(id: p * perProducer + s, tally: tally)
                        var spins = 0
                        while !q.put(token) {
                            spins += 1
                            if spins & 15 == 0 { sched_yield() } else { spinLoopHint() }
                        }
                    }
                }
            }
            let consumer = PinnedThread(name: "mpcq-stress-c") {
                var rng = SplitMix(seed: 7)
                var next = [Int](repeating: 0, count: config.producers)
                var errors = 0
                func check(_ token: PCQToken) {
                    let p = token.id / perProducer
                    if token.id % perProducer == next[p] { next[p] += 1 } else { errors += 1 }
                    // Not released yet: the queue's reference is the one we hold.
                    if tally.releases(token.id) != 0 { errors += 1 }
                }
                barrier.wait()
                let inconsistent = consumeRandomly(q, count: config.producers * config.itemsPerProducer,
                                                   rng: &rng, same: ===, check: check)
                report.errors.store(errors + inconsistent, ordering: .relaxed)
            }
            for t in producers { t.join() }
            consumer.join()
            // Before the last use of `q`: the leftovers are still alive.
            #expect(tally.totalReleased == config.producers * config.itemsPerProducer,
                    "every object the consumer took is released, the leftovers are not")
            let s = q.statistics
            #expect(s.puts == config.producers * perProducer)
            #expect(s.gets == config.producers * config.itemsPerProducer)
            #expect(q.approximateCount == config.producers * config.leftovers)
        }
        // The queue (and the threads' closures holding it) are gone.
        #expect(report.errors.load(ordering: .relaxed) == 0)
        #expect(tally.totalReleased == config.producers * perProducer)
        #expect(tally.everyObjectReleasedOnce)
    }
}

/// The consumer operations the stress tests mix, common to both forms.
fileprivate protocol StressConsumer {
    associatedtype Item
    func get() -> Item?
    func peek() -> Item?
    func drain(max: Int, _ body: (Item) throws -> Void) rethrows -> Int
}

extension PCQ: StressConsumer {}
extension ManagedPCQ: StressConsumer {}

/// The consumer side of a stress round: takes exactly `count` items with a
/// random mix of get, peek then get (the two must agree by `same`) and
/// drains of 1 to 8, backing off while nothing is visible, and calls
/// `check` for each. Returns the inconsistencies it saw itself.
fileprivate func consumeRandomly<Q: StressConsumer>(
    _ q: Q, count: Int, rng: inout SplitMix,
    same: (Q.Item, Q.Item) -> Bool, check: (Q.Item) -> Void
) -> Int {
    var errors = 0
    var got = 0
    var idle = 0
    while got < count {
        var took = 0
        switch rng.next() % 4 {
        case 0:
            if let v = q.get() {
                check(v)
                took = 1
            }
        case 1:
            if let v = q.peek() {
                if let w = q.get(), same(v, w) {} else { errors += 1 }
                check(v)
                took = 1
            }
        default:
            let maxCount = Swift.min(Int(rng.next() % 8) + 1, count - got)
            took = q.drain(max: maxCount) { check($0) }
            if took > maxCount { errors += 1 }
        }
        got += took
        if took > 0 {
            idle = 0
        } else {
            idle += 1
            if idle & 7 == 0 { sched_yield() } else { spinLoopHint() }
        }
    }
    return errors
}

/// A 16-byte stress element.
fileprivate struct StressPair: BitwiseCopyable, Equatable, Sendable {
    var value: UInt
    var complement: UInt
}

final class StressCounters: Sendable {
    private let slots: [StressCounter]
    init(count: Int) { slots = (0..<count).map { _ in StressCounter() } }
    func add(_ i: Int, _ v: Int) { slots[i].value.add(v, ordering: .relaxed) }
    var total: Int { slots.reduce(0) { $0 + $1.value.load(ordering: .relaxed) } }
}

final class StressCounter: Sendable {
    let value = Atomic<Int>(0)
}

final class StressReport: Sendable {
    let errors = Atomic<Int>(-1)
}

/// A tiny deterministic generator (SplitMix64) so rounds are reproducible.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
