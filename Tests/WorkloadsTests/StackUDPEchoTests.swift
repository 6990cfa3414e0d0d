import Glibc
import Testing
import TestSupport
import SMPPrimitives
@testable import Workloads

// stack-udp-echo's machinery, briefly: both servers, a few hundred checked
// round trips each, in namespaces the run makes and deletes. Needs root,
// /dev/net/tun and ip netns (skipped otherwise, as the other TUN suites).

@Suite(.enabled(if: tunTestsCanRun, "needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN), /dev/net/tun and ip netns"),
       .serialized)
struct StackUDPEchoTests {
    /// The namespaces of this process's runs that exist now.
    private func ownNamespaces() -> [String] {
        let prefix = EchoTopology.prefix + "\(getpid())-"
        return directoryEntries("/run/netns").filter { $0.hasPrefix(prefix) }
    }

    @Test func bothServersEchoEveryRequestByteIdenticalAndTheRunCleansUp() throws {
        var c = StackUDPEchoBenchmark.Configuration()
        c.rounds = 1
        c.sockets = 2
        c.inflight = 4
        c.payloadBytes = 100
        c.warmupSeconds = 0
        c.requests = 300
        c.capSeconds = 5
        c.spinPasses = 50   // the test machine is shared: park soon when idle
        var reported: [String] = []
        let lines = try StackUDPEchoBenchmark(c).run { reported.append($0.impl) }
        #expect(lines.map(\.impl) == ["netstack", "linux_udp_epoll"])
        #expect(reported == lines.map(\.impl))
        for line in lines {
            #expect(line.checked, "\(line.impl): \(line.note ?? "")")
            #expect(line.workload == "stack-udp-echo")
            #expect(line.ops >= 300)
            #expect(line[extra: "corrupt"] == .int(0))
            #expect(line[extra: "duplicates"] == .int(0))
            #expect(line[extra: "lost"] == .int(0))
            #expect(line[extra: "complete"] == .bool(true))
            #expect(line[extra: "ratio"] != nil)
            if case .int(let sent)? = line[extra: "sent"], case .int(let replies)? = line[extra: "replies"] {
                #expect(sent == replies)
            } else {
                Issue.record("\(line.impl): sent/replies missing")
            }
            // The JSON line round-trips (BenchResult's schema).
            let decoded = try JSONLine.decode(BenchResult.self, from: line.jsonLine())
            #expect(decoded.impl == line.impl && decoded.checked == line.checked)
        }
        #expect(ownNamespaces().isEmpty, "\(ownNamespaces())")
    }

    @Test func aStopRequestEndsTheRunEarlyAndStillCleansUp() throws {
        var c = StackUDPEchoBenchmark.Configuration()
        c.rounds = 3
        c.sockets = 1
        c.inflight = 2
        c.warmupSeconds = 0
        c.seconds = 20
        c.spinPasses = 50
        let stop = EchoStopFlag()
        let start = monotonicSeconds()
        let stopper = PinnedThread(name: "test-stop") {
            usleep(1_000_000)
            stop.set()
        }
        let lines = try StackUDPEchoBenchmark(c).run(stop: stop)
        stopper.join()
        // The first window was cut short: its line, marked incomplete, and
        // no further window.
        #expect(monotonicSeconds() - start < 10)
        #expect(lines.map(\.impl) == ["netstack"])
        #expect(lines.first?.complete == false)
        #expect(lines.first?.checked == true, "\(lines.first?.note ?? "")")
        #expect(ownNamespaces().isEmpty, "\(ownNamespaces())")
    }

    @Test func theHistogramsQuantilesAreWithinItsPrecision() {
        var h = LatencyHistogram()
        for v in 1...100_000 { h.record(v * 10) }   // 10 ns ... 1 ms, uniform
        for (q, exact) in [(0.5, 500_000.0), (0.99, 990_000.0), (0.001, 1_000.0)] {
            let got = Double(h.quantile(q))
            #expect(abs(got - exact) / exact < 1.0 / 64, "q \(q): \(got) for \(exact)")
        }
        #expect(h.maximum == 1_000_000)
        #expect(LatencyHistogram().quantile(0.5) == 0)
        for v in [0, 1, 127, 128, 129, 255, 256, 1 << 20, (1 << 20) + 12345, Int(1) << 45] {
            let r = LatencyHistogram.range(LatencyHistogram.index(v))
            #expect(v >= r.low && (v < r.low + r.width || v >= 1 << 41), "\(v): \(r)")
        }
    }
}
