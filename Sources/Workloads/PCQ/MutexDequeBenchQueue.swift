// mutex_deque: the pcq workloads' lock-based baseline.
import DequeModule
import Synchronization

/// A `Synchronization.Mutex` around a swift-collections Deque bounded to
/// the workload's capacity; the consumer moves up to 64 items out per lock.
final class MutexDequeBenchQueue: PCQSharedBenchSubject, @unchecked Sendable {
    // @unchecked Sendable: because of `batch`, a raw buffer only the single
    // consumer thread touches; everything else is a Mutex or an Atomic.
    static var implName: String { "mutex_deque" }
    static var note: String { "Synchronization.Mutex around a swift-collections Deque bounded to 1024; consumer takes up to 64 per lock, \(pcqBenchEmptyBackoff) pauses when empty" }

    private let deque: Mutex<Deque<UInt>>
    /// Makes the lock's happens-before edges visible to the thread
    /// sanitizer: a contended `Mutex` is handed over inside the
    /// uninstrumented stdlib/kernel (PI futex), so TSan would report the
    /// Deque accesses as races. One acquiring load and one releasing store
    /// inside the critical section (plain moves on x86, same cache line as
    /// the lock word) restore the edge at no measurable cost.
    private let sanitizerEdge = Atomic<UInt>(0)
    /// Consumer-private copy buffer: items are moved out under the lock and
    /// checked after it.
    private let batch = UnsafeMutablePointer<UInt>.allocate(capacity: 64)

    init(producers: Int) {
        var d = Deque<UInt>()
        d.reserveCapacity(pcqBenchCapacity)
        deque = Mutex(d)
    }

    deinit { batch.deallocate() }

    @inline(__always)
    func tryPut(_ value: UInt, producer: Int) -> Bool {
        deque.withLock { d in
            _ = sanitizerEdge.load(ordering: .acquiring)
            defer { sanitizerEdge.store(value, ordering: .releasing) }
            if d.count >= pcqBenchCapacity { return false }
            d.append(value)
            return true
        }
    }

    @inline(__always)
    func take(_ body: (UInt) -> Void) -> Int {
        let buffer = batch
        let k = deque.withLock { d -> Int in
            _ = sanitizerEdge.load(ordering: .acquiring)
            defer { sanitizerEdge.store(0, ordering: .releasing) }
            var k = 0
            while k < 64, let v = d.popFirst() {
                buffer[k] = v
                k += 1
            }
            return k
        }
        for i in 0..<k { body(buffer[i]) }
        return k
    }
}
