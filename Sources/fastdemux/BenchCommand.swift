import ArgumentParser
import DemuxLab
import Glibc
import Workloads

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Run a benchmark workload against the project's implementation and, with --impl all, every in-process baseline.",
        discussion: """
            Each implementation's run checks its own result; the command exits non-zero if any check \
            fails. The workloads (docs/Benchmarks.md has them measured against C peers):
            \(WorkloadRegistry.all.map { "- \($0.name): \($0.summary)" }.joined(separator: "\n"))

            With --json, one JSON object per implementation, one per line, with the fields workload, \
            impl, ops, seconds, mops (throughput workloads), ns_per_op, checked, note, the workload's \
            own fields (complete: false if --cap stopped the run), schemaVersion (\(JSONSchema.version); \
            raised when a field is removed or changes meaning) and version (the package version).

            - \(StackUDPEchoBenchmark.workload) (needs root; not part of 'all'): the same kernel UDP client \
            load (--sockets sockets, each with --inflight requests in flight, --payload bytes) against the \
            project's stack on a TUN device (netstack) and a Linux epoll + recvmmsg/sendmmsg echo server \
            behind a veth pair (linux_udp_epoll), alternating for --rounds rounds of --duration seconds \
            each (or --n replies); one line per implementation per round, with requests/s, median and p99 \
            round trip and the ratio stack/kernel. Its default --impl runs both.

            - stack-http (needs root; not part of 'all'): on the same topology, --connections (64) kernel TCP \
            keep-alive connections, one request outstanding each, GET / (the HTTP service of 'serve --http'), \
            against the stack (netstack) and a Linux epoll HTTP server running the same HTTPConnection code \
            (linux_http_epoll: one thread per queue, SO_REUSEPORT listeners), alternating for --rounds rounds; \
            requests/s, median and p99 latency, the ratio stack/kernel, and the stack's hand-off counters. \
            --load: wrk if installed (auto), or the built-in client, which checks every response byte for byte.
            - stack-tcp-stream (needs root; not part of 'all'): bulk transfer from server to client: each of \
            --connections (1) connections downloads GET /bytes/N (--response-bytes, 256 MiB) again and again \
            over keep-alive, from both servers, alternating; Gbit/s of body bytes in the window (every byte \
            checked) and the ratio stack/kernel.
            """
    )

    @Argument(help: "The workload, or 'all'.")
    var workload: WorkloadChoice

    @Option(help: "Implementation to run: 'project' (the project's own), 'all', or one by name.")
    var impl: ImplChoice = .project

    @Flag(help: "Print exactly one JSON object per implementation, one per line.")
    var json = false

    @Option(help: "Override the workload's N (smaller runs for a quick look).")
    var n: Int?

    @Option(help: ArgumentHelp("Per-implementation wall-clock cap in seconds.", valueName: "seconds"))
    var cap: Double = 30

    @Option(help: ArgumentHelp("demux only: connected flows (default 4096; Zipf over N ranks, same frames).",
                               valueName: "N"))
    var flows: Int?

    @Option(help: ArgumentHelp("rcu-lookup and rcu-churn only: keys in the table, a power of two (default 65536).",
                               valueName: "N"))
    var keys: Int?

    /// The range of `--flows` and of `--keys` (rcu-churn needs more than
    /// its 1,024 stable keys; a power of two, as the C peer's tables mask
    /// their hashes).
    static let flowRange = 2...DemuxBenchmarkTraffic.maxFlowCount
    static let keyRange = 2_048...(1 << 24)

    @OptionGroup(title: "stack-udp-echo (--rounds, --duration, --warmup, --queues, --spin-passes, --pin: also stack-http, stack-tcp-stream)")
    var echo: StackUDPEchoOptions

    @OptionGroup(title: "stack-http and stack-tcp-stream")
    var http: StackHTTPOptions

    func validate() throws {
        if let n, n <= 0 { throw ValidationError("--n must be positive") }
        if !(cap > 0) { throw ValidationError("--cap must be positive") }
        try validateSize("--flows", flows, range: Self.flowRange, workloads: ["demux"])
        try validateSize("--keys", keys, range: Self.keyRange, workloads: ["rcu-lookup", "rcu-churn"])
        if let keys, keys & (keys - 1) != 0 { throw ValidationError("--keys must be a power of two, not \(keys)") }
        if workload.isStackUDPEcho {
            let names = StackUDPEchoBenchmark.Implementation.allCases.map(\.rawValue)
            if case .named(let name) = impl, !names.contains(name) {
                throw ValidationError("workload \(StackUDPEchoBenchmark.workload) has no impl '\(name)'; known: "
                                      + names.joined(separator: ", "))
            }
            try echo.validate()
            if let option = http.given.first {
                throw ValidationError("\(option) is an option of stack-http and stack-tcp-stream only")
            }
            return
        }
        if let kind = workload.stackHTTPKind {
            let names = StackHTTPBenchmark.Implementation.allCases.map(\.rawValue)
            if case .named(let name) = impl, !names.contains(name) {
                throw ValidationError("workload \(kind.rawValue) has no impl '\(name)'; known: " + names.joined(separator: ", "))
            }
            try echo.validate()
            if let option = echo.udpOnlyGiven.first {
                throw ValidationError("\(option) is an option of \(StackUDPEchoBenchmark.workload) only")
            }
            try http.validate(kind)
            if n != nil && http.load == .wrk { throw ValidationError("--n needs the built-in load (wrk runs for --duration)") }
            return
        }
        if let option = echo.udpOnlyGiven.first {
            throw ValidationError("\(option) is an option of \(StackUDPEchoBenchmark.workload) only")
        }
        if let option = echo.sharedGiven.first {
            throw ValidationError("\(option) is an option of stack-udp-echo, stack-http and stack-tcp-stream only")
        }
        if let option = http.given.first {
            throw ValidationError("\(option) is an option of stack-http and stack-tcp-stream only")
        }
        for w in workload.workloads where impl.implementations(of: w).isEmpty {
            throw ValidationError("workload \(w.name) has no impl '\(impl)'; known: \(w.impls.map(\.name).joined(separator: ", "))")
        }
    }

    /// A size option: given only with one of `workloads`, within `range`.
    private func validateSize(_ option: String, _ value: Int?, range: ClosedRange<Int>, workloads: [String]) throws {
        guard let value else { return }
        guard case .named(let name) = workload, workloads.contains(name) else {
            throw ValidationError("\(option) is an option of \(workloads.joined(separator: " and ")) only")
        }
        guard range.contains(value) else {
            throw ValidationError("\(option) must be between \(range.lowerBound) and \(range.upperBound), not \(value)")
        }
    }

    func run() throws {
        if workload.isStackUDPEcho { return try runStackUDPEcho() }
        if let kind = workload.stackHTTPKind { return try runStackHTTP(kind) }
        let options = WorkloadOptions(n: n, capSeconds: cap, size: flows ?? keys)
        var failed = false
        for w in workload.workloads {
            for entry in impl.implementations(of: w) {
                let result = entry.run(options)
                if json {
                    try printJSONLine(result)
                } else {
                    print(result.summary)
                }
                fflush(nil)
                if !result.checked { failed = true }
            }
        }
        if failed { throw ExitCode(1) }
    }
}
