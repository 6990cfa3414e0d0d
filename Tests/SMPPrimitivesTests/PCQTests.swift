import Synchronization
import Testing
@testable import SMPPrimitives

/// Single-threaded contract tests of ``PCQ``, plus the deterministic
/// "preempted producer" cases built on the internal reserve/publish split.
@Suite struct PCQTests {
    @Test(arguments: [1, 2, 3, 4, 5, 63, 64, 100, 1024])
    func capacityIsExact(capacity: Int) {
        let q = PCQ<UInt>(capacity: capacity)
        #expect(q.capacity == capacity)
        for i in 0..<capacity {
            #expect(q.put(UInt(i)), "put \(i) of \(capacity) must succeed")
        }
        #expect(!q.put(999), "put beyond capacity must fail")
        #expect(!q.put(999))
        #expect(q.approximateCount == capacity)
        // One slot freed: exactly one more put fits.
        #expect(q.get() == 0)
        #expect(q.put(1000))
        #expect(!q.put(1001))
        let s = q.statistics
        #expect(s.puts == capacity + 1)
        #expect(s.failedPuts == 3)
        #expect(s.gets == 1)
        #expect(s.highWater == capacity)
    }

    @Test func getAndPeekReturnNilWhenEmpty() {
        let q = PCQ<UInt>(capacity: 8)
        #expect(q.get() == nil)
        #expect(q.peek() == nil)
        #expect(q.drain(max: 8) { _ in Issue.record("nothing to drain") } == 0)
        #expect(q.put(7))
        #expect(q.get() == 7)
        #expect(q.get() == nil)
        #expect(q.peek() == nil)
        #expect(q.approximateCount == 0)
    }

    @Test func peekDoesNotRemove() {
        let q = PCQ<Int>(capacity: 4)
        #expect(q.put(1))
        #expect(q.put(2))
        #expect(q.peek() == 1)
        #expect(q.peek() == 1)
        #expect(q.approximateCount == 2)
        #expect(q.get() == 1)
        #expect(q.peek() == 2)
        #expect(q.get() == 2)
        #expect(q.peek() == nil)
        #expect(q.statistics.gets == 2)
    }

