// The demux workload's check and result line.
import DemuxLab
import FastDemux

/// Checks a run (conservation, per-socket counts, truth, order, no
/// unexpected drop reason) and builds its result line.
func demuxResult(impl: DemuxBenchImpl, traffic: DemuxBenchmarkTraffic, report r: DemuxRunReport) -> BenchResult {
    // A run stopped at the cap checks what it did (and skips the per-socket
    // expected counts, which assume all passes).
    let complete = !r.timedOut
    let offered = complete ? traffic.frameCount * demuxPasses : r.input.packets
    let s = r.input.stats
    let dropFull = r.dropFull.reduce(0, +)
    var mismatches = 0
    for i in 0..<traffic.socketCount
    where complete && r.consumer.delivered[i] + r.dropFull[i] != traffic.perSocketPerPass[i] * demuxPasses {
        mismatches += 1
    }
    let dropped = s.drops.total
    let checked = r.input.packets == offered && s.offered == offered
        && r.consumer.deliveredTotal + dropped == offered && dropFull == s.drops[.queueFull]
        && mismatches == 0 && r.consumer.misdelivered == 0 && r.consumer.orderErrors == 0
        && s.drops[.noSocket] == 0 && s.drops[.malformed] == 0 && s.drops[.unsupported] == 0
        && s.drops[.socketClosed] == 0
    let t0 = min(r.input.start, r.consumer.start)
    let seconds = r.consumer.end - t0
    let delivered = max(r.consumer.deliveredTotal, 1)
    func per(_ v: Int) -> JSONValue { .double((Double(v) / Double(delivered) * 10_000).rounded() / 10_000) }
    var extra: [(String, JSONValue)] = [
        ("complete", .bool(complete)),
        ("input_mops", .double(Double(offered) / (r.input.end - r.input.start) / 1e6)),
        ("input_cpu_ns_per_packet", .double(r.input.cpuSeconds * 1e9 / Double(max(offered, 1)))),
        ("consumer_cpu_ns_per_delivered", .double(r.consumer.cpuSeconds * 1e9 / Double(delivered))),
        ("delivered", .int(r.consumer.deliveredTotal)),
        ("dropped", .int(dropped)),
        ("dropped_by_reason", .object(s.drops.byReason.map { ($0.0, .int($0.1)) })),
        ("wakeups", .int(s.sync.wakeups)),
        ("wakeups_per_delivered", per(s.sync.wakeups)),
        ("thread_wakeups", .int(s.sync.threadWakeups)),
        ("consumer_sleeps", .int(r.consumer.sleeps)),
        ("misdelivered", .int(r.consumer.misdelivered)),
        ("order_errors", .int(r.consumer.orderErrors)),
        ("socket_count_mismatches", .int(mismatches)),
        ("frames", .int(traffic.frameCount)),
        ("passes", .int(demuxPasses)),
    ]
    var stats: [(String, JSONValue)] = [
        ("input_queue_ops_per_delivered", per(s.socketQueue.queueOps)),
        ("input_atomic_rmws_per_delivered", per(s.sync.atomicRMWs)),
        ("input_atomic_rmws_modelled_per_delivered", per(s.sync.modelledAtomicRMWs)),
        ("input_lock_acquisitions_per_delivered", per(s.sync.lockAcquisitions)),
        ("input_contended_per_delivered", per(s.sync.contendedAcquisitions)),
        ("cross_core_handoffs_per_delivered", per(s.sync.crossCoreHandoffs)),
        ("unclassified_handoffs", .int(s.sync.unclassifiedHandoffs)),
        ("input_context_switches", contextSwitchesJSON(r.input.contextSwitches)),
        ("consumer_context_switches", contextSwitchesJSON(r.consumer.contextSwitches)),
        ("consumer_queue_ops_per_delivered", per(r.consumer.queueOps)),
        ("queue_depth_high_water", .int(s.socketQueue.highWater)),
        ("queue_depth_log2_histogram", histogramJSON(s.socketQueue.depth)),
        ("enqueue_batch_log2_histogram", histogramJSON(s.socketQueue.batchSizes)),
        ("drain_batch_log2_histogram", histogramJSON(r.consumer.batches)),
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

/// A thread's context switches as `{"voluntary": v, "involuntary": i}`.
private func contextSwitchesJSON(_ c: ThreadContextSwitches) -> JSONValue {
    .object([("voluntary", .int(c.voluntary)), ("involuntary", .int(c.involuntary))])
}

/// A histogram as `[[lower bound, count], ...]` (non-empty buckets).
private func histogramJSON(_ h: Log2Histogram) -> JSONValue {
    .array(h.nonEmptyBuckets.map { .array([.int($0.lowerBound), .int($0.count)]) })
}
