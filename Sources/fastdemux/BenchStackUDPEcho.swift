// `bench stack-udp-echo`: its options, the run with SIGINT handling, and
// the summary over the rounds.
import ArgumentParser
import Glibc
import SMPPrimitives
import Workloads

/// The options of stack-udp-echo, of which stack-http and stack-tcp-stream
/// share --rounds, --duration, --warmup, --queues, --spin-passes and --pin
/// (all optional, so that `bench` can refuse them for the other
/// workloads).
struct StackUDPEchoOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Rounds, each running both servers once (default 3).", valueName: "N"))
    var rounds: Int?

    @Option(help: ArgumentHelp("Client sockets (default 8).", valueName: "N"))
    var sockets: Int?

    @Option(help: ArgumentHelp("Requests in flight per client socket (default 16).", valueName: "K"))
    var inflight: Int?

    @Option(help: ArgumentHelp("UDP payload bytes per request, 16 to 1472 (default 64).", valueName: "BYTES"))
    var payload: Int?

    @Option(help: ArgumentHelp("Measured seconds per server per round (default 3; --n counts replies instead).",
                               valueName: "SECONDS"))
    var duration: Double?

    @Option(help: ArgumentHelp("Unmeasured load before each window (default 0.5).", valueName: "SECONDS"))
    var warmup: Double?

    @Option(help: ArgumentHelp("Stack cores = TUN queues = kernel server threads (default 1).", valueName: "N"))
    var queues: Int?

    @Option(name: .customLong("spin-passes"),
            help: ArgumentHelp("Stack executors' idle passes before parking (default: the stack's).", valueName: "N"))
    var spinPasses: Int?

    @Option(help: ArgumentHelp("Pin server thread k to CPU k and the client to the last CPU (default on).",
                               valueName: "on|off"))
    var pin: OnOff?

    /// The options given, by their flag.
    var given: [String] { udpOnlyGiven + sharedGiven }

    /// The options only stack-udp-echo has, given.
    var udpOnlyGiven: [String] {
        var g: [String] = []
        if sockets != nil { g.append("--sockets") }
        if inflight != nil { g.append("--inflight") }
        if payload != nil { g.append("--payload") }
        return g
    }

    /// The options stack-http and stack-tcp-stream share with it, given.
    var sharedGiven: [String] {
        var g: [String] = []
        if rounds != nil { g.append("--rounds") }
        if duration != nil { g.append("--duration") }
        if warmup != nil { g.append("--warmup") }
        if queues != nil { g.append("--queues") }
        if spinPasses != nil { g.append("--spin-passes") }
        if pin != nil { g.append("--pin") }
        return g
    }

    func validate() throws {
        if let rounds, rounds < 1 { throw ValidationError("--rounds must be at least 1") }
        if let sockets, !(1...4096).contains(sockets) { throw ValidationError("--sockets: 1 to 4096") }
        if let inflight, !(1...4096).contains(inflight) { throw ValidationError("--inflight: 1 to 4096") }
        if let payload, !(16...1472).contains(payload) { throw ValidationError("--payload: 16 to 1472 bytes") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be positive") }
        if let warmup, !(warmup >= 0) { throw ValidationError("--warmup must not be negative") }
        if let queues, !(1...64).contains(queues) { throw ValidationError("--queues: 1 to 64") }
        if let spinPasses, spinPasses < 0 { throw ValidationError("--spin-passes must not be negative") }
    }
}

extension BenchCommand {
    func runStackUDPEcho() throws {
        var c = StackUDPEchoBenchmark.Configuration()
        if let v = echo.rounds { c.rounds = v }
        if let v = echo.sockets { c.sockets = v }
        if let v = echo.inflight { c.inflight = v }
        if let v = echo.payload { c.payloadBytes = v }
        if let v = echo.duration { c.seconds = v }
        if let v = echo.warmup { c.warmupSeconds = v }
        if let v = echo.queues { c.queues = v }
        if let v = echo.spinPasses { c.spinPasses = v }
        if let v = echo.pin { c.pinned = v == .on }
        c.requests = n
        c.capSeconds = cap
        if case .named(let one) = impl, let i = StackUDPEchoBenchmark.Implementation(rawValue: one) {
            c.implementations = [i]
        }

        try runStackBenchmark(name: StackUDPEchoBenchmark.workload, unavailableReason: StackUDPEchoBenchmark.unavailableReason,
                              summary: stackUDPEchoSummary) { stop, report in
            try StackUDPEchoBenchmark(c).run(stop: stop, report: report)
        }
    }

