import FastDemux
import PacketIO
import Glibc
import Synchronization
import SMPPrimitives

/// A control request (attach or detach a socket) for a thread that owns
/// connection state: queued on the owner's control PCQ, applied between
/// packet batches, acknowledged through `done`.
final class OwnerControlRequest: Sendable {
    enum Operation: Sendable { case attach, detach }
    let operation: Operation
    let key: FlowKey
    let socketBits: UInt
    let done = Atomic<Bool>(false)

    init(_ operation: Operation, key: FlowKey, socketBits: UInt) {
        self.operation = operation
        self.key = key
        self.socketBits = socketBits
    }

    /// Queues `self` on `queue`, wakes the owner with `ring`, and waits
    /// (spinning, then yielding) until the owner has applied it.
    func submit(to queue: PCQ<UInt>, ring: () -> Void) {
        let bits = UInt(bitPattern: Unmanaged.passRetained(self).toOpaque())
        while !queue.put(bits) { sched_yield() }
        ring()
        var spins = 0
        // Acquire: the owner's table update happens-before our return.
        while !done.load(ordering: .acquiring) {
            spins &+= 1
            if spins & 63 == 0 { sched_yield(); ring() } else { spinLoopHint() }
        }
    }

    /// Owner side: applies every queued request to `table`.
    static func applyAll(from queue: PCQ<UInt>, to table: inout FlowMap) {
        while let bits = queue.get() {
            let r = Unmanaged<OwnerControlRequest>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).takeRetainedValue()
            switch r.operation {
            case .attach: _ = table.insert(r.key, r.socketBits)
            case .detach: _ = table.remove(r.key)
            }
            // Release: the table update is visible to the submitter.
            r.done.store(true, ordering: .releasing)
        }
    }
}

/// Start/stop handshake for an organization's core threads.
final class CoreThreadsControl: Sendable {
    /// Set (release) after every input thread finished handing off: a core
    /// thread that sees it (acquire) and then finds its queues empty is done.
    let stop = Atomic<Bool>(false)
    let started: SpinBarrier

    init(threads: Int) { started = SpinBarrier(parties: threads + 1) }
}

/// The CPU of core thread `k`, or -1 when not pinned.
func coreThreadCPU(_ k: Int, pinned: Bool) -> Int { pinned ? k % onlineCPUCount : -1 }
