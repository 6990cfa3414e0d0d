// `bench stack-http` and `bench stack-tcp-stream`: their own options (the
// rounds, duration, warm-up, queues, spin passes and pinning are
// stack-udp-echo's), the run and the summary over the rounds.
import ArgumentParser
import Workloads

/// The options only stack-http and stack-tcp-stream have (all optional,
/// so that `bench` can refuse them for the other workloads).
struct StackHTTPOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Keep-alive client connections (default 64 for stack-http, 1 for stack-tcp-stream).",
                               valueName: "N"))
    var connections: Int?

    @Option(name: .customLong("client-threads"), help: ArgumentHelp("Client threads (default 1).", valueName: "N"))
    var clientThreads: Int?

    @Option(name: .customLong("response-bytes"),
            help: ArgumentHelp("stack-tcp-stream: N of each GET /bytes/N (default 268435456).", valueName: "BYTES"))
    var responseBytes: Int?

    @Option(help: ArgumentHelp("stack-http: the load generator: auto (wrk if installed), builtin (checks bodies) or wrk.",
                               valueName: "auto|builtin|wrk"))
    var load: StackHTTPBenchmark.Load?

    @Flag(name: .customLong("no-gso"),
          help: "Open the stack's TUN device without the virtio-net header: no TCP segmentation offload.")
    var noGSO = false

    /// The options given, by their flag.
    var given: [String] {
        var g: [String] = []
        if connections != nil { g.append("--connections") }
        if clientThreads != nil { g.append("--client-threads") }
        if responseBytes != nil { g.append("--response-bytes") }
        if load != nil { g.append("--load") }
        if noGSO { g.append("--no-gso") }
        return g
    }

    func validate(_ kind: StackHTTPBenchmark.Kind) throws {
        if let connections, !(1...4096).contains(connections) { throw ValidationError("--connections: 1 to 4096") }
        if let clientThreads, !(1...64).contains(clientThreads) { throw ValidationError("--client-threads: 1 to 64") }
        if let responseBytes {
            guard kind == .tcpStream else { throw ValidationError("--response-bytes is an option of stack-tcp-stream only") }
            guard (1...(1 << 34)).contains(responseBytes) else { throw ValidationError("--response-bytes: 1 to 17179869184") }
        }
        if load != nil && kind != .http { throw ValidationError("--load is an option of stack-http only") }
    }
}

extension StackHTTPBenchmark.Load: ExpressibleByArgument {}

extension BenchCommand {
    func runStackHTTP(_ kind: StackHTTPBenchmark.Kind) throws {
        var c = StackHTTPBenchmark.Configuration(kind: kind)
        if let v = echo.rounds { c.rounds = v }
        if let v = echo.duration { c.seconds = v }
        if let v = echo.warmup { c.warmupSeconds = v }
        if let v = echo.queues { c.queues = v }
        if let v = echo.spinPasses { c.spinPasses = v }
        if let v = echo.pin { c.pinned = v == .on }
        if let v = http.connections { c.connections = v }
        if let v = http.clientThreads { c.clientThreads = v }
        if let v = http.responseBytes { c.responseBytes = v }
        if let v = http.load { c.load = v }
        c.segmentationOffload = !http.noGSO
        c.requests = n
        c.capSeconds = cap
        if case .named(let one) = impl, let i = StackHTTPBenchmark.Implementation(rawValue: one) {
            c.implementations = [i]
        }
        let fields: [(label: String, key: String, digits: Int)] = kind == .http
            ? [("requests/s", "rps", 0), ("median µs", "median_us", 1), ("p99 µs", "p99_us", 1)]
            : [("Gbit/s", "gbit_per_s", 3), ("MiB/s", "mib_per_s", 1)]
        try runStackBenchmark(name: kind.rawValue, unavailableReason: StackHTTPBenchmark.unavailableReason,
                              summary: { lines in
                                  stackBenchSummary(lines, workload: kind.rawValue,
                                                    implementations: StackHTTPBenchmark.Implementation.allCases.map(\.rawValue),
                                                    stack: StackHTTPBenchmark.Implementation.netstack.rawValue,
                                                    fields: fields)
                              }) { stop, report in
            try StackHTTPBenchmark(c).run(stop: stop, report: report)
        }
    }
}
