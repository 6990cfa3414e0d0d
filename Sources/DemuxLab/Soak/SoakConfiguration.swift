import CSMPLinux
import FastDemux
import Glibc

// What a SoakRun is told and what it reports each interval.

/// How a ``SoakRun`` runs (a value; fixed when the run is made).
public struct SoakConfiguration: Sendable {
    /// Seconds of traffic in all.
    public var duration: Double
    /// Seconds between reports (each report pauses traffic to check
    /// conservation exactly, see ``SoakRun``).
    public var reportInterval: Double
    /// The per-flow sockets: a cap of 8,192 and a 2 s idle time, so that the
    /// flood traffic hits the cap within a fraction of a second and
    /// one-packet flows expire many times per report.
    public var flowLimits = FlowSocketLimits(maxSockets: 8192, idleTimeout: 2)
    /// Flows that send all the time (their sockets never expire).
    public var steadyFlows = 1024
    /// Receive-queue capacity of each socket (small: full queues and
    /// packets drained at close happen regularly).
    public var queueCapacity = 64
    /// Packet buffers in the pool.
    public var poolBuffers = 8192
    /// Sockets the churn thread binds (or connects) and then closes per
    /// round.
    public var churnBatch = 32
    /// The RSS growth over the second half of the run allowed, in bytes
    /// (the run also allows 5% of the mid-run RSS, whichever is larger).
    public var rssGrowthLimit = 8 << 20
    /// The heap bytes in use after the run (everything it made freed)
    /// beyond those before it, allowed (see `SoakRun.summarize`): what may
    /// stay is the Swift runtime's lazily made metadata and the C
    /// libraries' one-time state, a few KiB; a leaked 64-byte PCB node per
    /// close is about 2 MiB over a 15 s run of the churn.
    public var heapResidualLimit = 1 << 20
    /// Seconds a report waits for the packets in flight to settle before it
    /// declares conservation broken.
    public var settleTimeout = 10.0
    /// Seed of the traffic generator.
    public var seed: UInt64 = 0x50a4_0001

    public init(duration: Double, reportInterval: Double = 60) {
        precondition(duration > 0 && reportInterval > 0)
        self.duration = duration
        self.reportInterval = reportInterval
    }
}

/// One report of a ``SoakRun``: cumulative counters since the start, taken
/// with traffic paused and every packet in flight settled (a value).
public struct SoakReport: Sendable {
    /// 1-based report number, and seconds since the run started.
    public var index: Int
    public var seconds: Double
    /// Resident memory (VmRSS of /proc/self/status), bytes.
    public var residentBytes: Int
    /// RCU reclamation backlog of the PCB tables: nodes handed to call_rcu
    /// and not yet reclaimed, now and at the peak so far.
    public var reclamationPending: Int
    public var reclamationPeak: Int
    /// Packets offered to the demultiplexer, taken by the consumer, and
    /// dropped (by ``DemuxDropReason`` name; `socket_closed` includes
    /// packets drained from sockets at close).
    public var offered: Int
    public var delivered: Int
    public var drops: [(reason: String, count: Int)]
    /// Parser drops by ``DropReason`` name (part of `malformed` and
    /// `unsupported`).
    public var parseDrops: [(reason: String, count: Int)]
    /// Packets drained from sockets at close (flow sockets expiring and
    /// the churn thread's), part of `socket_closed` in ``drops``.
    public var drainedAtClose: Int
    /// offered == delivered + sum of drops, exactly, after the in-flight
    /// packets settled within ``SoakConfiguration/settleTimeout``.
    public var conserved: Bool
    /// Sockets open now (flow sockets and the churn thread's), PCB table
    /// entries (connected, bound).
    public var socketsOpen: Int
    public var connectedEntries: Int
    public var boundEntries: Int
    /// The flow socket table's counters (opened, expired, refused at the cap).
    public var flowSockets: FlowSocketCounters
    /// The churn thread's binds (bind, listen or connect) and closes.
    public var binds: Int
    public var closes: Int
    /// Packets offered per second since the previous report.
    public var packetsPerSecond: Double

    /// Sum of ``drops``.
    public var dropped: Int { drops.reduce(0) { $0 + $1.count } }
}

/// The end of a ``SoakRun``: every report and the verdicts.
public struct SoakSummary: Sendable {
    public var reports: [SoakReport]
    /// RSS growth from the report nearest mid-run to the last one, bytes
    /// (nil with fewer than 2 reports). Reported; the verdict uses
    /// ``growth``.
    public var secondHalfGrowth: Int?
    /// RSS growth over the judged window, from ``growthJudgedFrom`` to the
    /// last report (see `SoakRun.summarize`); nil if
    /// RSS was not judged (fewer than 2 reports, or the working set reached
    /// a new peak in the last interval).
    public var growth: Int?
    /// Seconds into the run of the report the judged window starts at.
    public var growthJudgedFrom: Double?
    /// The growth allowed (max of the configured limit and 5% of the RSS
    /// at the window's start).
    public var growthLimit: Int
    /// Heap bytes in use (glibc's `mallinfo2`: `uordblks + hblkhd`) after
    /// the run, everything it made freed, minus before it; nil if not
    /// measured.
    public var heapResidual: Int?
    /// The residual allowed (``SoakConfiguration/heapResidualLimit``).
    public var heapResidualLimit: Int
    /// Why the run failed (empty: it passed).
    public var failures: [String]

    public var passed: Bool { failures.isEmpty }
}

/// Heap bytes in use now: glibc's `mallinfo2()`, the bytes of allocated
/// chunks in every arena (`uordblks`) plus those of mmap-ed chunks
/// (`hblkhd`). Unlike RSS it falls when memory is freed. Any thread; walks
/// the arenas under their locks (microseconds), so not for hot paths.
public func heapBytesInUse() -> Int { Int(smp_heap_bytes_in_use()) }

/// Resident set size of this process in bytes (VmRSS of /proc/self/status),
/// or 0 if it cannot be read. Any thread; a few system calls, no Foundation.
public func residentMemoryBytes() -> Int {
    let fd = open("/proc/self/status", O_RDONLY)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
        if n <= 0 { break }
        bytes += buf[0..<n]
    }
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("VmRSS:") {
        // "VmRSS:     12345 kB"
        let digits = line.dropFirst(6).filter(\.isNumber)
        return (Int(String(digits)) ?? 0) * 1024
    }
    return 0
}
