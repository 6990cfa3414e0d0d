// demux (specified in docs/BenchmarkWorkloads.md): packet input to socket
// queues. `--flows N` (WorkloadOptions.size) scales the flow count from the
// defined 4,096 (the same Zipf(s = 1.0) popularity over N ranks, the same
// 1M frames); the lines then also say how the table and the memory grew.
//
// Frame set: DemuxBenchmarkTraffic, built exactly as the C peer harness
// builds it (same seed and generator). An input thread pinned to CPU 0
// parses, looks up and enqueues every frame, in bursts of 32, for 10
// passes; a consumer pinned to CPU 1 drains every socket. Each socket queue
// holds 256 packets; a full queue drops and counts (queue_full).
//
// Packet "buffers": the frames stay in their pre-built slab; the word put on
// a socket queue is `(frameIndex << 4 | pass) + 1` (the C peer harness puts
// `frame pointer | pass`). Nothing is copied or allocated per packet.
//
// Readiness ("wakeups", as the C peer harness counts them): after each
// burst the input thread issues one full fence and, for each socket it
// enqueued to, sets the socket's bit in a shared ready set unless already
// set; a 0->1 transition is one wakeup. The consumer exchanges each non-zero
// bitmap word to 0 and drains the sockets it took; after 4,096 empty scans
// it announces that it sleeps, re-checks, and parks on a condition variable
// (`thread_wakeups` counts the input thread's signals).
//
// TCP: the fast path keeps per-connection receive state. Frames are replayed
// 10 times, so for pass p the input adds p x (the flow's bytes per pass) to
// the parsed sequence number, as if the frames had been re-stamped: TCP
// stays in sequence across passes (a queue_full drop is a loss, after which
// that flow's segments are out of sequence, answered by duplicate ACKs).
// Every in-sequence segment carries PSH, so the ACK policy ACKs each one
// from the fast path (a try-lock per TCP segment); ACKs go to a counting sink.
//
// Impls:
//   fastpath          Demux<QSBR>: RCUHashTable PCB tables, PCQ socket queues,
//                     SocketReadySet readiness. Each burst is parsed first and
//                     then handed to DemuxInput.deliver(batch:), which looks up
//                     all keys, touches all sockets, then enqueues (overlapping
//                     the cache misses of different packets). Checked with
//                     scripts/countarc.c (LD_PRELOAD): no malloc, retain or
//                     release per packet on the input or the consumer thread.
//   mutex_dictionary  the same pipeline with mutex-protected [FlowKey: Int]
//                     tables (exact, then specific local, then wildcard) and a
//                     mutex + Deque<UInt> per socket queue (no TCP state). The
//                     mutex is a pthread mutex (PthreadLocked): the thread
//                     sanitizer cannot see Synchronization.Mutex's contended
//                     path (futex in the uninstrumented stdlib) and would
//                     report false races; both are futex locks of equal cost.
//
// Files: this one (the workload, its sizes, the reports), DemuxThreads.swift
// (the input thread's frame and the consumer loop both impls share),
// DemuxResult.swift (the check and the result line), FastPathDemux.swift
// (the project's) and MutexDictionaryDemux.swift (the baseline).
import DemuxLab
import FastDemux
import SMPPrimitives
import Synchronization

let demuxWorkloads: [Workload] = [
    Workload(
        name: "demux",
        summary: "1M pre-built frames (4096 flows, Zipf; --flows N) x 10 passes: parse, look up and enqueue on CPU 0, drain 4128 sockets on CPU 1",
        impls: [
            ("fastpath", { runDemuxBench(impl: .fastpath, options: $0) }),
            ("mutex_dictionary", { runDemuxBench(impl: .mutexDictionary, options: $0) }),
        ]),
]

enum DemuxBenchImpl: String, Sendable {
    case fastpath
    case mutexDictionary = "mutex_dictionary"
}

let demuxPasses = 10
let demuxBurst = 32
let demuxSpinScans = 4096
let demuxQueueCapacity = 256

/// Builds (once per process and size) the frame set; building 1M frames
/// takes about a second, and `--impl all` runs share it. Keyed by
/// (frames, flows).
private let trafficCache = Mutex<[[Int]: DemuxBenchmarkTraffic]>([:])

