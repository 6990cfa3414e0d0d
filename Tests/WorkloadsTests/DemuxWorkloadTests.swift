import Testing
import Workloads

@Suite("Demux workload")
struct DemuxWorkloadTests {
    @Test(arguments: ["fastpath", "mutex_dictionary"])
    func demuxWorkloadChecks(impl: String) throws {
        let w = try #require(WorkloadRegistry.named("demux"))
        let run = try #require(w.impls.first { $0.name == impl })
        let r = run.run(WorkloadOptions(n: 40_960, capSeconds: 60))
        let line = try r.jsonLine()
        #expect(r.checked, "\(line)")
        #expect(r.ops == 40_960)
    }
}
