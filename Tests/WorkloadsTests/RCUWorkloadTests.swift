import Testing
@testable import Workloads

@Suite struct RCUWorkloadTests {
    @Test(arguments: ["rcu-lookup", "rcu-churn"])
    func everyImplementationChecksOut(workload: String) throws {
        let w = try #require(WorkloadRegistry.named(workload))
        #expect(w.impls.map(\.name) == ["rcu_hash", "rcu_bucket", "urcu_lfht", "mutex_dictionary"])
        for impl in w.impls {
            let r = impl.run(WorkloadOptions(n: 20_000))
            #expect(r.checked, "\(workload) \(impl.name): \(r.summary)")
            #expect(r.ops == (workload == "rcu-lookup" ? 40_000 : 20_000), "\(impl.name)")
            #expect(r.extra.contains { $0.0 == "complete" && $0.1 == .bool(true) })
            if workload == "rcu-churn" {
                #expect(r.extra.contains { $0.0 == "writer_updates" })
                #expect(r.extra.contains { $0.0 == "pending_reclaim_peak" })
            }
        }
    }

    /// `--keys` (size): every table holds that many keys and checks out.
    @Test(arguments: ["rcu-lookup", "rcu-churn"])
    func keyCountOption(workload: String) throws {
        let w = try #require(WorkloadRegistry.named(workload))
        for impl in w.impls {
            let r = impl.run(WorkloadOptions(n: 20_000, size: 8_192))
            #expect(r.checked, "\(workload) \(impl.name): \(r.summary)")
            #expect(r[extra: "keys"] == .int(8_192), "\(impl.name)")
        }
    }

    @Test func cappedRunReportsIncompleteButChecked() throws {
        let w = try #require(WorkloadRegistry.named("rcu-lookup"))
        let r = w.impls[0].run(WorkloadOptions(n: 2_000_000, capSeconds: 0))
        #expect(r.checked)
        #expect(r.ops < 4_000_000)
        #expect(r.extra.contains { $0.0 == "complete" && $0.1 == .bool(false) })
    }
}
