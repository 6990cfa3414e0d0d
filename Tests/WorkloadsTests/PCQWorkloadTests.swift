import Testing
import Workloads

/// The pcq benchmark workloads at a small size, every implementation: each
/// run checks its own result.
@Suite(.serialized) struct PCQWorkloadTests {
    @Test(arguments: ["pcq-1p1c", "pcq-2p1c"])
    func everyImplementationChecksOut(workload: String) throws {
        let w = try #require(WorkloadRegistry.named(workload))
        #expect(w.impls.map(\.name) == ["pcq", "pcq_lanes", "pcq_pair", "mutex_deque", "urcu_wfcq"])
        #expect(w.projectImpls == 2)
        for impl in w.impls {
            let r = impl.run(WorkloadOptions(n: 200_000, capSeconds: 60))
            #expect(r.checked, "\(workload) \(impl.name): \(r.summary)")
            #expect(r.ops == 200_000)
            #expect(try JSONLine.decode(BenchResult.self, from: r.jsonLine()).complete == true)
        }
    }

    /// pcq and pcq_lanes.
    @Test(arguments: [0, 1])
    func cappedRunChecksWhatItDid(impl: Int) throws {
        let w = try #require(WorkloadRegistry.named("pcq-2p1c"))
        // A cap far below the run time: producers are stopped early and the
        // consumer checks exactly what was sent.
        let r = w.impls[impl].run(WorkloadOptions(n: 2_000_000_000, capSeconds: 0.05))
        #expect(r.checked, "\(r.summary)")
        #expect(r.ops < 2_000_000_000)
        #expect(try JSONLine.decode(BenchResult.self, from: r.jsonLine()).complete == false)
    }
}
