import ArgumentParser
import DemuxLab
import FastDemux
import Testing
import Synchronization
import Workloads
@testable import fastdemux

/// `fastdemux`'s typed options: comma lists that may also be repeated,
/// organization, workload and implementation names, listening sockets; a
/// bad value is an error naming the option, with a non-zero exit code.
@Suite struct CLIOptionTests {
    @Test func versionIsThePackageVersion() {
        #expect(FastDemuxCommand.configuration.version == packageVersion)
        #expect(packageVersion.split(separator: ".").count == 3)
    }

    @Test func compareDefaultsAreThePapersAxes() throws {
        let c = try CompareCommand.parse([])
        #expect(c.organizations.joined() == OrganizationKind.allCases)
        #expect(c.connections.joined() == [6, 192, 16384])
        #expect(c.groups.joined() == [4, 128])
    }

    @Test func compareListsAreCommaSeparatedOrRepeated() throws {
        let c = try CompareCommand.parse([
            "--connections", "6,192", "--connections", "16384", "--groups", "4, 128",
            "--organizations", "msgp,connp-l", "--organizations", "fastpath-deferred",
        ])
        #expect(c.connections.joined() == [6, 192, 16384])
        #expect(c.groups.joined() == [4, 128])
        #expect(c.organizations.joined() == [.msgp, .connpL, .fastpathDeferred])
    }

    @Test(arguments: [
        ["--connections", "6,x"], ["--connections", "6,,7"], ["--connections", ""], ["--connections", "0"],
        ["--groups", "4,-1"], ["--organizations", "msgp,bogus"], ["--repeat", "0"],
    ])
    func compareRejects(_ arguments: [String]) {
        #expect(throws: (any Error).self) { try CompareCommand.parse(arguments) }
        do {
            _ = try CompareCommand.parse(arguments)
        } catch {
            #expect(CompareCommand.message(for: error).contains(arguments[0]), "\(CompareCommand.message(for: error))")
            #expect(CompareCommand.exitCode(for: error) != .success)
        }
    }

    @Test func unknownOrganizationErrorListsTheKnownOnes() {
        do {
            _ = try CompareCommand.parse(["--organizations", "bogus"])
            Issue.record("parsed")
        } catch {
            let message = CompareCommand.fullMessage(for: error)
            for kind in OrganizationKind.allCases { #expect(message.contains(kind.rawValue)) }
        }
    }

    @Test func listenItems() {
        #expect(ListenSpec(argument: "tcp:80") == ListenSpec(.tcp, port: 80))
        #expect(ListenSpec(argument: "UDP:53") == ListenSpec(.udp, port: 53))
        for bad in ["tcp:0", "tcp:65536", "sctp:1", "tcp", "tcp:80,udp:53", ""] {
            #expect(ListenSpec(argument: bad) == nil, "\(bad)")
        }
        #expect(CommaList<ListenSpec>(argument: "tcp:80,udp:53")?.elements == [ListenSpec(.tcp, port: 80), ListenSpec(.udp, port: 53)])
        #expect(CommaList<ListenSpec>(argument: "tcp:80,") == nil)
    }

    @Test func replayListenOptionOpensOnlyThoseSockets() throws {
        let r = try ReplayCommand.parse(["--synthetic", "--listen", "tcp:80,udp:53", "--listen", "udp:5353"])
        #expect(r.session.configuration().sockets
                == .listen([ListenSpec(.tcp, port: 80), ListenSpec(.udp, port: 53), ListenSpec(.udp, port: 5353)]))
        #expect(try ReplayCommand.parse(["--synthetic"]).session.configuration().sockets == .perFlow)
        #expect(throws: (any Error).self) { try ReplayCommand.parse(["--synthetic", "--listen", "tcp:0"]) }
        #expect(throws: (any Error).self) { try DemoCommand.parse(["--listen", "udp:x"]) }
    }

