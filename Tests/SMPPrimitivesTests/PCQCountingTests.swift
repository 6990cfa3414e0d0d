import Glibc
import Testing
@testable import SMPPrimitives

/// `PCQ.put(_:counting:)`: each atomic RMW counted where it is issued, and
/// the counts agree with the queue's own statistics.
@Suite("PCQ counted puts")
struct PCQCountingTests {
    @Test func fullQueueCountsFailedPutsAndTheHighWaterCAS() {
        let q = PCQ<UInt>(capacity: 4)
        var c = PCQPutCounts()
        for i in 0..<6 { _ = q.put(UInt(i), counting: &c) }
        let s = q.statistics
        #expect(c.puts == 4 && c.failedPuts == 2 && c.casRetries == 0)
        #expect(c.puts == s.puts && c.failedPuts == s.failedPuts)
        // The first put that found the queue full raised the high-water
        // mark from 0 to 4 (one CAS); the second found it at 4 already.
        #expect(c.highWaterCASes == 1)
        #expect(c.atomicRMWs == 4 + 2 + 1)
        // The uncounted put behaves the same.
        #expect(!q.put(9))
        #expect(q.statistics.failedPuts == 3)
    }

    /// Two producers on two CPUs race for tickets until the queue is full:
    /// the won CASes add up to the queue's puts, the failed puts to its
    /// failed puts, exactly, and the lost CASes are seen as retries.
    @Test(.enabled(if: onlineCPUCount >= 2))
    func concurrentProducersCountRetriesAndMatchTheQueue() {
        let deadline = monotonicNanoseconds() + 10_000_000_000
        var retries = 0, rounds = 0
        repeat {
            let q = PCQ<UInt>(capacity: 1 << 15)
            let start = SpinBarrier(parties: 2)
            let producers = (0..<2).map { (k: Int) in
                PinnedThread(cpu: k, name: "pcq-count-\(k)") { () -> PCQPutCounts in
                    var c = PCQPutCounts()
                    start.wait()
                    for i in 0..<(1 << 15) { _ = q.put(UInt(i), counting: &c) }
                    return c
                }
            }
            var sum = PCQPutCounts()
            for p in producers { sum.merge(p.join()) }
            let s = q.statistics
            #expect(sum.puts == s.puts && s.puts == 1 << 15)
            #expect(sum.failedPuts == s.failedPuts && sum.puts + sum.failedPuts == 1 << 16)
            #expect(sum.atomicRMWs == sum.puts + sum.failedPuts + sum.casRetries + sum.highWaterCASes)
            retries += sum.casRetries
            rounds += 1
        } while retries == 0 && monotonicNanoseconds() < deadline
        #expect(retries > 0, "no ticket CAS lost in \(rounds) rounds")
    }
}
