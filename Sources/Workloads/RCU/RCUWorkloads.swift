// rcu-lookup and rcu-churn (BENCHMARKS.md).
//
// Implementations, ours first:
// - rcu_hash:         RCUHashTable<BenchFlowKey, UInt, QSBR>, 65,536 buckets;
//                     readers report a quiescent state every 1024 lookups.
// - urcu_lfht:        liburcu's cds_lfht with the QSBR flavour, 65,536
//                     buckets, no auto-resize; call_rcu reclamation.
// - mutex_dictionary: Synchronization.Mutex around a Swift Dictionary.
//
// All three hash with the same keyed mix (rcuHashMix) so hashing costs the
// same; the writer's call_rcu worker is pinned to CPU 1 (the writer's CPU)
// for both RCU tables, as the C peers do.
//
// The lookup loop is generic over an adapter protocol and specialized, so
// the hot loop calls the table directly (RCUHashTable.lookup is @inlinable).
import DemuxLab
import CURCU
import FastDemux
import Glibc
import SMPPrimitives
import Synchronization

let rcuWorkloads: [Workload] = [
    Workload(
        name: "rcu-lookup",
        summary: "65,536 IPv4 5-tuple keys; 2 readers (CPU 0, 1) x N lookups (default 10,000,000) of present keys",
        impls: [
            ("rcu_hash", { runRCULookup(RCUHashBench.self, $0) }),
            ("urcu_lfht", { runRCULookup(LFHTBench.self, $0) }),
            ("mutex_dictionary", { runRCULookup(MutexDictionaryBench.self, $0) }),
        ]),
    Workload(
        name: "rcu-churn",
        summary: "reader (CPU 0) looks up 1,024 stable keys N times while a writer (CPU 1) removes/re-inserts the others",
        impls: [
            ("rcu_hash", { runRCUChurn(RCUHashBench.self, $0) }),
            ("urcu_lfht", { runRCUChurn(LFHTBench.self, $0) }),
            ("mutex_dictionary", { runRCUChurn(MutexDictionaryBench.self, $0) }),
        ]),
]

// MARK: - Key

/// An IPv4 5-tuple, local to the benchmark (FastDemux has its own flow key).
/// Addresses and ports in network byte order, as on the wire.
struct BenchFlowKey: RCUHashKey, Hashable {
    var srcAddr: UInt32
    var dstAddr: UInt32
    var srcPort: UInt16
    var dstPort: UInt16
    var proto: UInt8

    /// The two words the key is hashed and compared as.
    @inline(__always) var words: (UInt64, UInt64) {
        (UInt64(srcAddr) << 32 | UInt64(dstAddr),
         UInt64(srcPort) << 24 | UInt64(dstPort) << 8 | UInt64(proto))
    }

    @inline(__always) func rcuHash(seed: UInt64) -> UInt64 {
        let w = words
        return rcuHashMix(w.0, w.1, seed: seed)
    }

    @inline(__always) static func == (a: BenchFlowKey, b: BenchFlowKey) -> Bool {
        let x = a.words, y = b.words
        return (x.0 ^ y.0) | (x.1 ^ y.1) == 0
    }

    func hash(into h: inout Hasher) {
        let w = words
        h.combine(w.0)
        h.combine(w.1)
    }
}

// MARK: - Fixed inputs

let rcuBenchKeyCount = 65_536
let rcuBenchStableKeys = 1_024
let rcuBenchDefaultLookups = 10_000_000
/// Quiescent state (QSBR) / batch boundary every this many lookups.
let rcuBenchBatch = 1_024

/// Read-only benchmark inputs in manually allocated memory, so that the hot
/// loops index without bounds checks or ARC.
struct RCUBenchInputs: @unchecked Sendable {
    // @unchecked Sendable: written once before the threads start, read-only
    // while they run, freed by `free()` after they are joined.
    let keys: UnsafeMutableBufferPointer<BenchFlowKey>
    let sequences: [UnsafeMutableBufferPointer<UInt32>]

