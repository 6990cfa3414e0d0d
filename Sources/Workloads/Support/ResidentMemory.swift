// The process's resident memory, from /proc/self/status: the demux lines'
// `rss_setup_kb` and `rss_peak_kb` (the C peer harness reports the same
// fields with --flows).
import Glibc

/// Resident set size now and at its peak (`VmRSS`, `VmHWM`), in KiB.
///
/// Concurrency: a value type; any thread. Reading it opens a /proc file:
/// not for hot paths.
struct ResidentMemory: Sendable {
    var rssKB = 0
    var peakKB = 0

    /// The current values (0 for a field /proc did not give).
    static func now() -> ResidentMemory {
        var m = ResidentMemory()
        for line in readTextLines("/proc/self/status") ?? [] {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
            guard f.count >= 2, let kb = Int(f[1]) else { continue }
            if f[0] == "VmRSS:" { m.rssKB = kb } else if f[0] == "VmHWM:" { m.peakKB = kb }
        }
        return m
    }

    /// Starts a new peak (`VmHWM` := `VmRSS`; proc(5), /proc/pid/clear_refs
    /// value 5), so that the peak a run reports is its own and not that of
    /// an earlier implementation in the same process. False if the kernel
    /// refused (the peak then stays the process's).
    @discardableResult
    static func resetPeak() -> Bool {
        guard let f = fopen("/proc/self/clear_refs", "w") else { return false }
        defer { fclose(f) }
        return fputs("5", f) >= 0
    }
}
