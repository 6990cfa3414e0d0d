// mutex_dictionary: the rcu workloads' lock-based baseline.
import CURCU
import Synchronization

/// A `Synchronization.Mutex` around a Swift Dictionary, locked per lookup
/// and per update; nothing to register, nothing to reclaim.
final class MutexDictionaryBench: RCUBenchTable, Sendable {
    static var implName: String { "mutex_dictionary" }
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
        locked { d in (d.count == keys.count ? 0 : 1) + rcuBenchMismatches(keys) { d[$0] } }
    }
    func destroy() {}
}
