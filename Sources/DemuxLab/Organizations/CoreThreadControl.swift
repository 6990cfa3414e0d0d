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
    let socket: SocketReference
    let done = Atomic<Bool>(false)

    init(_ operation: Operation, key: FlowKey, socket: SocketReference) {
        self.operation = operation
        self.key = key
        self.socket = socket
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
    static func applyAll(from queue: PCQ<UInt>, to table: inout FlowMap<SocketReference>) {
        while let bits = queue.get() {
            let r = Unmanaged<OwnerControlRequest>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).takeRetainedValue()
            switch r.operation {
            case .attach: _ = table.insert(r.key, r.socket)
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

/// The CPU core thread `k` is pinned to, or -1 when not pinned.
func coreThreadCPU(_ k: Int, pinned: Bool) -> Int { pinned ? k % onlineCPUCount : -1 }

// MARK: - Polling threads

/// What one poll of a polling thread found.
package enum PollOutcome {
    /// Work was done: poll again at once.
    case progress
    /// Nothing to do yet.
    case idle
    /// Nothing to do, ever again: the loop ends.
    case finished
}

/// The loop of a thread that polls for work (a core thread, a worker, a
/// reader): runs `poll` until it reports ``PollOutcome/finished``. After
/// `spins` idle polls in a row it calls `park` (which blocks until woken
/// or a timeout, and must re-check for work after announcing itself, as
/// ``ThreadParker`` does) and then spins again. Returns how often it
/// parked. On the calling thread; no allocation.
@inline(__always)
package func pollUntilFinished(spinning spins: Int, _ poll: () -> PollOutcome, park: () -> Void) -> Int {
    var idle = 0, parks = 0
    while true {
        switch poll() {
        case .progress:
            idle = 0
        case .finished:
            return parks
        case .idle:
            idle &+= 1
            if idle < spins {
                spinLoopHint()
            } else {
                parks &+= 1
                park()
                idle = 0
            }
        }
    }
}

/// Calls `attempt` until it succeeds, pausing after each failure: a spin
/// hint, and every 16th time `sched_yield` (on a small machine the thread
/// we wait for may need our CPU).
@inline(__always)
func retryUntilSuccess(_ attempt: () -> Bool) {
    var failures = 0
    while !attempt() {
        failures &+= 1
        if failures & 15 == 0 { sched_yield() } else { spinLoopHint() }
    }
}

// MARK: - Hand-offs to core threads

/// An input thread's side of handing packets to core threads (ConnP-T's
/// mailboxes, the deferred fast path's worker PCQs): the statistics of the
/// hand-off point, and which cores got packets in the current burst, so that
/// each is rung once per burst. Owned by the input thread.
///
/// Cross-core hand-offs compare where the input runs (sampled by
/// ``beginBurst()``) with where core thread `k` last noted it ran
/// (`coreCPUs[k]`, noted by the core thread once per drain), so they are
/// real whether the threads are pinned or not.
struct CoreHandoff {
    let counting: Bool
    let coreCPUs: ObservedCPUs
    var stats = OrganizationStats()
    private var cpu = HandoffCPUClassifier()
    private var depthSampler = DepthSampler(interval: 64)
    /// Core threads posted to since the last ``ringPosted(_:)`` (bit k).
    private var posted: UInt64 = 0

    init(setup: OrganizationSetup, coreCPUs: ObservedCPUs) {
        counting = setup.statistics
        self.coreCPUs = coreCPUs
    }

    /// At the start of each burst: samples the input thread's CPU.
    @inline(__always)
    mutating func beginBurst() { if counting { cpu.sample() } }

    /// Records a successful put on core `k`'s queue; `depth()` reads that
    /// queue's depth when a sample is due.
    @inline(__always)
    mutating func didPost(to k: Int, depth: () -> Int) {
        posted |= 1 << UInt64(k & 63)
        guard counting else { return }
        stats.coreQueue.queueOps &+= 1
        cpu.classify(consumerCPU: coreCPUs[k], into: &stats.stack.sync)
        if depthSampler.isDue() { stats.coreQueue.recordDepth(depth()) }
    }

    /// Rings `doorbell` (core thread `k`'s), counting with `counting` the
    /// exchange it issued and the wake-up (`futex_wake`) it made.
    @inline(__always)
    mutating func ring(_ doorbell: Doorbell) {
        guard counting else {
            doorbell.ring()
            return
        }
        let woke = doorbell.ring(countingRMWs: &stats.stack.sync.atomicRMWs)
        if woke {
            stats.stack.sync.wakeups &+= 1
            stats.stack.sync.threadWakeups &+= 1
        }
    }

    /// Rings `doorbell(k)` (as ``ring(_:)``) once for each core `k` posted
    /// to since the last call (a doorbell check per core per burst, not per
    /// packet).
    @inline(__always)
    mutating func ringPosted(_ doorbell: (Int) -> Doorbell) {
        while posted != 0 {
            let k = posted.trailingZeroBitCount
            posted &= posted &- 1
            ring(doorbell(k))
        }
    }
}
