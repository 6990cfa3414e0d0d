import Glibc
import Synchronization
import Testing
@testable import SMPPrimitives

/// ``PCQ/put(contentsOf:)``: the exact partial put at the capacity edge,
/// FIFO order across laps, the RMW counts, and conservation and
/// contiguity with concurrent producers and a consumer.
@Suite struct PCQBatchTests {
    @Test(arguments: [1, 2, 3, 4, 5, 63, 64, 100])
    func partialPutAtTheCapacityEdgeIsExact(capacity: Int) {
        let q = PCQ<UInt>(capacity: capacity)
        let items = (0..<UInt(capacity + 7)).map { $0 }
        // Fill in batches of 3: the last batch takes exactly what is left.
        var put = 0
        while put < capacity {
            let n = items[put..<(put + 3)].withUnsafeBufferPointer { q.put(contentsOf: $0) }
            #expect(n == min(3, capacity - put))
            put += n
        }
        #expect(q.approximateCount == capacity)
        #expect(items[0..<4].withUnsafeBufferPointer { q.put(contentsOf: $0) } == 0)
        // One slot freed: exactly one item of the next batch goes in.
        #expect(q.get() == 0)
        #expect(items[capacity..<(capacity + 5)].withUnsafeBufferPointer { q.put(contentsOf: $0) } == 1)
        var got: [UInt] = []
        q.drain(max: capacity + 10) { got.append($0) }
        #expect(got == Array(1..<UInt(capacity)) + [UInt(capacity)])
        let s = q.statistics
        #expect(s.puts == capacity + 1 && s.gets == capacity + 1)
        // Left out: 3 * ceil(capacity/3) - capacity, then 4, then 4.
        #expect(s.failedPuts == (3 - capacity % 3) % 3 + 4 + 4)
        #expect(s.highWater == capacity)
    }

    @Test func emptyBatchPutsNothing() {
        let q = PCQ<UInt>(capacity: 2)
        var counts = PCQPutCounts()
        #expect(q.put(contentsOf: UnsafeBufferPointer(start: nil, count: 0), counting: &counts) == 0)
        #expect(counts == PCQPutCounts() && q.statistics.failedPuts == 0)
    }

    /// One ticket CAS per batch, one failed-put add for the rest of a
    /// partial batch, however many items.
    @Test func countsOneReservationPerBatch() {
        let q = PCQ<UInt>(capacity: 10)
        var counts = PCQPutCounts()
        let items: [UInt] = Array(0..<8)
        #expect(items.withUnsafeBufferPointer { q.put(contentsOf: $0, counting: &counts) } == 8)
        #expect(counts.puts == 1 && counts.failedPuts == 0 && counts.casRetries == 0)
        #expect(items.withUnsafeBufferPointer { q.put(contentsOf: $0, counting: &counts) } == 2)
        #expect(counts.puts == 2 && counts.failedPuts == 1 && counts.casRetries == 0)
        #expect(counts.atomicRMWs == 3 + counts.highWaterCASes)
        #expect(q.statistics.failedPuts == 6 && q.statistics.puts == 10)
    }

    /// Many laps of a small ring with batches of every size: FIFO, nothing
    /// lost or repeated, with single puts mixed in.
    @Test func orderAcrossLaps() {
        let q = PCQ<UInt>(capacity: 7)
        var next: UInt = 0, expected: UInt = 0
        var buffer = [UInt](repeating: 0, count: 9)
        for round in 0..<2_000 {
            let n = round % 10
            for j in 0..<n { buffer[j] = next + UInt(j) }
            let k: Int
            if n == 1 {
                k = q.put(next) ? 1 : 0
            } else {
                k = buffer.withUnsafeBufferPointer { q.put(contentsOf: UnsafeBufferPointer(rebasing: $0[0..<n])) }
            }
            #expect(k <= n)
            next += UInt(k)
            var ok = true
            q.drain(max: round % 4 + 1) { v in
                if v != expected { ok = false }
                expected += 1
            }
            #expect(ok)
        }
        q.drain(max: 100) { v in
            #expect(v == expected)
            expected += 1
        }
        #expect(expected == next && q.statistics.puts == Int(next))
    }

    /// Two producers batch-putting into a small queue while the consumer
    /// drains: every accepted item arrives exactly once, in its producer's
    /// order, the accepted prefix of each batch contiguous (no other
    /// producer's item inside it), and accepted + left out == offered.
    @Test(arguments: [1, 5, 64])
    func conservationUnderAConcurrentConsumer(capacity: Int) {
        let producers = 2, batches = 3_000
        let q = PCQ<UInt>(capacity: capacity)
        let shared = BatchStressShared()
        let threads = (0..<producers).map { id in
            PinnedThread(name: "pcq-batch-p") {
                var seq: UInt = 0
                var batch = [UInt](repeating: 0, count: 16)
                var mine = 0, tried = 0
                for b in 0..<batches {
                    let n = b % 16 + 1
                    // Tag: producer, batch number, position in the batch.
                    for j in 0..<n { batch[j] = UInt(id) << 60 | UInt(b) << 20 | UInt(j) << 8 | (seq & 0xff) }
                    let k = batch.withUnsafeBufferPointer { q.put(contentsOf: UnsafeBufferPointer(rebasing: $0[0..<n])) }
                    seq &+= UInt(k)
                    mine += k
                    tried += n
                    if k < n { sched_yield() }
                }
                shared.accepted.add(mine, ordering: .relaxed)
                shared.offered.add(tried, ordering: .relaxed)
                shared.finished.add(1, ordering: .releasing)
            }
        }
        let consumer = PinnedThread(name: "pcq-batch-c") { () -> (got: Int, errors: Int) in
            var got = 0, errors = 0
            var lastBatch = [Int](repeating: -1, count: producers)
            var lastPos = [Int](repeating: -1, count: producers)
            // The producer of the previous item in ticket order (a batch's
            // items have consecutive tickets, so it is the same producer).
            var current = -1
            let deadline = monotonicSeconds() + 60
            while monotonicSeconds() < deadline {
                let done = shared.finished.load(ordering: .acquiring) == producers
                let n = q.drain(max: 32) { v in
                    let p = Int(v >> 60), b = Int((v >> 20) & 0xff_ffff), j = Int((v >> 8) & 0xfff)
                    guard p < producers else { errors += 1; return }
                    if b == lastBatch[p] {
                        // Within a batch: the next position, and nobody in between.
                        if j != lastPos[p] + 1 || current != p { errors += 1 }
                    } else {
                        // A new batch of this producer starts at position 0, later.
                        if j != 0 || b < lastBatch[p] { errors += 1 }
                    }
                    lastBatch[p] = b
                    lastPos[p] = j
                    current = p
                    got += 1
                }
                if n == 0 {
                    if done { break }
                    spinLoopHint()
                }
            }
            return (got, errors)
        }
        for t in threads { t.join() }
        let r = consumer.join()
        #expect(r.errors == 0)
        #expect(r.got == shared.accepted.load(ordering: .relaxed))
        let s = q.statistics
        #expect(s.puts == r.got && s.gets == r.got)
        #expect(s.puts + s.failedPuts == shared.offered.load(ordering: .relaxed))
        #expect(q.approximateCount == 0)
    }
}

/// The counters the batch stress threads share.
private final class BatchStressShared: Sendable {
    let accepted = Atomic<Int>(0)
    let offered = Atomic<Int>(0)
    let finished = Atomic<Int>(0)
}
