import Glibc
import Testing
import TestSupport
import SMPPrimitives
@testable import Workloads

// stack-http and stack-tcp-stream, briefly: both servers, the built-in
// client (which checks every response byte for byte), in namespaces the
// run makes and deletes. Needs root, /dev/net/tun and ip netns (skipped
// otherwise, as the other TUN suites). Every window is bounded by
// `capSeconds`, every wait in the run by its own deadline. Nested in
// StackUDPEchoTests, whose traits it inherits: serialized with its tests,
// so that "no namespace of this process is left" holds between runs.

extension StackUDPEchoTests {
    @Suite struct StackHTTPBenchTests {
        private func ownNamespaces() -> [String] {
            let prefix = EchoTopology.prefix + "\(getpid())-"
            return directoryEntries("/run/netns").filter { $0.hasPrefix(prefix) }
        }

        private func int(_ v: JSONValue?) -> Int? {
            if case .int(let i)? = v { return i }
            return nil
        }

        private func object(_ v: JSONValue?) -> [(String, JSONValue)] {
            if case .object(let o)? = v { return o }
            return []
        }

        /// The checks both workloads share: checked, the client's bookkeeping
        /// conserved (every request sent answered or in flight), no mismatch
        /// or failed connection, the stack's accounting (in `checked`) and
        /// its hand-off counters, the JSON round trip, the namespaces gone.
        private func expectSound(_ lines: [BenchResult], workload: String) throws {
            #expect(lines.map(\.impl) == ["netstack", "linux_http_epoll"])
            for line in lines {
                #expect(line.checked, "\(line.impl): \(line.note ?? "")")
                #expect(line.workload == workload)
                #expect(line.ops > 0)
                #expect(line[extra: "load"] == .string("builtin"))
                #expect(line[extra: "complete"] == .bool(true))
                #expect(line[extra: "ratio"] != nil)
                let client = object(line[extra: "client"])
                #expect(client.first { $0.0 == "mismatches" }?.1 == .int(0))
                #expect(client.first { $0.0 == "connection_errors" }?.1 == .int(0))
                if let sent = int(line[extra: "sent"]), let answered = int(line[extra: "responses"]),
                   let inFlight = int(line[extra: "unanswered"]) {
                    #expect(answered > 0)
                    #expect(sent == answered + inFlight)
                } else {
                    Issue.record("\(line.impl): sent/responses/unanswered missing")
                }
                let server = object(line[extra: "server"])
                if line.impl == "netstack" {
                    let handoff = object(server.first { $0.0 == "handoff" }?.1)
                    // The fast path's counts are there and add up: every pure
                    // ACK the engines sent went out either from the input
                    // path or from a continuation.
                    let immediate = int(handoff.first { $0.0 == "immediate_acks" }?.1) ?? -1
                    let deferred = int(handoff.first { $0.0 == "deferred_acks" }?.1) ?? -1
                    #expect(immediate >= 0 && deferred >= 0)
                    #expect(handoff.first { $0.0 == "try_lock_failures" }?.1 == .int(0))
                    #expect((int(handoff.first { $0.0 == "input_path_runs" }?.1) ?? 0) > 0)
                    #expect((int(handoff.first { $0.0 == "segments_delivered" }?.1) ?? 0) > 0)
                    #expect((int(handoff.first { $0.0 == "socket_worker_runs" }?.1) ?? 0) > 0)
                    // Every connection the listener accepted closed, and its
                    // handler counted it.
                    #expect(server.first { $0.0 == "connections_counted" }?.1
                            == server.first { $0.0 == "connections_accepted" }?.1)
                }
                let decoded = try JSONLine.decode(BenchResult.self, from: line.jsonLine())
                #expect(decoded.impl == line.impl && decoded.checked == line.checked)
            }
            #expect(ownNamespaces().isEmpty, "\(ownNamespaces())")
        }

        @Test func stackHTTPBothServersAnswerEveryRequestIdentically() throws {
            var c = StackHTTPBenchmark.Configuration(kind: .http)
            c.rounds = 1
            c.connections = 8
            c.load = .builtin
            c.warmupSeconds = 0
            c.requests = 300
            c.capSeconds = 5
            c.spinPasses = 50   // the test machine is shared: park soon when idle
            var reported: [String] = []
            let lines = try StackHTTPBenchmark(c).run { reported.append($0.impl) }
            #expect(reported == lines.map(\.impl))
            try expectSound(lines, workload: "stack-http")
            for line in lines {
                #expect(line.ops >= 300)
                // With the drain, every request was answered.
                #expect(line[extra: "unanswered"] == .int(0))
            }
        }

        @Test func stackTCPStreamTransfersCheckedBodies() throws {
            var c = StackHTTPBenchmark.Configuration(kind: .tcpStream)
            c.rounds = 1
            c.connections = 2
            c.responseBytes = 1 << 20
            c.warmupSeconds = 0
            c.requests = 4   // whole transfers
            c.capSeconds = 5
            c.spinPasses = 50
            let lines = try StackHTTPBenchmark(c).run()
            try expectSound(lines, workload: "stack-tcp-stream")
            for line in lines {
                #expect(line.ops >= 4 << 20, "\(line.impl): \(line.ops) body bytes")
                #expect((int(line[extra: "transfers"]) ?? 0) >= 4)
            }
        }
    }
}

/// wrk's report, parsed (no root needed).
@Test func wrkReportIsParsed() throws {
    let text = """
        Running 2s test @ http://198.18.0.2/
          1 threads and 64 connections
          Thread Stats   Avg      Stdev     Max   +/- Stdev
            Latency     1.05ms  312.00us   9.87ms   90.00%
            Req/Sec    61.02k     2.00k   64.00k    80.00%
          Latency Distribution
             50%  612.00us
             75%    1.10ms
             90%    1.50ms
             99%    2.25ms
          122040 requests in 2.00s, 40.12MB read
          Socket errors: connect 0, read 3, write 0, timeout 1
          Non-2xx or 3xx responses: 7
        Requests/sec:  61020.00
        Transfer/sec:     20.06MB
        """
    let w = try #require(WrkLoad.parse(text))
    #expect(w.requests == 122_040)
    #expect(w.seconds == 2.0)
    #expect(w.medianNanoseconds == 612_000)
    #expect(w.p99Nanoseconds == 2_250_000)
    #expect(w.maxNanoseconds == 9_870_000)
    #expect(w.socketErrors == 4)
    #expect(w.badResponses == 7)
    #expect(WrkLoad.parse("connection refused") == nil)
}