    @Test func drainRespectsMaxAndOrder() {
        let q = PCQ<UInt>(capacity: 16)
        for i in 0..<10 { #expect(q.put(UInt(i))) }
        var got: [UInt] = []
        #expect(q.drain(max: 0) { got.append($0) } == 0)
        #expect(q.drain(max: -1) { got.append($0) } == 0)
        #expect(q.drain(max: 3) { got.append($0) } == 3)
        #expect(got == [0, 1, 2])
        #expect(q.approximateCount == 7)
        #expect(q.drain(max: 100) { got.append($0) } == 7)
        #expect(got == Array(0..<10))
        #expect(q.drain(max: 100) { got.append($0) } == 0)
        #expect(q.statistics.gets == 10)
    }

    @Test func drainReleasesSlotsOnReturn() {
        // The batch's slots become free for producers when drain returns.
        let q = PCQ<UInt>(capacity: 4)
        for i in 0..<4 { #expect(q.put(UInt(i))) }
        var reputs: [Bool] = []
        let n = q.drain(max: 2) { v in reputs.append(q.put(v + 10)) }
        #expect(n == 2)
        #expect(reputs == [false, false], "slots stay occupied while body runs")
        #expect(q.put(20))
        #expect(q.put(21))
        #expect(!q.put(22))
        var rest: [UInt] = []
        q.drain(max: 10) { rest.append($0) }
        #expect(rest == [2, 3, 20, 21])
    }

    struct Stop: Error {}

    @Test func drainRethrowsAndKeepsTheRest() {
        let q = PCQ<UInt>(capacity: 8)
        for i in 1...5 { #expect(q.put(UInt(i))) }
        var seen: [UInt] = []
        #expect(throws: Stop.self) {
            try q.drain(max: 10) { v in
                seen.append(v)
                if v == 3 { throw Stop() }
            }
        }
        #expect(seen == [1, 2, 3], "the throwing item counts as taken")
        #expect(q.statistics.gets == 3)
        #expect(q.get() == 4)
        #expect(q.get() == 5)
        #expect(q.get() == nil)
    }

    @Test(arguments: [1, 2, 3, 4, 7, 64])
    func wrapsAroundManyLaps(capacity: Int) {
        // Enough laps to wrap the one-byte lap flag several times.
        let q = PCQ<UInt>(capacity: capacity)
        var next: UInt = 0
        var expected: UInt = 0
        let rounds = 3_000
        for r in 0..<rounds {
            let k = 1 + r % capacity
            for _ in 0..<k {
                #expect(q.put(next))
                next += 1
            }
            if r % 2 == 0 {
                for _ in 0..<k {
                    #expect(q.get() == expected)
                    expected += 1
                }
            } else {
                let n = q.drain(max: capacity) { v in
                    #expect(v == expected)
                    expected += 1
                }
                #expect(n == k)
            }
            #expect(q.get() == nil)
        }
        #expect(q.statistics.puts == Int(next))
        #expect(q.statistics.gets == Int(next))
        #expect(q.statistics.failedPuts == 0)
    }

    @Test func statisticsCountEverything() {
        let q = PCQ<UInt>(capacity: 8)
        #expect(q.statistics == PCQStatistics())
        for i in 0..<5 { #expect(q.put(UInt(i))) }
        #expect(q.drain(max: 5) { _ in } == 5)
        var s = q.statistics
        #expect(s.puts == 5)
        #expect(s.gets == 5)
        #expect(s.failedPuts == 0)
        #expect(s.highWater == 5, "a drained ready batch is a depth sample")
        for i in 0..<8 { #expect(q.put(UInt(i))) }
        #expect(!q.put(8))
        s = q.statistics
        #expect(s.puts == 13)
        #expect(s.failedPuts == 1)
        #expect(s.highWater == 8, "a failed put records a full queue")
        #expect(q.get() == 0)
        #expect(q.statistics.gets == 6)
        #expect(q.statistics.description.contains("failedPuts=1"))
    }

    @Test func elementTypesRoundTrip() {
        let ints = PCQ<Int>(capacity: 4)
        for v in [Int.min, -1, 0, Int.max] { #expect(ints.put(v)) }
        for v in [Int.min, -1, 0, Int.max] { #expect(ints.get() == v) }

        let words = PCQ<UInt>(capacity: 2)
        #expect(words.put(UInt.max))
        #expect(words.put(0))
        #expect(words.get() == UInt.max)
        #expect(words.get() == 0)

        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
        defer { buffer.deallocate() }
        let raw = PCQ<UnsafeMutableRawPointer>(capacity: 2)
        #expect(raw.put(buffer + 8))
        #expect(raw.get() == buffer + 8)
        let constRaw = PCQ<UnsafeRawPointer>(capacity: 2)
        #expect(constRaw.put(UnsafeRawPointer(buffer)))
        #expect(constRaw.get() == UnsafeRawPointer(buffer))
        let opaque = PCQ<OpaquePointer>(capacity: 2)
        #expect(opaque.put(OpaquePointer(buffer)))
        #expect(opaque.get() == OpaquePointer(buffer))
    }

    final class Tracked {
        static let live = Atomic<Int>(0)
        let id: Int
        init(id: Int) {
            self.id = id
            Self.live.add(1, ordering: .relaxed)
        }
        deinit { Self.live.subtract(1, ordering: .relaxed) }
    }

    @Test func unmanagedObjectsTransferOwnership() {
        let q = PCQ<Unmanaged<Tracked>>(capacity: 8)
        let before = Tracked.live.load(ordering: .relaxed)
        for i in 0..<5 { #expect(q.put(.passRetained(Tracked(id: i)))) }
        #expect(Tracked.live.load(ordering: .relaxed) == before + 5, "the queue keeps them alive")
        var ids: [Int] = []
        q.drain(max: 8) { ids.append($0.takeRetainedValue().id) }
        #expect(ids == [0, 1, 2, 3, 4])
        #expect(Tracked.live.load(ordering: .relaxed) == before)
    }

    // MARK: Elements of several words

    /// Two words, both varying with the item, so a value whose words came
    /// from different puts or laps does not compare equal.
    struct Pair: BitwiseCopyable, Equatable {
        var index: UInt
        var tag: UInt
        init(_ n: UInt) {
            index = n
            tag = ~n &* 0x9E37_79B9_7F4A_7C15
        }
    }

    /// 24 bytes of mixed fields: an optional pointer, two 32-bit words, a
    /// 64-bit hash.
    struct Triple: BitwiseCopyable, Equatable {
        var pointer: UnsafeRawPointer?
        var length: Int32
        var flags: UInt32
        var hash: UInt64
        init(_ n: UInt) {
            pointer = UnsafeRawPointer(bitPattern: n &* 8)  // nil for 0
            length = Int32(truncatingIfNeeded: n) &- 7
            flags = UInt32(truncatingIfNeeded: n &>> 3) ^ 0xA5A5_A5A5
            hash = UInt64(n) &* 0xBF58_476D_1CE4_E5B9
        }
    }

    @Test func multiWordElementsHaveTheirSize() {
        #expect(MemoryLayout<Pair>.size == 16)
        #expect(MemoryLayout<Triple>.size == 24)
    }

    /// put, peek, get, drain (batched and to the end), full and empty,
    /// for enough laps to wrap the one-byte lap flag.
    private func throughEveryOperation<E: BitwiseCopyable & Equatable>(_ make: (UInt) -> E) {
        let capacity = 5  // 8 slots: the exact capacity is not the slot count
        let q = PCQ<E>(capacity: capacity)
        #expect(q.peek() == nil)
        #expect(q.get() == nil)
        var next: UInt = 0
        var expected: UInt = 0
        let rounds = 450  // 450 * 5 tickets / 8 slots: 281 laps
        for _ in 0..<rounds {
            while q.put(make(next)) { next += 1 }
            #expect(next - expected == UInt(capacity), "exactly `capacity` puts fit")
            #expect(q.peek() == make(expected))
            #expect(q.peek() == make(expected), "peek does not remove")
            #expect(q.get() == make(expected))
            expected += 1
            var batch: [E] = []
            #expect(q.drain(max: 2) { batch.append($0) } == 2)
            #expect(q.drain(max: 100) { batch.append($0) } == capacity - 3)
            #expect(batch == (expected..<next).map(make))
            expected = next
            #expect(q.get() == nil)
            #expect(q.peek() == nil)
        }
        let s = q.statistics
        #expect(s.puts == Int(next))
        #expect(s.gets == Int(next))
        #expect(s.failedPuts == rounds)
        #expect(s.highWater == capacity)
    }

    @Test func twoWordStructThroughEveryOperation() {
        throughEveryOperation(Pair.init)
    }

    @Test func twentyFourByteStructThroughEveryOperation() {
        throughEveryOperation(Triple.init)
    }

    @Test func multiWordHoleIsNotSkipped() throws {
        let q = PCQ<Pair>(capacity: 3)
        #expect(q.put(Pair(1)))
        let hole = try #require(q.reserve())
        #expect(q.put(Pair(3)))
        #expect(q.get() == Pair(1))
        #expect(q.peek() == nil, "ticket \(hole) is reserved, not written")
        q.publish(Pair(2), at: hole)
        var got: [Pair] = []
        q.drain(max: 8) { got.append($0) }
        #expect(got == [Pair(2), Pair(3)])
    }

    // MARK: Preempted producer (deterministic, via the internal split)

    @Test func reservedButUnpublishedSlotHoldsBackTheConsumerOnly() throws {
        let q = PCQ<UInt>(capacity: 4)
        // A producer reserves ticket 0 and is "preempted" before publishing.
        let stalled = try #require(q.reserve())
        #expect(stalled == 0)
        // Other producers are not held up: they fill the rest of the queue...
        #expect(q.put(1))
        #expect(q.put(2))
        #expect(q.put(3))
        // ...and the reserved slot counts as occupied: really full now.
        #expect(!q.put(4))
        #expect(q.approximateCount == 4)
        #expect(q.statistics.puts == 4)
        #expect(q.statistics.failedPuts == 1)
        // The consumer never skips the hole.
        #expect(q.get() == nil)
        #expect(q.peek() == nil)
        #expect(q.drain(max: 4) { _ in Issue.record("must not skip the unpublished slot") } == 0)
        // The producer resumes: everything comes out in ticket order.
        q.publish(100, at: stalled)
        #expect(q.peek() == 100)
        var got: [UInt] = []
        #expect(q.drain(max: 10) { got.append($0) } == 4)
        #expect(got == [100, 1, 2, 3])
        #expect(q.get() == nil)
    }

    @Test func holeInTheMiddleAcrossTheWrap() throws {
        let q = PCQ<UInt>(capacity: 3)  // 4 slots: tickets wrap unevenly
        for round in 0..<50 {
            let base = UInt(round * 10)
            #expect(q.put(base))
            let hole = try #require(q.reserve())
            #expect(q.put(base + 2))
            #expect(!q.put(base + 3), "3 outstanding (one reserved) = full")
            #expect(q.get() == base)
            #expect(q.get() == nil, "ticket \(hole) is reserved, not written")
            // A put now succeeds: the freed slot is really free.
            #expect(q.put(base + 3))
            #expect(!q.put(base + 4))
            q.publish(base + 1, at: hole)
            var got: [UInt] = []
            q.drain(max: 8) { got.append($0) }
            #expect(got == [base + 1, base + 2, base + 3])
        }
        #expect(q.statistics.gets == 200)
    }
}

/// Counts deinits per object id, so a test can check that every object
/// was released exactly once (never leaked, never released twice).
final class PCQReleaseTally: Sendable {
    private let counts: KAtomicInts

    init(count: Int) { counts = KAtomicInts(count) }

    func released(_ id: Int) { counts.add(id) }
    func releases(_ id: Int) -> Int { counts[id] }
    var totalReleased: Int { (0..<counts.count).reduce(0) { $0 + releases($1) } }
    var everyObjectReleasedOnce: Bool { (0..<counts.count).allSatisfy { releases($0) == 1 } }
}

/// An object that reports its deinit to a tally.
final class PCQToken: Sendable {
    let id: Int
    let tally: PCQReleaseTally
    init(id: Int, tally: PCQReleaseTally) {
        self.id = id
        self.tally = tally
    }
    deinit { tally.released(id) }
}

/// The safe form for class references: reference counts balanced by the
/// queue, leftovers released by its deinit.
@Suite struct ManagedPCQTests {
    @Test func retainsOnPutAndHandsOwnershipToTheConsumer() {
        let tally = PCQReleaseTally(count: 6)
        do {
            let q = ManagedPCQ<PCQToken>(capacity: 4)
            #expect(q.capacity == 4)
            #expect(q.get() == nil)
            #expect(q.peek() == nil)
            // Temporaries: after each put the queue holds the only reference.
            for i in 0..<4 { #expect(q.put(PCQToken(id: i, tally: tally))) }
            #expect(tally.totalReleased == 0, "the queue keeps them alive")
            #expect(!q.put(PCQToken(id: 4, tally: tally)))
            #expect(tally.releases(4) == 1, "a refused object is not retained")
            #expect(q.peek()?.id == 0)
            #expect(tally.releases(0) == 0, "peek leaves the queue's reference")
            #expect(q.get()?.id == 0)
            #expect(tally.releases(0) == 1, "get handed over the queue's reference")
            #expect(q.put(PCQToken(id: 5, tally: tally)))
            var kept: [PCQToken] = []
            #expect(q.drain(max: 2) { kept.append($0) } == 2)
            #expect(kept.map(\.id) == [1, 2])
            #expect(tally.totalReleased == 2, "objects kept by the body stay alive")
            kept.removeAll()
            #expect(tally.releases(1) == 1 && tally.releases(2) == 1)
            // Ids 3 and 5 are still queued.
            #expect(q.approximateCount == 2)
            #expect(q.statistics.puts == 5)
            #expect(q.statistics.failedPuts == 1)
            #expect(tally.releases(3) == 0 && tally.releases(5) == 0)
        }
        #expect(tally.everyObjectReleasedOnce, "the leftovers are released by the queue's deinit")
    }

    @Test func drainReleasesWhatTheBodyDoesNotKeep() {
        let tally = PCQReleaseTally(count: 8)
        let q = ManagedPCQ<PCQToken>(capacity: 8)
        for i in 0..<8 { #expect(q.put(PCQToken(id: i, tally: tally))) }
        var ids: [Int] = []
        #expect(q.drain(max: 8) { ids.append($0.id) } == 8)
        #expect(ids == Array(0..<8))
        #expect(tally.everyObjectReleasedOnce)
        #expect(q.approximateCount == 0)
    }

    struct Stop: Error {}

    @Test func throwingDrainKeepsTheRestAndDeinitReleasesThem() {
        let tally = PCQReleaseTally(count: 5)
        do {
            let q = ManagedPCQ<PCQToken>(capacity: 8)
            for i in 0..<5 { #expect(q.put(PCQToken(id: i, tally: tally))) }
            #expect(throws: Stop.self) {
                try q.drain(max: 10) { if $0.id == 1 { throw Stop() } }
            }
            #expect(tally.totalReleased == 2, "the throwing item counts as taken")
            #expect(q.statistics.gets == 2)
        }
        #expect(tally.everyObjectReleasedOnce)
    }

    @Test func leftoversAcrossTheWrapAreReleasedAtDeinit() {
        // Capacity 3 in 4 slots: leave the queue partly full at every offset
        // of the ring, so the deinit drain starts and wraps anywhere.
        for offset in 0..<8 {
            let tally = PCQReleaseTally(count: offset + 3)
            do {
                let q = ManagedPCQ<PCQToken>(capacity: 3)
                for i in 0..<offset {
                    #expect(q.put(PCQToken(id: i, tally: tally)))
                    #expect(q.get()?.id == i)
                }
                for i in offset..<(offset + 3) { #expect(q.put(PCQToken(id: i, tally: tally))) }
                #expect(tally.totalReleased == offset)
            }
            #expect(tally.everyObjectReleasedOnce, "offset \(offset)")
        }
    }
}