func demuxTraffic(frameCount: Int, flowCount: Int = DemuxBenchmarkTraffic.flowCount) -> DemuxBenchmarkTraffic {
    let key = [frameCount, flowCount]
    if let t = trafficCache.withLock({ $0[key] }) { return t }
    let t = DemuxBenchmarkTraffic(frameCount: frameCount, flowCount: flowCount)
    trafficCache.withLock { $0[key] = t }
    return t
}

/// `--flows` (``WorkloadOptions/size``), or the defined 4,096.
func demuxFlowCount(options: WorkloadOptions) -> Int {
    options.size ?? DemuxBenchmarkTraffic.flowCount
}

/// The sizes: `--n` is the number of packets offered (frames x 10 passes);
/// the frame count is n / 10 rounded down to a burst multiple (at least one burst).
func demuxFrameCount(options: WorkloadOptions) -> Int {
    guard let n = options.n else { return DemuxBenchmarkTraffic.defaultFrameCount }
    let f = min(DemuxBenchmarkTraffic.defaultFrameCount, n / demuxPasses)
    return max(demuxBurst, f - f % demuxBurst)
}

/// What the input thread hands back when it is joined.
struct DemuxInputReport: Sendable {
    var start = 0.0, end = 0.0
    /// CPU time the thread used (not counting time it was preempted):
    /// comparable across runs on a busy machine.
    var cpuSeconds = 0.0
    /// Frames offered.
    var packets = 0
    var stats = DemuxStats()
    /// The thread's context switches during the run (getrusage deltas).
    var contextSwitches = ThreadContextSwitches()
}

/// What the consumer thread hands back when it is joined.
struct DemuxConsumerReport: Sendable {
    var start = 0.0, end = 0.0
    /// CPU time the thread used (see ``DemuxInputReport/cpuSeconds``).
    var cpuSeconds = 0.0
    /// Packets taken, per socket slot.
    var delivered: [Int] = []
    var deliveredTotal = 0
    var misdelivered = 0, orderErrors = 0, sleeps = 0, queueOps = 0
    var batches = Log2Histogram()
    /// The thread's context switches during the run (getrusage deltas).
    var contextSwitches = ThreadContextSwitches()
}

/// One run of either implementation.
struct DemuxRunReport: Sendable {
    var input: DemuxInputReport
    var consumer: DemuxConsumerReport
    /// `queue_full` drops per socket slot, as each socket counted them.
    var dropFull: [Int]
    var acks = 0
    var timedOut: Bool
    /// Resident memory once the sockets and tables were set up (before
    /// the threads started).
    var setupMemory = ResidentMemory()
    /// The fast path's connected table (nil for the baseline).
    var table: DemuxTableShape?
}

/// Shared stop/handshake words of one run.
final class DemuxControl: Sendable {
    let done = Atomic<Bool>(false)
    let abort = Atomic<Bool>(false)
    let barrier = SpinBarrier(parties: 2)
    /// Where the consumer last ran (noted once per scan), for the
    /// mutex_dictionary input's cross-core hand-off count (the fast path's
    /// sockets note their reader's CPU themselves).
    let consumerCPU = ObservedCPU()
}

func runDemuxBench(impl: DemuxBenchImpl, options: WorkloadOptions) -> BenchResult {
    let traffic = demuxTraffic(frameCount: demuxFrameCount(options: options), flowCount: demuxFlowCount(options: options))
    // This run's own peak (the frames stay resident and count in it).
    ResidentMemory.resetPeak()
    let load0 = CPULoadSample()
    let report = switch impl {
    case .fastpath: runFastPath(traffic, capSeconds: options.capSeconds)
    case .mutexDictionary: runMutexDictionary(traffic, capSeconds: options.capSeconds)
    }
    var result = demuxResult(impl: impl, traffic: traffic, report: report)
    result.extra.append(contentsOf: demuxScalingFields(traffic: traffic, report: report))
    if let otherLoad = CPULoadSample.otherLoadField(since: load0) { result.extra.append(otherLoad) }
    return result
}