    @Test func benchWorkloadAndImplementation() throws {
        // stack-udp-echo, stack-http and stack-tcp-stream (root, rounds of
        // their own) are choices but not in the registry's `all`.
        #expect(WorkloadChoice.allValueStrings
                == ["all"] + WorkloadRegistry.all.map(\.name) + ["stack-udp-echo", "stack-http", "stack-tcp-stream"])
        #expect(ImplChoice.allValueStrings.contains("netstack") && ImplChoice.allValueStrings.contains("linux_udp_epoll"))
        for w in WorkloadRegistry.all {
            for i in w.impls { #expect(ImplChoice.allValueStrings.contains(i.name)) }
        }
        let b = try BenchCommand.parse(["pcq-1p1c", "--impl", "all", "--n", "1000"])
        #expect(b.workload == .named("pcq-1p1c"))
        #expect(b.impl == .all)
        #expect(b.workload.workloads.map(\.name) == ["pcq-1p1c"])
        let pcq = try #require(WorkloadRegistry.named("pcq-1p1c"))
        #expect(b.impl.implementations(of: pcq).map(\.name) == pcq.impls.map(\.name))
        #expect(ImplChoice.project.implementations(of: pcq).map(\.name) == ["pcq", "pcq_lanes"])
        let demux = try #require(WorkloadRegistry.named("demux"))
        #expect(ImplChoice.project.implementations(of: demux).map(\.name) == [demux.impls[0].name])
        #expect(try BenchCommand.parse(["all"]).workload.workloads.count == WorkloadRegistry.all.count)
        #expect(try BenchCommand.parse(["demux"]).impl == .project)
    }

    @Test func benchStackUDPEchoOptions() throws {
        let b = try BenchCommand.parse(["stack-udp-echo", "--rounds", "5", "--sockets", "4", "--inflight", "32",
                                        "--payload", "200", "--duration", "1.5", "--queues", "2",
                                        "--spin-passes", "50", "--pin", "off", "--impl", "netstack"])
        #expect(b.workload.isStackUDPEcho)
        #expect(b.echo.rounds == 5 && b.echo.sockets == 4 && b.echo.inflight == 32 && b.echo.payload == 200)
        #expect(b.echo.duration == 1.5 && b.echo.queues == 2 && b.echo.spinPasses == 50 && b.echo.pin == .off)
        #expect(b.workload.workloads.isEmpty)   // not a registry workload: `all` does not run it
        for arguments in [["stack-udp-echo", "--payload", "15"], ["stack-udp-echo", "--payload", "1473"],
                          ["stack-udp-echo", "--rounds", "0"], ["stack-udp-echo", "--impl", "fastpath"],
                          ["stack-udp-echo", "--duration", "0"], ["pcq-1p1c", "--rounds", "2"],
                          ["demux", "--pin", "on"]] {
            #expect(throws: (any Error).self, "\(arguments)") { try BenchCommand.parse(arguments) }
        }
    }

    @Test func benchStackHTTPOptions() throws {
        let b = try BenchCommand.parse(["stack-http", "--rounds", "2", "--connections", "16", "--client-threads", "2",
                                        "--load", "builtin", "--duration", "1", "--queues", "2", "--pin", "off",
                                        "--impl", "linux_http_epoll"])
        #expect(b.workload.stackHTTPKind == .http)
        #expect(b.echo.rounds == 2 && b.echo.duration == 1 && b.echo.queues == 2 && b.echo.pin == .off)
        #expect(b.http.connections == 16 && b.http.clientThreads == 2 && b.http.load == .builtin)
        #expect(b.workload.workloads.isEmpty)
        let s = try BenchCommand.parse(["stack-tcp-stream", "--response-bytes", "1048576", "--connections", "2"])
        #expect(s.workload.stackHTTPKind == .tcpStream && s.http.responseBytes == 1_048_576)
        #expect(ImplChoice.allValueStrings.contains("linux_http_epoll"))
        for arguments in [["stack-http", "--sockets", "4"], ["stack-http", "--response-bytes", "100"],
                          ["stack-tcp-stream", "--load", "wrk"], ["stack-http", "--impl", "linux_udp_epoll"],
                          ["stack-http", "--connections", "0"], ["stack-udp-echo", "--connections", "4"],
                          ["demux", "--connections", "4"], ["stack-http", "--load", "wrk", "--n", "100"]] {
            #expect(throws: (any Error).self, "\(arguments)") { try BenchCommand.parse(arguments) }
        }
    }

