import Testing
@testable import Workloads

@Suite struct KernelUDPTests {
    @Test func smallRunIsCheckedAndConserves() {
        let result = KernelUDPBenchmark(.init(sockets: 64, datagrams: 20_000, capSeconds: 5)).run()
        #expect(result.checked, "\(result.note ?? "")")
        let fields = Dictionary(uniqueKeysWithValues: result.extra.map { ($0.0, $0.1) })
        #expect(fields["sent"] == .int(20_000))
        #expect(fields["complete"] == .bool(true))
        // Conservation: every datagram sent was received or counted as a drop.
        if case .int(let sent)? = fields["sent"], case .int(let drops)? = fields["drops"] {
            #expect(result.ops + drops == sent)
        } else {
            Issue.record("sent/drops missing")
        }
        #expect(result.ops > 0)
    }

    @Test func registeredUnderItsBenchmarkName() throws {
        let w = try #require(WorkloadRegistry.named("kernel-udp"))
        #expect(w.impls.map(\.name) == ["linux_udp"])
        let r = w.impls[0].run(WorkloadOptions(n: 5_000, capSeconds: 5, size: 16))
        #expect(r.checked, "\(r.note ?? "")")
        #expect(r.workload == "kernel-udp")
    }

    @Test func capStopsTheSenderEarly() {
        // 100 M datagrams cannot be sent in 0.2 s on loopback: the cap must stop
        // the run, mark it incomplete, and still check what was done.
        let result = KernelUDPBenchmark(.init(sockets: 32, datagrams: 100_000_000, capSeconds: 0.2)).run()
        #expect(result.checked, "\(result.note ?? "")")
        let complete = result.extra.first { $0.0 == "complete" }?.1
        #expect(complete == .bool(false))
        #expect(result.note?.contains("cap") == true)
    }
}
