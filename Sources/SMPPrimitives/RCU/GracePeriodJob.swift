// The record behind RCUFlavor.afterGracePeriod: a Swift closure carried
// through call_rcu.
import CURCU

/// A closure run by a flavour's call_rcu worker after a grace period.
///
/// The job record is manually allocated: the `rcu_head` first (this
/// package's convention: the callback receives the head's address and
/// frees that address), then the closure, which holds the only reference
/// to its context. Ownership passes from the scheduling thread (which
/// gave the closure up: `sending`) to the worker through liburcu's queue,
/// whose enqueue and the grace period order the scheduler's writes before
/// the job (C11: the queue's full fences; TSan: the flavour's
/// release/acquire annotations in deferFree and the trampolines).
enum GracePeriodJob {
    struct Record {
        var head = rcu_head()
        let body: () -> Void
    }

    /// Queues `body` for `F`'s worker; `trampoline` is the flavour's
    /// callback, which calls ``run(_:)``.
    static func schedule<F: RCUFlavor>(_: F.Type, _ body: sending @escaping () -> Void, _ trampoline: RCUCallback) {
        assert(MemoryLayout<Record>.offset(of: \Record.head) == 0, "the rcu_head must be first")
        let record = UnsafeMutablePointer<Record>.allocate(capacity: 1)
        record.initialize(to: Record(body: body))
        F.deferFree(UnsafeMutableRawPointer(record).assumingMemoryBound(to: rcu_head.self), trampoline)
    }

    /// Frees the record and runs its closure (on the worker, after the
    /// grace period). The closure's context is released when it returns.
    static func run(_ head: UnsafeMutablePointer<rcu_head>?) {
        let record = UnsafeMutableRawPointer(head!).assumingMemoryBound(to: Record.self)
        let body = record.move().body
        record.deallocate()
        body()
    }
}
