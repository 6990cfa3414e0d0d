// What the rcu runners need from a table, and what the two QSBR tables
// (rcu_hash, urcu_lfht) share: thread registration, read sections and
// quiescent states, and the writer's pinned call_rcu worker.
import CURCU
import SMPPrimitives

/// One implementation under test. The runners are generic over it and get
/// specialized, so the hot loops call the table directly.
protocol RCUBenchTable: AnyObject, Sendable {
    /// The `impl` field of the result line.
    static var implName: String { get }
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

/// How many of `keys` do not map to their own value (``rcuBenchValue(_:)``)
/// according to `value` (nil or 0 for an absent key): the after-run check
/// every table does.
func rcuBenchMismatches(_ keys: UnsafeMutableBufferPointer<BenchFlowKey>,
                        _ value: (BenchFlowKey) -> UInt?) -> Int {
    (0..<keys.count).reduce(0) { $0 + (value(keys[$1]) == rcuBenchValue($1) ? 0 : 1) }
}

/// A table read under QSBR: readers and the writer register with QSBR,
/// a batch of lookups is one read section followed by a quiescent state,
/// and the writer's deferred frees go to the pinned call_rcu worker.
protocol QSBRBenchTable: RCUBenchTable {}

extension QSBRBenchTable {
    func readerEnter() { QSBR.registerThread() }
    func readerLeave() { QSBR.unregisterThread() }
    @inline(__always) func beginBatch() { QSBR.readLock() }
    @inline(__always) func endBatch() {
        QSBR.readUnlock()
        QSBR.quiescentState()
    }
    func writerEnter() {
        QSBR.registerThread()
        // Sends this (writer) thread's call_rcu callbacks to the pinned worker.
        urcu_qsbr_set_thread_call_rcu_data(writerCallRCUWorker.crdp)
    }
    /// Waits for every callback the writer queued, then detaches.
    func writerLeave() {
        QSBR.barrier()
        urcu_qsbr_set_thread_call_rcu_data(nil)
        QSBR.unregisterThread()
    }
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