    /// 65,536 distinct keys from a fixed seed; `sequenceCount` index
    /// sequences of `n` indices below `indexLimit`.
    init(n: Int, sequenceCount: Int, indexLimit: Int) {
        keys = .allocate(capacity: rcuBenchKeyCount)
        var rng = Xoshiro256StarStar(seed: 0x5eed_0001)
        var seen = Set<BenchFlowKey>(minimumCapacity: rcuBenchKeyCount)
        var i = 0
        while i < rcuBenchKeyCount {
            let x = rng.next(), y = rng.next()
            let k = BenchFlowKey(
                srcAddr: UInt32(truncatingIfNeeded: x >> 32),
                dstAddr: (0x0a00_0000 | UInt32(truncatingIfNeeded: y & 0xff_ffff)).bigEndian,  // 10.x.y.z
                srcPort: UInt16(truncatingIfNeeded: y >> 24),
                dstPort: UInt16(truncatingIfNeeded: y >> 40),
                proto: x & 1 == 1 ? 6 : 17)
            if seen.insert(k).inserted {
                keys[i] = k
                i += 1
            }
        }
        var seqs: [UnsafeMutableBufferPointer<UInt32>] = []
        for s in 0..<sequenceCount {
            let seq = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: n)
            var r = Xoshiro256StarStar(seed: 0x5eed_0100 &+ UInt64(s))
            for j in 0..<n { seq[j] = r.below(UInt32(indexLimit)) }
            seqs.append(seq)
        }
        sequences = seqs
    }

    func free() {
        keys.deallocate()
        for s in sequences { s.deallocate() }
    }
}

/// The value every table stores for key index `i`: identifies the key.
@inline(__always) func rcuBenchValue(_ i: Int) -> UInt { UInt(i) &+ 1 }

// MARK: - Table adapters

/// One implementation under test. The runners are generic over it and get
/// specialized, so the hot loops call the table directly.
protocol RCUBenchTable: AnyObject, Sendable {
    static var note: String { get }
    /// How the churn writer updates and reclaims.
    static var writerNote: String { get }
    init(keys: UnsafeMutableBufferPointer<BenchFlowKey>)
    /// Reader thread set-up and tear-down (registration).
    func readerEnter()
    func readerLeave()
    /// Around each batch of ``rcuBenchBatch`` lookups (read section,
    /// quiescent state).
    func beginBatch()
    func endBatch()
    /// The key's value, 0 if absent. Inside a batch.
    func lookup(_ key: BenchFlowKey) -> UInt
    /// Writer: set-up, one remove + insert of key index `i` (false on any
    /// anomaly), and tear-down that waits for all deferred reclamation.
    func writerEnter()
    func replace(_ i: Int, _ key: BenchFlowKey) -> Bool
    func writerLeave()
    /// Entries awaiting reclamation, at peak.
    var pendingReclaimPeak: Int { get }
    /// After all threads are done: how many keys are missing or wrong.
    func verify(keys: UnsafeMutableBufferPointer<BenchFlowKey>) -> Int
    /// Frees everything (no thread uses the table any more).
    func destroy()
}

/// A QSBR call_rcu worker pinned to CPU 1 (the writer's CPU), created once
/// per process and never freed: liburcu's call_rcu_data_free stops the
/// worker without joining it (a leaked thread), so benchmark runs share one.
private struct PinnedCallRCUWorker: @unchecked Sendable {
    // @unchecked Sendable: an opaque liburcu handle, immutable once created;
    // liburcu synchronizes its use.
    let crdp: OpaquePointer?
}

private let writerCallRCUWorker = PinnedCallRCUWorker(
    crdp: urcu_qsbr_create_call_rcu_data(0, Int32(1 % onlineCPUCount)))

/// Sends the calling (writer) thread's call_rcu callbacks to the pinned worker.
private func useWriterCallRCUWorker() {
    urcu_qsbr_set_thread_call_rcu_data(writerCallRCUWorker.crdp)
}

private func stopUsingWriterCallRCUWorker() {
    urcu_qsbr_set_thread_call_rcu_data(nil)
}

final class RCUHashBench: RCUBenchTable, Sendable {
    static var note: String {
        "RCUHashTable<BenchFlowKey, UInt, QSBR>, 65,536 buckets, QSBR.quiescentState every 1024 lookups"
    }
    static var writerNote: String {
        "remove + insert, call_rcu reclamation (worker pinned to CPU 1, nodes recycled), QSBR.barrier at end"
    }
    let table = RCUHashTable<BenchFlowKey, UInt, QSBR>(initialBucketCount: rcuBenchKeyCount)

