// urcu_wfcq: the pcq workloads' liburcu baseline, a wait-free concurrent
// queue with a node pool.
import CURCU
import Synchronization

/// liburcu's wfcqueue bounded the way the C peer harness bounds it: each
/// producer owns 1024/P preallocated 64-byte nodes, used round-robin; a node
/// is reused only after the consumer cleared its busy flag, so at most 1024
/// items are in flight. The consumer splices the whole queue into a private one (no
/// dequeue lock: single consumer) and walks the batch.
final class WFCQBenchQueue: PCQSharedBenchSubject, @unchecked Sendable {
    // @unchecked Sendable: raw memory shared on purpose. Queue links are
    // managed by liburcu; `value` and `busy` are Atomics (release/acquire)
    // so that the hand-off is also visible to the thread sanitizer, which
    // cannot see liburcu's own barriers. Each producer's cursor is touched
    // only by that producer.
    static var implName: String { "urcu_wfcq" }
    static var note: String {
        "liburcu wfcqueue, preallocated 64-byte nodes recycled via a busy flag: at most 1024 in flight (1024/P per producer); consumer splices the whole queue and walks the batch, \(pcqBenchEmptyBackoff) pauses when empty"
    }

    private static let nodeSize = 64
    private static let valueOffset = 8  // after the cds_wfcq_node (one pointer)
    private static let busyOffset = 16

    private let control: UnsafeMutableRawPointer
    private let head: UnsafeMutablePointer<__cds_wfcq_head>
    private let tail: UnsafeMutablePointer<cds_wfcq_tail>
    private let localHead: UnsafeMutablePointer<__cds_wfcq_head>
    private let localTail: UnsafeMutablePointer<cds_wfcq_tail>
    /// Per producer: its next node index, alone on a 128-byte line.
    private let cursors: UnsafeMutablePointer<UInt>
    private let pools: [UnsafeMutableRawPointer]
    private let poolSize: Int

    init(producers: Int) {
        control = UnsafeMutableRawPointer.allocate(byteCount: 3 * 128, alignment: 128)
        head = control.bindMemory(to: __cds_wfcq_head.self, capacity: 1)
        tail = (control + 128).bindMemory(to: cds_wfcq_tail.self, capacity: 1)
        localHead = (control + 256).bindMemory(to: __cds_wfcq_head.self, capacity: 1)
        localTail = (control + 256 + 64).bindMemory(to: cds_wfcq_tail.self, capacity: 1)
        __cds_wfcq_init(head, tail)
        __cds_wfcq_init(localHead, localTail)
        cursors = UnsafeMutableRawPointer.allocate(byteCount: producers * 128, alignment: 128)
            .bindMemory(to: UInt.self, capacity: producers * 16)
        cursors.initialize(repeating: 0, count: producers * 16)
        poolSize = pcqBenchCapacity / producers
        pools = (0..<producers).map { _ in
            let pool = UnsafeMutableRawPointer.allocate(byteCount: pcqBenchCapacity / producers * Self.nodeSize,
                                                        alignment: 128)
            for i in 0..<(pcqBenchCapacity / producers) {
                let node = pool + i * Self.nodeSize
                node.bindMemory(to: cds_wfcq_node.self, capacity: 1).initialize(to: cds_wfcq_node(next: nil))
                (node + Self.valueOffset).bindMemory(to: Atomic<UInt>.self, capacity: 1).initialize(to: Atomic(0))
                (node + Self.busyOffset).bindMemory(to: Atomic<UInt>.self, capacity: 1).initialize(to: Atomic(0))
            }
            return pool
        }
    }

    deinit {
        for pool in pools { pool.deallocate() }
        UnsafeMutableRawPointer(cursors).deallocate()
        control.deallocate()
    }

    @inline(__always)
    private static func value(_ node: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt>> {
        (node + valueOffset).assumingMemoryBound(to: Atomic<UInt>.self)
    }

    @inline(__always)
    private static func busy(_ node: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt>> {
        (node + busyOffset).assumingMemoryBound(to: Atomic<UInt>.self)
    }

    @inline(__always)
    func tryPut(_ value: UInt, producer: Int) -> Bool {
        let cursor = cursors + producer * 16
        let node = pools[producer] + Int(cursor.pointee % UInt(poolSize)) * Self.nodeSize
        // Acquiring: pairs with the consumer's releasing clear, after which
        // it no longer reads the node.
        if Self.busy(node).pointee.load(ordering: .acquiring) != 0 { return false }
        cursor.pointee &+= 1
        Self.busy(node).pointee.store(1, ordering: .relaxed)
        // Releasing: for the sanitizer (liburcu's enqueue is a full barrier).
        Self.value(node).pointee.store(value, ordering: .releasing)
        let qn = node.assumingMemoryBound(to: cds_wfcq_node.self)
        cds_wfcq_node_init(qn)
        _ = cds_wfcq_enqueue(cds_wfcq_head_ptr_t(_h: head), tail, qn)
        return true
    }

    @inline(__always)
    func take(_ body: (UInt) -> Void) -> Int {
        let src = cds_wfcq_head_ptr_t(_h: head)
        let dst = cds_wfcq_head_ptr_t(_h: localHead)
        // Single consumer: the splice needs no dequeue lock.
        if __cds_wfcq_splice_blocking(dst, localTail, src, tail) == CDS_WFCQ_RET_SRC_EMPTY { return 0 }
        var k = 0
        var next = __cds_wfcq_first_blocking(dst, localTail)
        while let qn = next {
            // Find the successor before releasing the node: the producer may
            // reuse (and re-link) it as soon as `busy` is clear.
            next = __cds_wfcq_next_blocking(dst, localTail, qn)
            let node = UnsafeMutableRawPointer(qn)
            // Acquiring: pairs with the producer's releasing store.
            let v = Self.value(node).pointee.load(ordering: .acquiring)
            // Releasing: our read of the node happens before its reuse.
            Self.busy(node).pointee.store(0, ordering: .releasing)
            body(v)
            k += 1
        }
        __cds_wfcq_init(localHead, localTail)
        return k
    }
}