    /// Runs a stack-against-kernel benchmark (`body`, which reports each
    /// line as its round ends) with SIGINT/SIGTERM handling, prints its
    /// lines (JSON or summaries) and `summary` of them, and exits as
    /// `bench` does: 2 if it cannot run here (`unavailableReason`), 1 if
    /// a line is unchecked, 128 + the signal if interrupted.
    func runStackBenchmark(name: String, unavailableReason: String?, summary: ([BenchResult]) -> String,
                           _ body: (EchoStopFlag, (BenchResult) -> Void) throws -> [BenchResult]) throws {
        if let reason = unavailableReason {
            writeStderr("fastdemux bench \(name): error: \(reason)")
            throw ExitCode(2)
        }
        // SIGINT/SIGTERM are taken by a watcher thread that asks the run to
        // stop; the run then deletes its namespaces as on any other exit.
        // Blocked before any thread starts, so every thread inherits it.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &signals, &previous)
        let stop = EchoStopFlag()
        let done = EchoStopFlag()
        let watcher = PinnedThread(name: "bench-signals") { () -> Int32 in
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGINT)
            sigaddset(&set, SIGTERM)
            while !done.isSet {
                var timeout = timespec(tv_sec: 0, tv_nsec: 100_000_000)
                let s = sigtimedwait(&set, nil, &timeout)
                if s > 0 {
                    stop.set()
                    return s
                }
            }
            return 0
        }
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }

        let json = self.json
        var lines: [BenchResult] = []
        var failure: (any Error)?
        do {
            lines = try body(stop) { line in
                if json {
                    print((try? line.jsonLine()) ?? "{}")
                } else {
                    print(line.summary)
                }
                fflush(nil)
            }
        } catch {
            failure = error
        }
        done.set()
        let signal = watcher.join()
        if let failure {
            writeStderr("fastdemux bench \(name): error: \(failure)")
            throw ExitCode.failure
        }
        let text = summary(lines)
        if json { writeStderr(text) } else { print(text) }
        fflush(nil)
        if signal != 0 {
            writeStderr("fastdemux bench \(name): interrupted; namespaces and devices removed")
            throw ExitCode(128 + signal)
        }
        if lines.contains(where: { !$0.checked }) { throw ExitCode(1) }
    }
}

/// Median and spread over the rounds: requests/s of each server and the
/// ratio stack/kernel.
func stackUDPEchoSummary(_ lines: [BenchResult]) -> String {
    stackBenchSummary(lines, workload: StackUDPEchoBenchmark.workload,
                      implementations: StackUDPEchoBenchmark.Implementation.allCases.map(\.rawValue),
                      stack: StackUDPEchoBenchmark.Implementation.netstack.rawValue,
                      fields: [("requests/s", "rps", 0), ("median RTT µs", "median_us", 1), ("p99 µs", "p99_us", 1)])
}

/// Median and spread over the rounds of each `fields` value (label, JSON
/// key, decimals) per implementation, and of the ratio stack/kernel.
func stackBenchSummary(_ lines: [BenchResult], workload: String, implementations: [String], stack: String,
                       fields: [(label: String, key: String, digits: Int)]) -> String {
    func number(_ v: JSONValue?) -> Double? {
        switch v {
        case .double(let d)?: return d
        case .int(let i)?: return Double(i)
        default: return nil
        }
    }
    func spread(_ values: [Double], _ digits: Int) -> String {
        guard !values.isEmpty else { return "-" }
        let s = values.sorted()
        let median = s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        return "\(fixed(median, digits)) (min \(fixed(s.first!, digits)), max \(fixed(s.last!, digits)), "
            + "\(s.count) round\(s.count == 1 ? "" : "s"))"
    }
    var text = ["\(workload) summary, median over rounds:"]
    for impl in implementations {
        let mine = lines.filter { $0.impl == impl }
        guard !mine.isEmpty else { continue }
        text.append("  \(padRight(impl, 16)) " + fields.map { f in
            "\(f.label) \(spread(mine.compactMap { number($0[extra: f.key]) }, f.digits))"
        }.joined(separator: ", "))
    }
    let ratios = lines.filter { $0.impl == stack }.compactMap { number($0[extra: "ratio"]) }
    if !ratios.isEmpty { text.append("  ratio stack/kernel \(spread(ratios, 3))") }
    return text.joined(separator: "\n")
}

/// `--pin on|off`.
enum OnOff: String, ExpressibleByArgument, CaseIterable {
    case on, off
}
