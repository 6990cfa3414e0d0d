// demux (BENCHMARKS.md): packet input to socket queues.
//
// Frame set: DemuxBenchmarkTraffic, built exactly as the C peer builds it
// (shared/peers/demux.c, same seed and generator). An input thread pinned to
// CPU 0 parses, looks up and enqueues every frame, in bursts of 32, for 10
// passes; a consumer pinned to CPU 1 drains every socket. Each socket queue
// holds 256 packets; a full queue drops and counts (queue_full).
//
// Packet "buffers": the frames stay in their pre-built slab; the word put on
// a socket queue is `(frameIndex << 4 | pass) + 1` (the C peer puts
// `frame pointer | pass`). Nothing is copied or allocated per packet.
//
// Readiness ("wakeups", as the C peer counts them): after each burst the
// input thread issues one full fence and, for each socket it enqueued to,
// sets the socket's bit in a shared ready set unless already set; a 0->1
// transition is one wakeup. The consumer exchanges each non-zero bitmap word
// to 0 and drains the sockets it took; after 4,096 empty scans it announces
// that it sleeps, re-checks, and parks on a condition variable
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
import DemuxLab
import DequeModule
import FastDemux
import Glibc
import SMPPrimitives
import Synchronization

let demuxWorkloads: [Workload] = [
    Workload(
        name: "demux",
        summary: "1M pre-built frames (4096 flows, Zipf) x 10 passes: parse, look up and enqueue on CPU 0, drain 4128 sockets on CPU 1",
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
/// takes about a second, and `--impl all` runs share it.
private let trafficCache = Mutex<[Int: DemuxBenchmarkTraffic]>([:])

func demuxTraffic(frameCount: Int) -> DemuxBenchmarkTraffic {
    if let t = trafficCache.withLock({ $0[frameCount] }) { return t }
    let t = DemuxBenchmarkTraffic(frameCount: frameCount)
    trafficCache.withLock { $0[frameCount] = t }
    return t
}

/// The sizes: `--n` is the number of packets offered (frames x 10 passes);
/// the frame count is n / 10 rounded down to a burst multiple (at least one burst).
func demuxFrameCount(options: WorkloadOptions) -> Int {
    guard let n = options.n else { return DemuxBenchmarkTraffic.defaultFrameCount }
    let f = min(DemuxBenchmarkTraffic.defaultFrameCount, n / demuxPasses)
    return max(demuxBurst, f - f % demuxBurst)
}

/// What the two threads report.
final class DemuxRunReport: @unchecked Sendable {
    // @unchecked Sendable: each field is written by exactly one thread before
    // it is joined, and read by the driver after the joins.
    var inputStart = 0.0, inputEnd = 0.0, consumerStart = 0.0, consumerEnd = 0.0
    /// CPU time the input / consumer thread used (not counting time it was
    /// preempted): comparable across runs on a busy machine.
    var inputCPUSeconds = 0.0, consumerCPUSeconds = 0.0
    var stats = DemuxStats()
    var input = 0
    var delivered = [Int](repeating: 0, count: DemuxBenchmarkTraffic.socketCount)
    var dropFull = [Int](repeating: 0, count: DemuxBenchmarkTraffic.socketCount)
    var misdelivered = 0, orderErrors = 0, consumerSleeps = 0, deliveredTotal = 0
    var consumerQueueOps = 0
    var consumerBatches = Log2Histogram()
    var acks = 0
    var timedOut = false
}

func runDemuxBench(impl: DemuxBenchImpl, options: WorkloadOptions) -> BenchResult {
    let traffic = demuxTraffic(frameCount: demuxFrameCount(options: options))
    let report = DemuxRunReport()
    let load0 = CPULoadSample()
    switch impl {
    case .fastpath: runFastPath(traffic, report: report, capSeconds: options.capSeconds)
    case .mutexDictionary: runMutexDictionary(traffic, report: report, capSeconds: options.capSeconds)
    }
    var result = demuxResult(impl: impl, traffic: traffic, report: report)
    if let other = CPULoadSample().otherLoad(since: load0) {
        result.extra.append(("other_load", .double((other * 100).rounded() / 100)))
    }
    return result
}

/// CPUs kept busy by other processes (as the C peers report `other_load`):
/// all-CPU busy time from /proc/stat minus this process's CPU time, over
/// the wall time between two samples. 0 = quiet, up to the CPU count.
struct CPULoadSample {
    var busyTicks: Double?
    var selfTicks: Double?
    var time = monotonicSeconds()

    init() {
        if let line = Self.firstLine("/proc/stat") {
            let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            if v.count >= 8 { busyTicks = v[0] + v[1] + v[2] + v[5] + v[6] + v[7] }
        }
        if let line = Self.firstLine("/proc/self/stat"), let close = line.lastIndex(of: ")") {
            let f = line[line.index(after: close)...].split(separator: " ")
            // Fields after the command: state is 0; utime/stime are 11 and 12.
            if f.count > 12, let u = Double(f[11]), let s = Double(f[12]) { selfTicks = u + s }
        }
    }

    func otherLoad(since s: CPULoadSample) -> Double? {
        guard let b1 = busyTicks, let b0 = s.busyTicks, let s1 = selfTicks, let s0 = s.selfTicks,
              time > s.time else { return nil }
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        return max(0, ((b1 - b0) - (s1 - s0)) / hz / (time - s.time))
    }

    static func firstLine(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 1024)
        guard fgets(&buf, Int32(buf.count), f) != nil else { return nil }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

private func demuxResult(impl: DemuxBenchImpl, traffic: DemuxBenchmarkTraffic, report r: DemuxRunReport) -> BenchResult {
    // A run stopped at the cap checks what it did (and skips the per-socket
    // expected counts, which assume all passes).
    let complete = !r.timedOut
    let offered = complete ? traffic.frameCount * demuxPasses : r.input
    let s = r.stats
    let dropFull = r.dropFull.reduce(0, +)
    var mismatches = 0
    for i in 0..<DemuxBenchmarkTraffic.socketCount
    where complete && r.delivered[i] + r.dropFull[i] != traffic.perSocketPerPass[i] * demuxPasses {
        mismatches += 1
    }
    let dropped = s.drops.total
    let checked = r.input == offered && s.offered == offered
        && r.deliveredTotal + dropped == offered && dropFull == s.drops[.queueFull]
        && mismatches == 0 && r.misdelivered == 0 && r.orderErrors == 0
        && s.drops[.noSocket] == 0 && s.drops[.malformed] == 0 && s.drops[.unsupported] == 0
        && s.drops[.socketClosed] == 0
    let t0 = min(r.inputStart, r.consumerStart)
    let seconds = r.consumerEnd - t0
    let delivered = max(r.deliveredTotal, 1)
    func per(_ v: Int) -> JSONValue { .double((Double(v) / Double(delivered) * 10_000).rounded() / 10_000) }
    var extra: [(String, JSONValue)] = [
        ("complete", .bool(complete)),
        ("input_mops", .double(Double(offered) / (r.inputEnd - r.inputStart) / 1e6)),
        ("input_cpu_ns_per_packet", .double(r.inputCPUSeconds * 1e9 / Double(max(offered, 1)))),
        ("consumer_cpu_ns_per_delivered", .double(r.consumerCPUSeconds * 1e9 / Double(delivered))),
        ("delivered", .int(r.deliveredTotal)),
        ("dropped", .int(dropped)),
        ("dropped_by_reason", .object(s.drops.byReason.map { ($0.0, .int($0.1)) })),
        ("wakeups", .int(s.sync.wakeups)),
        ("wakeups_per_delivered", per(s.sync.wakeups)),
        ("thread_wakeups", .int(s.sync.threadWakeups)),
        ("consumer_sleeps", .int(r.consumerSleeps)),
        ("misdelivered", .int(r.misdelivered)),
        ("order_errors", .int(r.orderErrors)),
        ("socket_count_mismatches", .int(mismatches)),
        ("frames", .int(traffic.frameCount)),
        ("passes", .int(demuxPasses)),
    ]
    var stats: [(String, JSONValue)] = [
        ("input_queue_ops_per_delivered", per(s.socketQueue.queueOps)),
        ("input_atomic_rmws_per_delivered", per(s.sync.atomicRMWs)),
        ("input_lock_acquisitions_per_delivered", per(s.sync.lockAcquisitions)),
        ("input_contended_per_delivered", per(s.sync.contendedAcquisitions)),
        ("cross_core_handoffs_per_delivered", per(s.sync.crossCoreHandoffs)),
        ("consumer_queue_ops_per_delivered", per(r.consumerQueueOps)),
        ("queue_depth_high_water", .int(s.socketQueue.highWater)),
        ("queue_depth_log2_histogram", histogramJSON(s.socketQueue.depth)),
        ("enqueue_batch_log2_histogram", histogramJSON(s.socketQueue.batchSizes)),
        ("drain_batch_log2_histogram", histogramJSON(r.consumerBatches)),
    ]
    if impl == .fastpath {
        stats.append(("tcp_immediate_acks", .int(s.immediateACKs)))
        stats.append(("tcp_deferred_acks", .int(s.deferredACKs)))
        stats.append(("tcp_out_of_sequence", .int(s.outOfSequence)))
    }
    extra.append(("stats", .object(stats)))
    var notes: [String] = []
    switch impl {
    case .fastpath:
        notes.append("Demux<QSBR>: PacketParser, batch delivery per burst of 32 (lookups, socket touches, enqueues in passes), RCUHashTable exact 5-tuple then specific/wildcard bound table, PCQ(256) per socket, SocketReadySet + one fence per burst; TCP receive state + try-lock ACK per in-sequence segment; packet word = frame index|pass into the frame slab")
    case .mutexDictionary:
        notes.append("same pipeline: PacketParser, mutex-protected [FlowKey: Int] exact/specific/wildcard lookups (one lock each), mutex + Deque<UInt> per socket (256 max), same ready set; no TCP state")
    }
    if let pin = pinningNote(requiredCPUs: 2) { notes.append(pin) }
    if r.timedOut { notes.append("stopped at the wall-clock cap") }
    return .throughput(workload: "demux", impl: impl.rawValue, ops: offered, seconds: seconds,
                       checked: checked, note: notes.joined(separator: "; "), extra: extra)
}

/// A histogram as `[[lower bound, count], ...]` (non-empty buckets).
private func histogramJSON(_ h: Log2Histogram) -> JSONValue {
    .array(h.nonEmptyBuckets.map { .array([.int($0.lowerBound), .int($0.count)]) })
}

/// Shared stop/handshake words of one run.
final class DemuxControl: Sendable {
    let done = Atomic<Bool>(false)
    let abort = Atomic<Bool>(false)
    let barrier = SpinBarrier(parties: 2)
}

// MARK: fastpath

private func runFastPath(_ traffic: DemuxBenchmarkTraffic, report: DemuxRunReport, capSeconds: Double) {
    let demux = Demux<QSBR>(configuration: .init(queueCapacity: demuxQueueCapacity, ackPolicy: .default,
                                                 expectedConnections: DemuxBenchmarkTraffic.flowCount))
    let readySet = SocketReadySet(capacity: DemuxBenchmarkTraffic.socketCount)
    var sockets: [Socket] = []
    sockets.reserveCapacity(DemuxBenchmarkTraffic.socketCount)
    for (i, f) in traffic.flows.enumerated() {
        let s = demux.makeSocket(f.proto == 6 ? .tcp : .udp)
        try! s.connect(to: InetEndpoint(IPAddress(ipv4: f.saddr), f.sport),
                       from: InetEndpoint(IPAddress(ipv4: f.daddr), f.dport),
                       initialReceiveSequence: f.proto == 6 ? traffic.initialSequence[i] : nil)
        sockets.append(s)
    }
    for p in traffic.listenPorts {
        let s = demux.makeSocket(.tcp)
        try! s.bind(InetEndpoint(.wildcard(.ipv4), p))
        try! s.listen()
        sockets.append(s)
    }
    for p in traffic.wildcardPorts {
        let s = demux.makeSocket(.udp)
        try! s.bind(InetEndpoint(.wildcard(.ipv4), p))
        sockets.append(s)
    }
    for s in sockets {
        s.readerCPU = 1 % onlineCPUCount
        readySet.add(s)
    }
    let control = DemuxControl()
    let ackCount = Atomic<Int>(0)
    let frames = traffic.frameCount
    let socketTable = sockets.map(SocketReference.init(unretained:))

    let consumer = PinnedThread(cpu: 1, name: "demux-consumer") {
        demuxConsume(traffic, report: report, control: control, capSeconds: capSeconds,
                     readySet: readySet,
                     drain: { slot, body in
                         socketTable[slot].withSocket { $0.receive(upTo: demuxQueueCapacity) { body($0.word) } }
                     })
    }
    let input = PinnedThread(cpu: 0, name: "demux-input") {
        QSBR.registerThread()
        let parser = PacketParser()
        let ctx = demux.makeInput(cpu: 0, ackSink: { acks in ackCount.add(acks.count, ordering: .relaxed) })
        let batch = UnsafeMutablePointer<DemuxPacket>.allocate(capacity: demuxBurst)
        defer { batch.deallocate() }
        let start = monotonicSeconds()
        let deadline = start + capSeconds
        control.barrier.wait()
        let t0 = monotonicSeconds()
        let cpu0 = threadCPUSeconds()
        var input = 0
        passes: for pass in 0..<demuxPasses {
            for base in stride(from: 0, to: frames, by: demuxBurst) {
                ctx.burst { b in
                    // Parse the burst, then deliver it as a batch (lookups,
                    // socket touches and enqueues in separate passes).
                    var m = 0
                    for i in base..<(base + demuxBurst) {
                        input &+= 1
                        let word = PacketRef(word: DemuxBenchmarkTraffic.packetWord(frame: i, pass: pass))
                        switch parser.parse(traffic.frame(i), linkType: .ethernet) {
                        case .packet(let p):
                            var tcp = p.tcp
                            if tcp != nil {
                                // Replay as if re-stamped: advance by the flow's bytes per pass.
                                tcp!.sequenceNumber &+= UInt32(truncatingIfNeeded: pass)
                                    &* traffic.sequenceAdvance[Int(traffic.truth[i])]
                            }
                            batch[m] = DemuxPacket(packet: word, key: p.flow, tcp: tcp, payloadLength: p.payloadLength)
                            m += 1
                        case .dropped(let reason):
                            b.drop(parseReason: reason)
                        }
                    }
                    b.deliver(batch: UnsafeBufferPointer(start: batch, count: m)) { _, _ in }
                }
                if base & 1023 == 0 {
                    ctx.quiescent()
                    if base & 0xffff == 0 && monotonicSeconds() > deadline {
                        control.abort.store(true, ordering: .relaxed)
                        break passes
                    }
                }
            }
        }
        let t1 = monotonicSeconds()
        report.inputCPUSeconds = threadCPUSeconds() - cpu0
        // Release: everything enqueued happens-before the consumer's final scan.
        control.done.store(true, ordering: .releasing)
        readySet.wakeReader()
        QSBR.unregisterThread()
        report.inputStart = t0
        report.inputEnd = t1
        report.input = input
        report.stats = ctx.stats
    }
    input.join()
    consumer.join()
    report.acks = ackCount.load(ordering: .relaxed)
    report.timedOut = control.abort.load(ordering: .relaxed)
    for (i, s) in sockets.enumerated() {
        report.dropFull[i] = s.counters.droppedQueueFull
    }
    demux.table.close(sockets)
    withExtendedLifetime(readySet) {}
}

/// The consumer loop shared by both impls (as the C peer's): scan the ready
/// set, drain every socket taken, check truth and per-socket order; after
/// `demuxSpinScans` empty scans, park.
private func demuxConsume(
    _ traffic: DemuxBenchmarkTraffic, report: DemuxRunReport, control: DemuxControl, capSeconds: Double,
    readySet: SocketReadySet,
    drain: (Int, (UInt) -> Void) -> Int
) {
    let n = DemuxBenchmarkTraffic.socketCount
    var lastSeq = [Int](repeating: -1, count: n)
    var delivered = [Int](repeating: 0, count: n)
    var misdelivered = 0, orderErrors = 0, sleeps = 0, total = 0, queueOps = 0
    var batches = Log2Histogram()
    let frames = traffic.frameCount
    control.barrier.wait()
    let t0 = monotonicSeconds()
    let cpu0 = threadCPUSeconds()
    lastSeq.withUnsafeMutableBufferPointer { last in
        delivered.withUnsafeMutableBufferPointer { del in
            sleeps = pollUntilFinished(spinning: demuxSpinScans, {
                let done = control.done.load(ordering: .acquiring)
                var found = 0
                _ = readySet.takeReady { slot in
                    var last_ = last[slot]
                    queueOps &+= 1
                    let got = drain(slot) { word in
                        let (idx, pass) = DemuxBenchmarkTraffic.decode(word)
                        if idx >= frames || Int(traffic.truth[idx]) != slot { misdelivered &+= 1 }
                        let sq = pass * frames + idx
                        if last_ >= 0 && sq <= last_ { orderErrors &+= 1 }
                        last_ = sq
                    }
                    last[slot] = last_
                    del[slot] &+= got
                    batches.record(got)
                    found &+= got
                }
                if found > 0 {
                    total &+= found
                    return .progress
                }
                // `done` was read before this (empty) scan, so everything
                // enqueued before it has been taken.
                if done { return .finished }
                // Aborted: keep draining (without parking) until the input
                // thread is done.
                return control.abort.load(ordering: .relaxed) ? .progress : .idle
            }, park: {
                readySet.parkUntilReady(extraCheck: { control.done.load(ordering: .acquiring) })
            })
        }
    }
    let t1 = monotonicSeconds()
    report.consumerCPUSeconds = threadCPUSeconds() - cpu0
    report.consumerStart = t0
    report.consumerEnd = t1
    report.delivered = delivered
    report.misdelivered = misdelivered
    report.orderErrors = orderErrors
    report.consumerSleeps = sleeps
    report.deliveredTotal = total
    report.consumerQueueOps = queueOps
    report.consumerBatches = batches
}

// MARK: mutex_dictionary

/// A socket queue of the baseline: a mutex around a deque, bounded at 256.
private final class MutexDequeSocket: Sendable {
    let queue = PthreadLocked<Deque<UInt>>(Deque(minimumCapacity: demuxQueueCapacity))
    let droppedFull = Atomic<Int>(0)
}

/// A value behind a ``PthreadMutex`` (see the file header for why not
/// Synchronization.Mutex here).
final class PthreadLocked<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is only touched while holding `mutex`.
    private let mutex = PthreadMutex()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    @inline(__always)
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        mutex.lock()
        defer { mutex.unlock() }
        return try body(&value)
    }
}

private func runMutexDictionary(_ traffic: DemuxBenchmarkTraffic, report: DemuxRunReport, capSeconds: Double) {
    var exact: [FlowKey: Int] = [:]
    var boundTable: [FlowKey: Int] = [:]
    for (i, f) in traffic.flows.enumerated() { exact[f.key] = i }
    for (j, p) in traffic.listenPorts.enumerated() {
        boundTable[.bound(.tcp, local: .wildcard(.ipv4), port: p)] = DemuxBenchmarkTraffic.flowCount + j
    }
    for (j, p) in traffic.wildcardPorts.enumerated() {
        boundTable[.bound(.udp, local: .wildcard(.ipv4), port: p)] =
            DemuxBenchmarkTraffic.flowCount + DemuxBenchmarkTraffic.listenCount + j
    }
    let exactTable = PthreadLocked(exact)
    let bound = PthreadLocked(boundTable)
    let sockets = (0..<DemuxBenchmarkTraffic.socketCount).map { _ in MutexDequeSocket() }
    let readySet = SocketReadySet(capacity: DemuxBenchmarkTraffic.socketCount)
    let control = DemuxControl()
    let frames = traffic.frameCount
    // Only the consumer thread uses it (allocated once, freed after the join).
    nonisolated(unsafe) let drainBuffer = UnsafeMutablePointer<UInt>.allocate(capacity: demuxQueueCapacity)
    defer { drainBuffer.deallocate() }

    let consumer = PinnedThread(cpu: 1, name: "demux-consumer") {
        demuxConsume(traffic, report: report, control: control, capSeconds: capSeconds,
                     readySet: readySet,
                     drain: { slot, body in
                         // Move the items out under the lock into the
                         // consumer's own buffer, check them after it.
                         let buffer = drainBuffer
                         let k = sockets[slot].queue.withLock { q -> Int in
                             var k = 0
                             while let v = q.popFirst() {
                                 buffer[k] = v
                                 k += 1
                             }
                             return k
                         }
                         for i in 0..<k { body(buffer[i]) }
                         return k
                     })
    }
    let input = PinnedThread(cpu: 0, name: "demux-input") {
        let parser = PacketParser()
        var stats = DemuxStats()
        var touched = [Int](repeating: 0, count: demuxBurst)
        let deadline = monotonicSeconds() + capSeconds
        control.barrier.wait()
        let t0 = monotonicSeconds()
        let cpu0 = threadCPUSeconds()
        var input = 0
        passes: for pass in 0..<demuxPasses {
            for base in stride(from: 0, to: frames, by: demuxBurst) {
                var nt = 0
                for i in base..<(base + demuxBurst) {
                    input &+= 1
                    stats.offered &+= 1
                    let word = DemuxBenchmarkTraffic.packetWord(frame: i, pass: pass)
                    switch parser.parse(traffic.frame(i), linkType: .ethernet) {
                    case .packet(let p):
                        let key = p.flow
                        stats.sync.lockAcquisitions &+= 1
                        var sock = exactTable.withLock { $0[key] }
                        if sock == nil {
                            stats.sync.lockAcquisitions &+= 2
                            sock = bound.withLock { $0[key.boundKey] ?? $0[key.wildcardKey] }
                        }
                        guard let s = sock else {
                            stats.drops.record(.noSocket)
                            continue
                        }
                        stats.socketQueue.queueOps &+= 1
                        stats.sync.lockAcquisitions &+= 1
                        let ok = sockets[s].queue.withLock { q -> Bool in
                            guard q.count < demuxQueueCapacity else { return false }
                            q.append(word)
                            return true
                        }
                        if !ok {
                            stats.drops.record(.queueFull)
                            sockets[s].droppedFull.add(1, ordering: .relaxed)
                            continue
                        }
                        stats.enqueued &+= 1
                        stats.sync.crossCoreHandoffs &+= 1
                        if nt == 0 || touched[nt - 1] != s {
                            touched[nt] = s
                            nt += 1
                        }
                    case .dropped(let reason):
                        stats.parseDrops[Int(reason.rawValue)] &+= 1
                        stats.drops.record(DemuxDropReason(reason))
                    }
                }
                if nt > 0 {
                    // As the fast path: one fence per burst, then readiness bits.
                    atomicMemoryFence(ordering: .sequentiallyConsistent)
                    var newly = false
                    for k in 0..<nt where readySet.markReady(slot: touched[k]) {
                        stats.sync.wakeups &+= 1
                        stats.sync.atomicRMWs &+= 1
                        newly = true
                    }
                    if newly && readySet.wakeup.ringIfArmed() { stats.sync.threadWakeups &+= 1 }
                }
                if base & 0xffff == 0 && monotonicSeconds() > deadline {
                    control.abort.store(true, ordering: .relaxed)
                    break passes
                }
            }
        }
        let t1 = monotonicSeconds()
        report.inputCPUSeconds = threadCPUSeconds() - cpu0
        control.done.store(true, ordering: .releasing)
        readySet.wakeReader()
        // Each Mutex lock/unlock is at least one atomic RMW.
        stats.sync.atomicRMWs &+= stats.sync.lockAcquisitions
        report.inputStart = t0
        report.inputEnd = t1
        report.input = input
        report.stats = stats
    }
    input.join()
    consumer.join()
    report.timedOut = control.abort.load(ordering: .relaxed)
    for (i, s) in sockets.enumerated() { report.dropFull[i] = s.droppedFull.load(ordering: .relaxed) }
}