    @Test func benchSizeOptions() throws {
        #expect(try BenchCommand.parse(["demux", "--flows", "65536"]).flows == 65_536)
        #expect(try BenchCommand.parse(["rcu-churn", "--keys", "1048576"]).keys == 1_048_576)
        #expect(try BenchCommand.parse(["rcu-lookup", "--keys", "2048"]).keys == 2_048)
        let bad: [([String], String)] = [
            (["demux", "--flows", "1"], "--flows must be between 2 and 16777216, not 1"),
            (["demux", "--flows", "16777217"], "--flows must be between 2 and 16777216, not 16777217"),
            (["rcu-churn", "--flows", "4096"], "--flows is an option of demux only"),
            (["all", "--flows", "4096"], "--flows is an option of demux only"),
            (["demux", "--keys", "65536"], "--keys is an option of rcu-lookup and rcu-churn only"),
            (["rcu-churn", "--keys", "1024"], "--keys must be between 2048 and 16777216, not 1024"),
            (["rcu-churn", "--keys", "100000"], "--keys must be a power of two, not 100000"),
        ]
        for (arguments, message) in bad {
            do {
                _ = try BenchCommand.parse(arguments)
                Issue.record("parsed \(arguments)")
            } catch {
                #expect(BenchCommand.message(for: error) == message, "\(arguments)")
                #expect(BenchCommand.exitCode(for: error) != .success)
            }
        }
        #expect(throws: (any Error).self) { try BenchCommand.parse(["demux", "--flows", "many"]) }
    }

    @Test func benchRejects() {
        for arguments in [["nope"], ["pcq-1p1c", "--impl", "nope"], ["pcq-1p1c", "--n", "0"], ["pcq-1p1c", "--cap", "0"]] {
            #expect(throws: (any Error).self, "\(arguments)") { try BenchCommand.parse(arguments) }
        }
        do {
            _ = try BenchCommand.parse(["pcq-1p1c", "--impl", "kcont"])
            Issue.record("parsed")
        } catch {
            #expect(BenchCommand.message(for: error) == "workload pcq-1p1c has no impl 'kcont'; known: "
                    + WorkloadRegistry.named("pcq-1p1c")!.impls.map(\.name).joined(separator: ", "))
            #expect(BenchCommand.exitCode(for: error) != .success)
        }
    }

    /// Every subcommand's help, and the tool's: no file outside the
    /// repository, no file that moved.
    @Test func helpNamesNoFileOutsideTheRepository() {
        let commands: [any ParsableCommand.Type] = [FastDemuxCommand.self] + FastDemuxCommand.configuration.subcommands
        #expect(commands.count == 9)   // the tool and 8 subcommands (soak the seventh, serve the eighth)
        for command in commands {
            let help = FastDemuxCommand.helpMessage(for: command, columns: 200)
            for outside in ["../", "shared/", "seeds", "Samples/", "BENCHMARKS.md"] {
                #expect(!help.contains(outside), "\(command): \(outside)")
            }
            #expect(help.contains("OVERVIEW:"))
        }
    }
}