    init(keys: UnsafeMutableBufferPointer<BenchFlowKey>) {
        for i in 0..<keys.count { precondition(table.insert(keys[i], value: rcuBenchValue(i))) }
    }
    func readerEnter() { QSBR.registerThread() }
    func readerLeave() { QSBR.unregisterThread() }
    @inline(__always) func beginBatch() { QSBR.readLock() }
    @inline(__always) func endBatch() {
        QSBR.readUnlock()
        QSBR.quiescentState()
    }
    @inline(__always) func lookup(_ key: BenchFlowKey) -> UInt { table.lookup(key) ?? 0 }
    func writerEnter() {
        QSBR.registerThread()
        useWriterCallRCUWorker()
    }
    @inline(__always) func replace(_ i: Int, _ key: BenchFlowKey) -> Bool {
        let removed = table.remove(key)
        let inserted = table.insert(key, value: rcuBenchValue(i))
        QSBR.quiescentState()  // the writer is a QSBR reader too
        return removed == rcuBenchValue(i) && inserted
    }
    func writerLeave() {
        QSBR.barrier()
        stopUsingWriterCallRCUWorker()
        QSBR.unregisterThread()
    }
    var pendingReclaimPeak: Int { table.statistics.peakPendingReclaim }
    func verify(keys: UnsafeMutableBufferPointer<BenchFlowKey>) -> Int {
        var bad = QSBR.withRegisteredThread {
            QSBR.withReadSection {
                (0..<keys.count).reduce(0) { $0 + (table.lookup(keys[$1]) == rcuBenchValue($1) ? 0 : 1) }
            }
        }
        let s = table.statistics
        if s.count != keys.count { bad += 1 }
        // Every removed node was reclaimed: only the table's nodes remain.
        if s.pendingReclaim != 0 || s.liveNodes != keys.count { bad += 1 }
        return bad
    }
    func destroy() {}
}

/// liburcu's cds_lfht node for the benchmark: the lfht node at offset 0 (so
/// the match function can cast), the rcu_head for call_rcu, key, value, and
/// the owning table's pending-reclaim counter (64 bytes in all).
private struct LFHTNode {
    var node = cds_lfht_node()
    var rcuHead = rcu_head()
    var key: BenchFlowKey
    var value: UInt
    var pending: UnsafePointer<Atomic<Int>>
}

private let lfhtFreeNode: RCUCallback = { head in
    QSBR.gracePeriodDidEnd()
    let raw = UnsafeMutableRawPointer(head!) - MemoryLayout<LFHTNode>.offset(of: \LFHTNode.rcuHead)!
    let pending = raw.assumingMemoryBound(to: LFHTNode.self).pointee.pending
    raw.assumingMemoryBound(to: LFHTNode.self).deinitialize(count: 1)
    raw.deallocate()
    pending.pointee.subtract(1, ordering: .relaxed)
}

private let lfhtMatch: @convention(c) (UnsafeMutablePointer<cds_lfht_node>?, UnsafeRawPointer?) -> Int32 = { node, key in
    // The node was published through liburcu (uninstrumented): tell TSan.
    curcu_tsan_acquire_object(node)
    let n = UnsafeMutableRawPointer(node!).assumingMemoryBound(to: LFHTNode.self)
    return n.pointee.key == key!.assumingMemoryBound(to: BenchFlowKey.self).pointee ? 1 : 0
}

/// The hash seed for cds_lfht (fixed; it has no per-table seed of its own).
private let lfhtSeed: UInt64 = 0x9e37_79b9

final class LFHTBench: RCUBenchTable, @unchecked Sendable {
    // @unchecked Sendable: cds_lfht is a concurrent table (its own
    // synchronization); `peak` is touched only by the writer thread (and
    // read after it is joined).
    static var note: String {
        "liburcu cds_lfht QSBR (cds_lfht_new_flavor), 65,536 buckets, no auto-resize, quiescent state every 1024 "
            + "lookups"
    }
    static var writerNote: String {
        "cds_lfht_lookup + cds_lfht_del + call_rcu free (worker pinned to CPU 1) + cds_lfht_add_unique, barrier at end"
    }
    nonisolated(unsafe) let ht: OpaquePointer
    /// Removed nodes awaiting call_rcu (writer + call_rcu worker). Freed by
    /// `destroy()`, after the writer's barrier.
    let pending: UnsafeMutablePointer<Atomic<Int>>
    nonisolated(unsafe) var peak = 0

    init(keys: UnsafeMutableBufferPointer<BenchFlowKey>) {
        let n = UInt(rcuBenchKeyCount)
        guard let ht = cds_lfht_new_flavor(n, n, n, 0, curcu_qsbr_flavor(), nil) else {
            fatalError("cds_lfht_new_flavor failed")
        }
        self.ht = ht
        pending = .allocate(capacity: 1)
        pending.initialize(to: Atomic(0))
        QSBR.withRegisteredThread {
            for i in 0..<keys.count { precondition(add(i, keys[i])) }
        }
    }

