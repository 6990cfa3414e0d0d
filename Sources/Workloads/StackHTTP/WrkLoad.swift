// stack-http's load with wrk (Debian's wrk package, when installed): the
// same keep-alive load as the built-in client, from a process of its own
// in the client's namespace. wrk checks the status of each response (its
// "Non-2xx or 3xx responses") but not the bodies.
import Glibc

/// What one wrk run reported.
struct WrkResult: Sendable {
    var requests = 0
    var seconds = 0.0
    var medianNanoseconds = 0
    var p99Nanoseconds = 0
    var maxNanoseconds = 0
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx responses.
    var socketErrors = 0
    var badResponses = 0
    var output = ""
}

enum WrkLoad {
    /// wrk's path, if it is installed.
    static var path: String? {
        for dir in ["/usr/bin", "/usr/local/bin", "/bin"] where access(dir + "/wrk", X_OK) == 0 { return dir + "/wrk" }
        return nil
    }

    /// Runs wrk in namespace `ns` against `url` for `seconds` (whole
    /// seconds, at least 1: wrk's resolution), pinned to `cpu` with taskset
    /// when given.
    static func run(in ns: BenchNamespace, url: String, connections: Int, threads: Int, seconds: Double,
                    cpu: Int?) throws(EchoSetupError) -> WrkResult {
        guard let wrk = path else { throw EchoSetupError(description: "wrk is not installed") }
        var argv = ["ip", "netns", "exec", ns.name]
        if let cpu { argv += ["taskset", "-c", "\(cpu)"] }
        argv += [wrk, "-t", "\(min(threads, connections))", "-c", "\(connections)",
                 "-d", "\(max(1, Int(seconds.rounded(.up))))s", "--latency", url]
        let r = spawnCommand(argv, captureOutput: true)
        guard r.status == 0 else {
            throw EchoSetupError(description: argv.joined(separator: " ") + ": " + (r.stderr.isEmpty ? "exit \(r.status)" : r.stderr))
        }
        guard let parsed = parse(r.stdout) else {
            throw EchoSetupError(description: "cannot read wrk's output: " + r.stdout)
        }
        return parsed
    }

    /// Parses wrk's report (its `--latency` form).
    static func parse(_ text: String) -> WrkResult? {
        var w = WrkResult()
        w.output = text
        var sawTotal = false
        for raw in text.split(separator: "\n") {
            let f = raw.split(separator: " ", omittingEmptySubsequences: true)
            guard !f.isEmpty else { continue }
            if f.count >= 2 && f[0] == "50%" { w.medianNanoseconds = duration(f[1]) ?? 0 }
            if f.count >= 2 && f[0] == "99%" { w.p99Nanoseconds = duration(f[1]) ?? 0 }
            if f.count >= 5 && f[0] == "Latency" { w.maxNanoseconds = duration(f[3]) ?? 0 }
            // "12345 requests in 3.00s, 4.56MB read"
            if f.count >= 4 && f[1] == "requests" && f[2] == "in", let n = Int(f[0]) {
                w.requests = n
                w.seconds = Double(wrkSeconds: f[3].hasSuffix(",") ? f[3].dropLast() : f[3]) ?? 0
                sawTotal = true
            }
            // "Socket errors: connect 0, read 0, write 0, timeout 0"
            if f.count >= 2 && f[0] == "Socket" && f[1] == "errors:" {
                for v in f.dropFirst(2) where v.first?.isNumber == true {
                    w.socketErrors += Int(v.hasSuffix(",") ? v.dropLast() : v) ?? 0
                }
            }
            // "Non-2xx or 3xx responses: 5"
            if f.count >= 4 && f[0] == "Non-2xx", let n = Int(f[f.count - 1]) { w.badResponses = n }
        }
        return sawTotal ? w : nil
    }

    /// "612.00us", "1.23ms", "2.00s", "1.50m" in nanoseconds.
    static func duration(_ s: Substring) -> Int? {
        Double(wrkSeconds: s).map { Int(($0 * 1e9).rounded()) }
    }
}

extension Double {
    /// A wrk duration ("612.00us", "1.23ms", "2.00s", "1.50m") in seconds.
    fileprivate init?(wrkSeconds s: Substring) {
        let units: [(String, Double)] = [("us", 1e-6), ("ms", 1e-3), ("m", 60), ("s", 1), ("h", 3600)]
        for (suffix, scale) in units where s.hasSuffix(suffix) {
            guard let v = Double(s.dropLast(suffix.count)) else { return nil }
            self = v * scale
            return
        }
        return nil
    }
}
