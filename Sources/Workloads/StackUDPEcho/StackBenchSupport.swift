// What the stack-against-kernel benchmarks (stack-udp-echo, stack-http,
// stack-tcp-stream) share: the rounds (every implementation once per
// round, in order, on one topology, and the round's ratios on its lines)
// and the CPU time of a window.
import Glibc

/// One implementation's window of one round: its line, its rate (the
/// ratio's numerator or denominator) and its latency (0: none measured).
struct RoundWindow {
    var line: BenchResult
    var rate: Double
    var latency: Double
}

/// Runs `rounds` rounds; each runs `runOne` for every implementation of
/// `implementations` in order (a, b, a, b, …), then adds to both lines of
/// the round `ratio` (stack rate ÷ kernel rate) and `latency_ratio` (stack
/// latency ÷ kernel latency) when the kernel's is non-zero, and hands them
/// to `report`. Stops before the next window once `stop` is set. Returns
/// every line.
func alternatingRounds<Implementation: Equatable>(
    _ rounds: Int, _ implementations: [Implementation], stack: Implementation, kernel: Implementation,
    stop: EchoStopFlag, report: (BenchResult) -> Void,
    runOne: (Implementation, _ round: Int) throws -> RoundWindow
) throws -> [BenchResult] {
    var all: [BenchResult] = []
    for round in 1...rounds {
        var windows: [(Implementation, RoundWindow)] = []
        for impl in implementations {
            if stop.isSet { break }
            windows.append((impl, try runOne(impl, round)))
        }
        let s = windows.first { $0.0 == stack }?.1, k = windows.first { $0.0 == kernel }?.1
        for (_, w) in windows {
            var line = w.line
            if let s, let k {
                if k.rate > 0 { line.extra.append(("ratio", .double(s.rate / k.rate))) }
                if k.latency > 0 && s.latency > 0 { line.extra.append(("latency_ratio", .double(s.latency / k.latency))) }
            }
            report(line)
            all.append(line)
        }
        if stop.isSet { break }
    }
    return all
}

/// The `cpu` field of a window: CPUs used by the client's threads, the
/// server's threads (by thread-name prefix), softirq and the whole machine
/// over the window, and the same as µs per unit of work (`units` of
/// `unit`: `us_per_request`, ...).
func cpuField(from start: ProcessCPU, to end: ProcessCPU, client: [String], server: [String], window: Double,
              units: Double, unit: String) -> JSONValue {
    let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
    let window = max(window, 1e-9)
    let clientTicks = Double(end.ticks(since: start, prefixes: client))
    let serverTicks = Double(end.ticks(since: start, prefixes: server))
    let busyTicks = Double(end.machineBusy - start.machineBusy)
    let softirqTicks = Double(end.machineSoftirq - start.machineSoftirq)
    let per = { (ticks: Double) -> JSONValue in .double(units > 0 ? ticks / hz * 1e6 / units : 0) }
    let cpus = { (ticks: Double) -> JSONValue in .double(ticks / hz / window) }
    return .object([
        ("client_cpus", cpus(clientTicks)), ("server_cpus", cpus(serverTicks)),
        ("softirq_cpus", cpus(softirqTicks)), ("machine_cpus", cpus(busyTicks)),
        ("client_us_per_" + unit, per(clientTicks)), ("server_us_per_" + unit, per(serverTicks)),
        ("machine_us_per_" + unit, per(busyTicks)),
    ])
}

/// The phases of a client run, shared by the stack benchmarks' clients:
/// warm-up (load, not counted), the measured window (until `seconds`
/// passed, or until the caller has enough replies, never past the cap),
/// then a drain (the replies still in flight, for at most `drainSeconds`).
/// Records the window's length and the process's CPU time at its ends.
///
/// Concurrency: a value owned by one client thread.
struct LoadPhases {
    let windowStart: Int
    let windowCap: Int
    let drain: Int
    private(set) var measuring = false
    private(set) var draining = false
    private var began = 0
    private var drainDeadline = 0
    private(set) var measuredSeconds = 0.0
    private(set) var cpuAtStart = ProcessCPU()
    private(set) var cpuAtEnd = ProcessCPU()

    /// `start` (ns of `monotonicNanoseconds()`): when the load began.
    /// With `byCount` the window ends when the caller says it has enough
    /// (bounded by `capSeconds`), otherwise after `seconds`.
    init(start: Int, warmupSeconds: Double, seconds: Double, byCount: Bool, capSeconds: Double, drainSeconds: Double) {
        windowStart = start + Int(warmupSeconds * 1e9)
        windowCap = windowStart + Int(min(capSeconds, byCount ? capSeconds : seconds) * 1e9)
        drain = Int(drainSeconds * 1e9)
    }

    /// Moves to `now`: opens the window after the warm-up; closes it at
    /// its end, when `enough` or on `stop`, and starts the drain. True
    /// when the run is over (drained: nothing `outstanding`, or the drain's
    /// deadline passed).
    mutating func advance(now: Int, enough: Bool, stop: Bool, outstanding: Int) -> Bool {
        if !measuring && !draining && now >= windowStart {
            measuring = true
            began = now
            cpuAtStart = ProcessCPU()
        }
        if !draining && (now >= windowCap || enough || stop) {
            if measuring {
                measuredSeconds = Double(now - began) / 1e9
                cpuAtEnd = ProcessCPU()
            }
            measuring = false
            draining = true
            drainDeadline = now + drain
        }
        return draining && (outstanding == 0 || now >= drainDeadline)
    }
}