    private func add(_ i: Int, _ key: BenchFlowKey) -> Bool {
        let n = UnsafeMutablePointer<LFHTNode>.allocate(capacity: 1)
        n.initialize(to: LFHTNode(key: key, value: rcuBenchValue(i), pending: pending))
        curcu_tsan_release_object(n)
        let node = UnsafeMutableRawPointer(n).assumingMemoryBound(to: cds_lfht_node.self)
        var k = key
        let r = QSBR.withReadSection {
            cds_lfht_add_unique(ht, UInt(truncatingIfNeeded: key.rcuHash(seed: lfhtSeed)), lfhtMatch, &k, node)
        }
        if r != node {
            n.deallocate()
            return false
        }
        return true
    }

    @inline(__always) private func find(_ key: BenchFlowKey) -> UnsafeMutablePointer<LFHTNode>? {
        var it = cds_lfht_iter()
        var k = key
        cds_lfht_lookup(ht, UInt(truncatingIfNeeded: key.rcuHash(seed: lfhtSeed)), lfhtMatch, &k, &it)
        guard let node = cds_lfht_iter_get_node(&it) else { return nil }
        return UnsafeMutableRawPointer(node).assumingMemoryBound(to: LFHTNode.self)
    }

    func readerEnter() { QSBR.registerThread() }
    func readerLeave() { QSBR.unregisterThread() }
    @inline(__always) func beginBatch() { QSBR.readLock() }
    @inline(__always) func endBatch() {
        QSBR.readUnlock()
        QSBR.quiescentState()
    }
    @inline(__always) func lookup(_ key: BenchFlowKey) -> UInt { find(key)?.pointee.value ?? 0 }
    func writerEnter() {
        QSBR.registerThread()
        useWriterCallRCUWorker()
    }
    func replace(_ i: Int, _ key: BenchFlowKey) -> Bool {
        var ok = true
        QSBR.withReadSection {
            guard let n = find(key), n.pointee.value == rcuBenchValue(i),
                  cds_lfht_del(ht, UnsafeMutableRawPointer(n).assumingMemoryBound(to: cds_lfht_node.self)) == 0
            else { ok = false; return }
            let p = pending.pointee.add(1, ordering: .relaxed).newValue
            if p > peak { peak = p }
            let head = UnsafeMutableRawPointer(n) + MemoryLayout<LFHTNode>.offset(of: \LFHTNode.rcuHead)!
            QSBR.deferFree(head.assumingMemoryBound(to: rcu_head.self), lfhtFreeNode)
        }
        if !add(i, key) { ok = false }
        QSBR.quiescentState()
        return ok
    }
    func writerLeave() {
        QSBR.barrier()
        stopUsingWriterCallRCUWorker()
        QSBR.unregisterThread()
    }
    var pendingReclaimPeak: Int { peak }
    func verify(keys: UnsafeMutableBufferPointer<BenchFlowKey>) -> Int {
        QSBR.withRegisteredThread {
            var bad = QSBR.withReadSection {
                (0..<keys.count).reduce(0) { $0 + (lookup(keys[$1]) == rcuBenchValue($1) ? 0 : 1) }
            }
            var before = 0, after = 0
            var count: UInt = 0
            QSBR.withReadSection { cds_lfht_count_nodes(ht, &before, &count, &after) }
            if count != UInt(keys.count) { bad += 1 }
            if pending.pointee.load(ordering: .relaxed) != 0 { bad += 1 }
            return bad
        }
    }
    func destroy() {
        // No reader or writer is left: unlink and free at once.
        QSBR.withRegisteredThread {
            var it = cds_lfht_iter()
            QSBR.withReadSection {
                cds_lfht_first(ht, &it)
                while let node = cds_lfht_iter_get_node(&it) {
                    cds_lfht_next(ht, &it)
                    if cds_lfht_del(ht, node) == 0 {
                        let n = UnsafeMutableRawPointer(node).assumingMemoryBound(to: LFHTNode.self)
                        n.deinitialize(count: 1)
                        n.deallocate()
                    }
                }
            }
        }
        _ = cds_lfht_destroy(ht, nil)
        pending.deinitialize(count: 1)
        pending.deallocate()
    }
}

final class MutexDictionaryBench: RCUBenchTable, Sendable {
    static var note: String { "Synchronization.Mutex around [BenchFlowKey: UInt], locked per lookup and per update" }
    static var writerNote: String { "removeValue + updateValue, one lock each; nothing to reclaim" }
    let dict: Mutex<[BenchFlowKey: UInt]>