/// The `--json` objects of the session reports and of `compare`: one line,
/// `schemaVersion` and `version`, the fields by their names.
@Suite struct CLIJSONTests {
    @Test func sessionReportOfTheDemoCapture() throws {
        var source = try DemoCapture.makeSource()
        var config = DemuxSessionConfiguration()
        config.pin = false
        let report = try DemuxSession(config).run(&source)
        let ctx = ReportContext(command: "demo", source: DemoCapture.name, linkType: "EN10MB", sockets: config.sockets)
        let line = try JSONLine.encode(SessionReportJSON(report, ctx))
        #expect(!line.contains("\n"))
        let o = try JSONLine.decode(JSONValue.self, from: line)
        #expect(o["schemaVersion"] == .int(JSONSchema.version))
        #expect(o["version"] == .string(packageVersion))
        #expect(o["command"] == .string("demo"))
        #expect(o["link_type"] == .string("EN10MB"))
        #expect(o["frames"] == .int(112))
        #expect(o["delivered"] == .int(112))
        #expect(o["dropped"] == .int(0))
        #expect(o["conserved"] == .bool(true))
        #expect(o["order_violations"] == .int(0))
        #expect(o["error"] == nil)
        guard case .array(let flows)? = o["flows"] else { Issue.record("no flows"); return }
        #expect(flows.count == 10)
        for f in flows {
            #expect(f["packets"] == f["delivered"])
            for key in ["proto", "a", "a_port", "b", "b_port", "key", "bytes", "delivered_bytes"] {
                #expect(f[key] != nil, "\(key)")
            }
        }
        #expect(o["drops"]?["no_socket"] == .int(0))
        #expect(o["drops"]?["queue_full"] == .int(0))
        #expect(o["handoff"]?["queue_puts"] != nil)
        #expect(o["handoff"]?["wakeups_per_delivered"] != nil)
        // Counted and modelled RMWs apart; hand-offs not yet classifiable.
        #expect(o["handoff"]?["atomic_rmws_modelled"] != nil)
        #expect(o["handoff"]?["unclassified_handoffs"] != nil)
        #expect(o["handoff"]?["steering"] == nil)
    }

    @Test func compareRun() throws {
        var c = OrganizationRunConfiguration(kind: .fastpath, connections: 6)
        c.packets = 2_000
        c.inputThreads = 1
        c.coreThreads = 1
        c.pinned = false
        let r = runOrganization(c)
        #expect(r.checked, "\(r.failures)")
        let o = try JSONLine.decode(JSONValue.self, from: JSONLine.encode(CompareRunJSON(r, statsOffMpps: nil)))
        #expect(o["schemaVersion"] == .int(JSONSchema.version))
        #expect(o["version"] == .string(packageVersion))
        #expect(o["organization"] == .string("fastpath"))
        #expect(o["connections"] == .int(6))
        #expect(o["packets"] == .int(2_000))
        #expect(o["checked"] == .bool(true))
        #expect(o["delivered"] == .int(r.delivered))
        #expect(o["runs"] == .int(1))
        #expect(o["stats_off_mpps"] == nil)
        #expect(o["failures"] == nil)
        for key in ["atomic_rmws", "atomic_rmws_modelled", "lock_acquisitions", "wakeups", "context_switches",
                    "cross_core_handoffs", "queue_ops"] {
            #expect(o["per_delivered"]?[key] != nil, "\(key)")
        }
        #expect(o["totals"]?["contended_fraction"] != nil)
        #expect(o["totals"]?["unclassified_handoffs"] != nil)
        #expect(o["handoffs"]?["socket_queue"]?["queue_ops"] != nil)
        #expect(o["handoffs"]?["core_queue"]?["depth_histogram"] != nil)

        let withOverhead = try JSONLine.decode(JSONValue.self, from: JSONLine.encode(CompareRunJSON(r, statsOffMpps: 2 * r.mpps, runs: 3)))
        #expect(withOverhead["stats_off_mpps"] == .double(2 * r.mpps))
        #expect(withOverhead["stats_overhead_percent"] == .double(50))
        #expect(withOverhead["runs"] == .int(3))
    }
}

