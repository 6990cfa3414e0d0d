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

    /// `--flows` (size): the run checks, and the line says how big the
    /// table is, how lookups probe it and what is resident.
    @Test func demuxScaledFlowsReportsTableAndMemory() throws {
        let w = try #require(WorkloadRegistry.named("demux"))
        let r = w.impls[0].run(WorkloadOptions(n: 40_960, capSeconds: 60, size: 20_000))
        let line = try r.jsonLine()
        #expect(r.checked, "\(line)")
        #expect(r[extra: "flows"] == .int(20_000))
        guard case .int(let rss)? = r[extra: "rss_setup_kb"], case .int(let peak)? = r[extra: "rss_peak_kb"] else {
            Issue.record("no resident memory fields")
            return
        }
        #expect(rss > 0 && peak >= rss)
        guard case .object(let table)? = r[extra: "table"] else {
            Issue.record("no table field")
            return
        }
        #expect(table.first { $0.0 == "keys" }?.1 == .int(20_000))
        if case .double(let probes)? = table.first(where: { $0.0 == "probes_per_hit" })?.1 {
            #expect(probes >= 1)
        } else {
            Issue.record("no probes_per_hit")
        }
    }
}