    init(keys: UnsafeMutableBufferPointer<BenchFlowKey>) {
        var d = [BenchFlowKey: UInt](minimumCapacity: keys.count)
        for i in 0..<keys.count { d[keys[i]] = rcuBenchValue(i) }
        dict = Mutex(d)
    }
    func readerEnter() {}
    func readerLeave() {}
    func beginBatch() {}
    func endBatch() {}
    // Synchronization.Mutex hands a contended lock over in the kernel
    // (FUTEX_LOCK_PI), which ThreadSanitizer cannot see: the object
    // annotations (no-ops without TSan) tell it what the lock guarantees.
    @inline(__always) func locked<R>(_ body: (inout [BenchFlowKey: UInt]) -> R) -> R {
        dict.withLock { d in
            curcu_tsan_acquire_object(Unmanaged.passUnretained(self).toOpaque())
            defer { curcu_tsan_release_object(Unmanaged.passUnretained(self).toOpaque()) }
            return body(&d)
        }
    }
    @inline(__always) func lookup(_ key: BenchFlowKey) -> UInt { locked { $0[key] ?? 0 } }
    func writerEnter() {}
    func replace(_ i: Int, _ key: BenchFlowKey) -> Bool {
        let removed = locked { $0.removeValue(forKey: key) }
        let inserted = locked { $0.updateValue(rcuBenchValue(i), forKey: key) == nil }
        return removed == rcuBenchValue(i) && inserted
    }
    func writerLeave() {}
    var pendingReclaimPeak: Int { 0 }
    func verify(keys: UnsafeMutableBufferPointer<BenchFlowKey>) -> Int {
        locked { d in
            (0..<keys.count).reduce(d.count == keys.count ? 0 : 1) { $0 + (d[keys[$1]] == rcuBenchValue($1) ? 0 : 1) }
        }
    }
    func destroy() {}
}

// MARK: - Runners

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

func runRCULookup<T: RCUBenchTable>(_: T.Type, _ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? rcuBenchDefaultLookups
    let inputs = RCUBenchInputs(n: n, sequenceCount: 2, indexLimit: rcuBenchKeyCount)
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
    var note = T.note
    if let p = pinningNote(requiredCPUs: 2) { note += "; " + p }
    if truncated { note += "; stopped at the \(cap) s cap (all lookups done were checked)" }
    return .throughput(
        workload: "rcu-lookup", impl: implName(T.self), ops: rs[0].lookups + rs[1].lookups, seconds: seconds,
        checked: errors == 0 && bad == 0, note: note,
        extra: [
            ("reader0_mops", .double(Double(rs[0].lookups) / (rs[0].t1 - rs[0].t0) / 1e6)),
            ("reader1_mops", .double(Double(rs[1].lookups) / (rs[1].t1 - rs[1].t0) / 1e6)),
            ("lookup_errors", .int(errors)),
            ("verify_errors", .int(bad)),
            ("complete", .bool(!truncated)),
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
    let inputs = RCUBenchInputs(n: n, sequenceCount: 1, indexLimit: rcuBenchStableKeys)
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
            let idx = rcuBenchStableKeys + Int(rng.below(UInt32(rcuBenchKeyCount - rcuBenchStableKeys)))
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
    var note = T.note + "; writer: " + T.writerNote + "; update = one remove or one insert"
    if let p = pinningNote(requiredCPUs: 2) { note += "; " + p }
    if rr.truncated { note += "; stopped at the \(cap) s cap (all lookups done were checked)" }
    return .throughput(
        workload: "rcu-churn", impl: implName(T.self), ops: rr.lookups, seconds: rr.t1 - rr.t0,
        checked: rr.errors == 0 && wr.errors == 0 && bad == 0, note: note,
        extra: [
            ("writer_ops_per_s", .int(wr.t1 > wr.t0 ? Int(Double(wr.updates) / (wr.t1 - wr.t0)) : 0)),
            ("writer_updates", .int(wr.updates)),
            ("pending_reclaim_peak", .int(peak)),
            ("lookup_errors", .int(rr.errors)),
            ("writer_errors", .int(wr.errors)),
            ("verify_errors", .int(bad)),
            ("complete", .bool(!rr.truncated)),
        ])
}

private func implName<T: RCUBenchTable>(_: T.Type) -> String {
    switch T.self {
    case is RCUHashBench.Type: return "rcu_hash"
    case is LFHTBench.Type: return "urcu_lfht"
    default: return "mutex_dictionary"
    }
}