/// `fastdemux soak --json`: one line per report with the fields by name,
/// conservation at every report, then a summary line.
@Suite struct CLISoakTests {
    @Test func shortSoakWritesConservedJSONReports() throws {
        final class Lines: Sendable { let value = Mutex<[String]>([]) }
        let lines = Lines()
        let c = try SoakCommand.parse(["--duration", "3", "--report-interval", "1", "--json"])
        #expect(c.duration == 3 && c.reportInterval == 1 && c.json)
        var config = SoakConfiguration(duration: 3, reportInterval: 1)
        config.flowLimits.idleTimeout = 0.5   // flow sockets expire within the 3 s
        let summary = runSoak(config, json: true) { line in
            lines.value.withLock { $0.append(line) }
        }
        let all = lines.value.withLock { $0 }
        #expect(all.count == summary.reports.count + 1)
        #expect((3...4).contains(summary.reports.count), "about one report per second")
        for line in all.dropLast() {
            #expect(!line.contains("\n"))
            let o = try JSONLine.decode(JSONValue.self, from: line)
            #expect(o["schemaVersion"] == .int(JSONSchema.version))
            #expect(o["version"] == .string(packageVersion))
            #expect(o["command"] == .string("soak"))
            #expect(o["kind"] == .string("report"))
            #expect(o["conserved"] == .bool(true), "\(line)")
            for key in ["index", "seconds", "rss_bytes", "reclamation_pending", "reclamation_peak", "offered",
                        "delivered", "dropped", "sockets_open", "binds", "closes", "packets_per_second"] {
                #expect(o[key] != nil, "\(key)")
            }
            for reason in DemuxDropReason.allCases { #expect(o["drops"]?[reason.description] != nil, "\(reason)") }
            #expect(o["flow_sockets"]?["refused"]?[FlowSocketCounters.capReasonKey] != nil)
            #expect(o["flow_sockets"]?["expired"] != nil)
            guard case .int(let rss)? = o["rss_bytes"], case .int(let offered)? = o["offered"] else {
                Issue.record("rss_bytes/offered not integers"); continue
            }
            #expect(rss > 1 << 20 && offered > 0)
        }
        let last = try JSONLine.decode(JSONValue.self, from: all.last ?? "")
        #expect(last["kind"] == .string("summary"))
        #expect(last["conserved_reports"] == .int(summary.reports.count))
        #expect(last["rss_growth_limit_bytes"] != nil)
        // Measured in this process while other tests allocate, so only its
        // presence is checked here; CI's 60 s soak (a process of its own)
        // judges it.
        #expect(last["heap_residual_bytes"] != nil && last["heap_residual_limit_bytes"] != nil)
        // The hostile traffic shows up under its parser reasons.
        let parseDrops = Set(summary.reports.last?.parseDrops.map(\.reason) ?? [])
        for reason in ["truncated_ipv4", "ipv4_fragment", "bad_ipv4_version", "not_tcp_udp", "bad_udp_length"] {
            #expect(parseDrops.contains(reason), "\(reason)")
        }
        #expect((summary.reports.last?.closes ?? 0) > 0, "the churn thread closed sockets")
        #expect((summary.reports.last?.flowSockets.expired ?? 0) > 0, "flow sockets expired")
    }

    @Test func soakRejectsBadValues() {
        for bad in [["--duration", "0"], ["--duration", "5", "--report-interval", "0"], []] {
            #expect(throws: (any Error).self, "\(bad)") { try SoakCommand.parse(bad) }
        }
    }

    @Test func serveRejectsBadValuesWithAMessageNamingTheOption() {
        let base = ["--tun", "t0", "--address", "198.18.0.2"]
        let cases: [([String], String)] = [
            (base + ["--address", "198.18.0.2"], "--address 198.18.0.2: given twice"),
            (base + ["--udp-echo", "0"], "--udp-echo 0: a port from 1 to 65535"),
            (base + ["--udp-echo", "65536"], "--udp-echo 65536: a port from 1 to 65535"),
            (base + ["--tcp-echo", "0"], "--tcp-echo 0: a port from 1 to 65535"),
            (base + ["--http", "0"], "--http 0: a port from 1 to 65535"),
            (base + ["--http", "80", "--tcp-echo", "80"], "--http 80: the TCP echo's port too"),
            (["--tun", "t0"], "--address: give at least one address to answer as"),
            (["--tun", "t0", "--address", "nope"], "--address nope: not an IPv4 or IPv6 address"),
            (base + ["--queues", "0"], "--queues: 1 to 256"),
        ]
        for (arguments, message) in cases {
            do {
                _ = try ServeCommand.parse(arguments)
                Issue.record("parsed \(arguments)")
            } catch {
                #expect(ServeCommand.message(for: error) == message)
                #expect(ServeCommand.exitCode(for: error) != .success)
            }
        }
        #expect((try? ServeCommand.parse(base + ["--address", "fd00:18::2", "--udp-echo", "7", "--queues", "2"])) != nil)
        #expect((try? ServeCommand.parse(base + ["--tcp-echo", "7", "--http", "80"])) != nil)
    }
}
