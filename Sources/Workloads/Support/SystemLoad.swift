// What the kernel says about the machine while a workload runs: the CPU
// time other processes used (the `other_load` field of the demux and
// kernel-udp lines, reported the same way by the C peer harness), read
// from /proc.
import Glibc
import SMPPrimitives

/// CPUs kept busy by other processes: all-CPU busy time from /proc/stat
/// minus this process's CPU time, over the wall time between two samples.
/// 0 = quiet, up to the CPU count.
///
/// Concurrency: a value type; any thread. Taking a sample reads two /proc
/// files (a few system calls): not for hot paths.
struct CPULoadSample {
    var busyTicks: Double?
    var selfTicks: Double?
    var time = monotonicSeconds()

    init() {
        if let line = readTextLines("/proc/stat", limit: 1)?.first {
            let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            if v.count >= 8 { busyTicks = v[0] + v[1] + v[2] + v[5] + v[6] + v[7] }
        }
        if let line = readTextLines("/proc/self/stat", limit: 1)?.first, let close = line.lastIndex(of: ")") {
            let f = line[line.index(after: close)...].split(separator: " ")
            // Fields after the command: state is 0; utime/stime are 11 and 12.
            if f.count > 12, let u = Double(f[11]), let s = Double(f[12]) { selfTicks = u + s }
        }
    }

    /// CPUs other processes kept busy between `s` and this sample; nil if
    /// either could not read /proc.
    func otherLoad(since s: CPULoadSample) -> Double? {
        guard let b1 = busyTicks, let b0 = s.busyTicks, let s1 = selfTicks, let s0 = s.selfTicks,
              time > s.time else { return nil }
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        return max(0, ((b1 - b0) - (s1 - s0)) / hz / (time - s.time))
    }

    /// The `other_load` field of a result line, from `start` to now (two
    /// decimals; well above 0 means the timings are not meaningful); nil
    /// if /proc could not be read.
    static func otherLoadField(since start: CPULoadSample) -> (String, JSONValue)? {
        CPULoadSample().otherLoad(since: start).map { ("other_load", .double(($0 * 100).rounded() / 100)) }
    }
}

/// The first `limit` lines of the text file at `path` (each with its
/// newline; a line longer than 2,047 bytes comes in pieces), or nil if it
/// cannot be opened.
func readTextLines(_ path: String, limit: Int = .max) -> [String]? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var lines: [String] = []
    var buf = [CChar](repeating: 0, count: 2048)
    while lines.count < limit, fgets(&buf, Int32(buf.count), f) != nil {
        lines.append(buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
    }
    return lines
}
