// The rcu workloads' runners: the reader loop both share, the churn
// writer, and the checks and result lines.
import DemuxLab
import SMPPrimitives
import Synchronization

/// What one reader thread measured.
struct RCUReaderResult: Sendable {
    var lookups = 0
    var errors = 0
    var t0 = 0.0
    var t1 = 0.0
    var truncated = false
}

/// The reader loop shared by both workloads: batches of 1024 lookups from
/// `seq`, each checked against the key's own value, with the wall-clock cap
/// checked every 4096 lookups.
@inline(__always)
func rcuReaderLoop<T: RCUBenchTable>(_ table: T, _ inputs: RCUBenchInputs, _ seq: UnsafeMutableBufferPointer<UInt32>,
                                     barrier: SpinBarrier, cap: Double) -> RCUReaderResult {
    let keys = inputs.keys
    let n = seq.count
    var r = RCUReaderResult()
    table.readerEnter()
    barrier.wait()
    r.t0 = monotonicSeconds()
    var i = 0
    while i < n {
        let end = min(i &+ rcuBenchBatch, n)
        table.beginBatch()
        while i < end {
            let idx = Int(truncatingIfNeeded: seq[i])
            r.errors &+= table.lookup(keys[idx]) == rcuBenchValue(idx) ? 0 : 1
            i &+= 1
        }
        table.endBatch()
        if i & 4095 == 0 && monotonicSeconds() - r.t0 > cap {
            r.truncated = true
            break
        }
    }
    r.t1 = monotonicSeconds()
    table.readerLeave()
    r.lookups = i
    return r
}

/// The `note` of a result line: the implementation, the pinning note, and
/// whether the cap stopped the readers.
private func rcuRunNote(_ implementation: String, truncated: Bool, cap: Double) -> String {
    var note = pinnedNote(implementation)
    if truncated { note += "; stopped at the \(cap) s cap (all lookups done were checked)" }
    return note
}

func runRCULookup<T: RCUBenchTable>(_: T.Type, _ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? rcuBenchDefaultLookups
    let keyCount = rcuKeyCount(options)
    let inputs = RCUBenchInputs(n: n, sequenceCount: 2, indexLimit: keyCount, keyCount: keyCount)
    defer { inputs.free() }
    let table = T(keys: inputs.keys)
    let barrier = SpinBarrier(parties: 2)
    let cap = options.capSeconds
    let threads = (0..<2).map { tid in
        PinnedThread(cpu: tid, name: "rcu-reader-\(tid)") {
            rcuReaderLoop(table, inputs, inputs.sequences[tid], barrier: barrier, cap: cap)
        }
    }
    let rs = threads.map { $0.join() }
    let bad = table.verify(keys: inputs.keys)
    table.destroy()
    let seconds = max(rs[0].t1, rs[1].t1) - min(rs[0].t0, rs[1].t0)
    let errors = rs[0].errors + rs[1].errors
    let truncated = rs[0].truncated || rs[1].truncated
    let note = rcuRunNote(T.note, truncated: truncated, cap: cap)
    return .throughput(
        workload: "rcu-lookup", impl: T.implName, ops: rs[0].lookups + rs[1].lookups, seconds: seconds,
        checked: errors == 0 && bad == 0, note: note,
        extra: [
            ("reader0_mops", .double(Double(rs[0].lookups) / (rs[0].t1 - rs[0].t0) / 1e6)),
            ("reader1_mops", .double(Double(rs[1].lookups) / (rs[1].t1 - rs[1].t0) / 1e6)),
            ("lookup_errors", .int(errors)),
            ("verify_errors", .int(bad)),
            ("complete", .bool(!truncated)),
            ("keys", .int(keyCount)),
        ])
}

/// What the churn writer measured.
struct RCUWriterResult: Sendable {
    var updates = 0
    var errors = 0
    var t0 = 0.0
    var t1 = 0.0
}

func runRCUChurn<T: RCUBenchTable>(_: T.Type, _ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? rcuBenchDefaultLookups
    let keyCount = rcuKeyCount(options)
    let inputs = RCUBenchInputs(n: n, sequenceCount: 1, indexLimit: rcuBenchStableKeys, keyCount: keyCount)
    defer { inputs.free() }
    let table = T(keys: inputs.keys)
    let barrier = SpinBarrier(parties: 2)
    let readerDone = Atomic<Bool>(false)
    let cap = options.capSeconds
    // @Sendable: both threads share the `readerDone` atomic.
    let r = PinnedThread(cpu: 0, name: "rcu-reader") { @Sendable in
        let res = rcuReaderLoop(table, inputs, inputs.sequences[0], barrier: barrier, cap: cap)
        // Release: the writer stops after seeing it (nothing else to order).
        readerDone.store(true, ordering: .releasing)
        return res
    }
    let w = PinnedThread(cpu: 1, name: "rcu-writer") { @Sendable in
        var res = RCUWriterResult()
        var rng = Xoshiro256StarStar(seed: 0x5eed_0300)
        let keys = inputs.keys
        table.writerEnter()
        barrier.wait()
        res.t0 = monotonicSeconds()
        while !readerDone.load(ordering: .acquiring) {
            let idx = rcuBenchStableKeys + Int(rng.below(UInt32(keyCount - rcuBenchStableKeys)))
            if !table.replace(idx, keys[idx]) { res.errors += 1 }
            res.updates += 2  // one remove + one insert
        }
        res.t1 = monotonicSeconds()
        table.writerLeave()
        return res
    }
    let rr = r.join()
    let wr = w.join()
    let bad = table.verify(keys: inputs.keys)
    let peak = table.pendingReclaimPeak
    table.destroy()
    let note = rcuRunNote(T.note + "; writer: " + T.writerNote + "; update = one remove or one insert",
                          truncated: rr.truncated, cap: cap)
    return .throughput(
        workload: "rcu-churn", impl: T.implName, ops: rr.lookups, seconds: rr.t1 - rr.t0,
        checked: rr.errors == 0 && wr.errors == 0 && bad == 0, note: note,
        extra: [
            ("writer_ops_per_s", .int(wr.t1 > wr.t0 ? Int(Double(wr.updates) / (wr.t1 - wr.t0)) : 0)),
            ("writer_updates", .int(wr.updates)),
            ("pending_reclaim_peak", .int(peak)),
            ("lookup_errors", .int(rr.errors)),
            ("writer_errors", .int(wr.errors)),
            ("verify_errors", .int(bad)),
            ("complete", .bool(!rr.truncated)),
            ("keys", .int(keyCount)),
        ])
}
