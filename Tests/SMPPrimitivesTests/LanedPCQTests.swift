import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

/// Single-threaded contract tests of ``LanedPCQ``: exact per-lane capacity,
/// empty and full, the lane limit, handle lifecycle (release on drop,
/// reuse, leftovers), round-robin draining and a throwing drain body.
@Suite struct LanedPCQTests {
    @Test(arguments: [1, 2, 3, 5, 63, 64, 100, 1024])
    func capacityIsExactPerLane(laneCapacity: Int) throws {
        let q = LanedPCQ<UInt>(laneCapacity: laneCapacity, maxLanes: 2)
        #expect(q.laneCapacity == laneCapacity)
        #expect(q.capacity == 2 * laneCapacity)
        var a = try register(q)
        var b = try register(q)
        // Several laps, so the free-running indices wrap the ring.
        for lap in 0..<3 {
            for i in 0..<laneCapacity {
                #expect(put(&a, UInt(i)), "put \(i) of \(laneCapacity) must succeed")
            }
            #expect(!put(&a, 999), "put beyond the lane's capacity must fail")
            #expect(a.approximateCount == laneCapacity)
            // The other lane is independent: still empty, takes its own share.
            #expect(b.approximateCount == 0)
            for i in 0..<laneCapacity { #expect(put(&b, UInt(10_000 + i))) }
            #expect(!put(&b, 999))
            #expect(q.approximateCount == 2 * laneCapacity)

            var fromA: [UInt] = [], fromB: [UInt] = []
            let took = q.drain(max: 4 * laneCapacity) { v in
                if v >= 10_000 { fromB.append(v) } else { fromA.append(v) }
            }
            #expect(took == 2 * laneCapacity, "lap \(lap)")
            #expect(fromA == (0..<laneCapacity).map { UInt($0) })
            #expect(fromB == (0..<laneCapacity).map { UInt(10_000 + $0) })
            #expect(q.approximateCount == 0)
        }
        // One slot freed: exactly one more put fits.
        for i in 0..<laneCapacity { #expect(put(&a, UInt(i))) }
        #expect(q.get() == 0)
        #expect(put(&a, 1000))
        #expect(!put(&a, 1001))
        let s = q.statistics
        #expect(s.puts == 3 * 2 * laneCapacity + laneCapacity + 1)
        #expect(s.failedPuts == 3 * 2 + 1)
        #expect(s.gets == 3 * 2 * laneCapacity + 1)
        #expect(s.highWater == laneCapacity, "the deepest lane, not the total")
    }

    @Test func emptyQueue() throws {
        let q = LanedPCQ<UInt>(laneCapacity: 8, maxLanes: 4)
        // Before any lane is registered.
        #expect(q.get() == nil)
        #expect(q.drain(max: 8) { _ in } == 0)
        #expect(q.lanesInUse == 0)
        var p = try register(q)
        #expect(q.get() == nil)
        #expect(put(&p, 1))
        #expect(q.get() == 1)
        #expect(q.get() == nil)
        #expect(q.drain(max: 0) { _ in } == 0)
        #expect(q.statistics == PCQStatistics(puts: 1, gets: 1, highWater: 1))
    }

    @Test func laneLimit() throws {
        let q = LanedPCQ<UInt>(laneCapacity: 4, maxLanes: 3)
        let p0 = try register(q)
        let p1 = try register(q)
        let p2 = try register(q)
        #expect([p0.lane, p1.lane, p2.lane] == [0, 1, 2])
        #expect(noFreeLane(q), "every lane is owned")
        #expect(q.lanesInUse == 3)
        _ = consume p1
        let again = try register(q)
        #expect(again.lane == 1)
        #expect(noFreeLane(q))
        _ = consume p0
        _ = consume p2
        _ = consume again
    }

    /// Dropping a handle with items queued: they are still delivered, and
    /// the next owner of the lane (here on another thread) puts after them.
    @Test func droppedHandleLeavesItemsAndLaneIsReused() throws {
        let q = LanedPCQ<UInt>(laneCapacity: 4, maxLanes: 2)
        do {
            var p = try register(q)
            #expect(put(&p, 1))
            #expect(put(&p, 2))
            #expect(put(&p, 3))
        }
        #expect(q.lanesInUse == 1)
        let other = PinnedThread(name: "laned-reuse") { () -> [Bool] in
            guard var p = q.register() else { return [] }
            // The lane still holds three items: one more fits, not two.
            return [p.lane == 0, p.approximateCount == 3, p.put(4), !p.put(5)]
        }
        #expect(other.join() == [true, true, true, true])
        var got: [UInt] = []
        q.drain(max: 16) { got.append($0) }
        #expect(got == [1, 2, 3, 4])
        let s = q.statistics
        #expect(s.puts == 4 && s.gets == 4 && s.failedPuts == 1)
    }

    /// A handle keeps the queue alive; the queue goes when the last handle
    /// and the last reference go.
    @Test func handleKeepsQueueAlive() throws {
        weak var weakQueue: LanedPCQ<UInt>?
        var handle: LanedPCQ<UInt>.Producer?
        do {
            let q = LanedPCQ<UInt>(laneCapacity: 2, maxLanes: 1)
            weakQueue = q
            handle = q.register()
        }
        #expect(weakQueue != nil)
        let lane = handle?.lane
        #expect(lane == 0)
        handle = nil
        #expect(weakQueue == nil)
    }

    /// Lanes are visited round-robin: one item per call rotates through the
    /// lanes, and a call stopped by `max` resumes with the next lane.
    @Test func drainIsRoundRobin() throws {
        let q = LanedPCQ<UInt>(laneCapacity: 16, maxLanes: 3)
        var p0 = try register(q)
        var p1 = try register(q)
        var p2 = try register(q)
        for i in 0..<8 {
            #expect(put(&p0, UInt(i)))
            #expect(put(&p1, UInt(100 + i)))
            #expect(put(&p2, UInt(200 + i)))
        }
        // One item per call: the lanes take turns.
        var got: [UInt] = []
        for _ in 0..<6 { if let v = q.get() { got.append(v) } }
        #expect(got == [0, 100, 200, 1, 101, 201])
        // Stopped by `max` inside lane 1: the next call starts at lane 2.
        got = []
        #expect(q.drain(max: 8) { got.append($0) } == 8)
        #expect(got == [2, 3, 4, 5, 6, 7, 102, 103])
        got = []
        #expect(q.drain(max: 3) { got.append($0) } == 3)
        #expect(got == [202, 203, 204])
        // Lane 0 is empty now; a call that goes round takes what every lane
        // has and the next one starts one lane further.
        got = []
        #expect(q.drain(max: 100) { got.append($0) } == 7)
        #expect(got == [104, 105, 106, 107, 205, 206, 207])
        #expect(put(&p0, 9) && put(&p1, 109) && put(&p2, 209))
        got = []
        for _ in 0..<3 { if let v = q.get() { got.append(v) } }
        #expect(got == [109, 209, 9], "the previous call went round from lane 0")
    }

    /// If `body` throws, the item it was given counts as taken and the rest
    /// stay queued, in order.
    @Test func throwingDrainBodyTakesOnlyWhatItSaw() throws {
        struct Stop: Error {}
        let q = LanedPCQ<UInt>(laneCapacity: 8, maxLanes: 1)
        var p = try register(q)
        for i in 1...5 { #expect(put(&p, UInt(i))) }
        var seen: [UInt] = []
        #expect(throws: Stop.self) {
            try q.drain(max: 8) { v in
                seen.append(v)
                if v == 2 { throw Stop() }
            }
        }
        #expect(seen == [1, 2])
        #expect(q.statistics.gets == 2)
        var rest: [UInt] = []
        q.drain(max: 8) { rest.append($0) }
        #expect(rest == [3, 4, 5])
    }

    @Test func preconditions() async {
        await #expect(processExitsWith: .failure) { _ = LanedPCQ<UInt>(laneCapacity: 0, maxLanes: 1) }
        await #expect(processExitsWith: .failure) { _ = LanedPCQ<UInt>(laneCapacity: 1, maxLanes: 0) }
    }
}

private struct NoFreeLane: Error {}

/// `try #require(q.register())` for a noncopyable handle (`#require` needs
/// a copyable value): records an issue and throws if no lane is free.
func register(_ q: LanedPCQ<UInt>, sourceLocation: SourceLocation = #_sourceLocation) throws
    -> LanedPCQ<UInt>.Producer {
    guard let p = q.register() else {
        Issue.record("no free lane", sourceLocation: sourceLocation)
        throw NoFreeLane()
    }
    return p
}

/// True if `register()` finds every lane owned (a handle it got is dropped).
func noFreeLane(_ q: LanedPCQ<UInt>) -> Bool {
    switch q.register() {
    case .none: return true
    case .some: return false
    }
}

/// `handle.put(v)` as a free function: `#expect(p.put(v))` would be
/// expanded into a call on a copy of the noncopyable handle.
func put(_ p: inout LanedPCQ<UInt>.Producer, _ v: UInt) -> Bool { p.put(v) }
