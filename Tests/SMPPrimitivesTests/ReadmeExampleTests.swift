import SMPPrimitives
import Synchronization
import Testing

/// The README's "Using SMPPrimitives alone" example, verbatim, so the
/// documentation cannot drift from the API.
@Suite struct ReadmeExampleTests {
    @Test func readmeExampleWorks() {
        struct Job: BitwiseCopyable { var id: UInt; var cost: UInt }
        let q = PCQ<Job>(capacity: 256)
        _ = q.put(Job(id: 1, cost: 42))
        var drained: [UInt] = []
        q.drain(max: 64) { job in drained.append(job.id * 1000 + job.cost) }
        #expect(drained == [1042])

        let table = RCUHashTable<UInt64, UInt, Memb>(initialBucketCount: 1024)
        _ = table.insert(7, value: 700)
        Memb.registerThread()
        let v = Memb.withReadSection { table.lookup(7) }
        _ = table.remove(7)
        Memb.unregisterThread()
        #expect(v == 700)

        let ran = Atomic<Int>(0)
        let cores = CoreExecutorGroup()
        let flush = KernelContinuation(on: cores.executor(for: 1)) { ran.add(1, ordering: .relaxed) }
        #expect(flush.schedule(after: .milliseconds(10)))
        let answer = cores.call(on: 1) { 6 * 7 }
        cores.shutdown()
        #expect(answer == 42)
        #expect(ran.load(ordering: .relaxed) == 1)
    }
}
