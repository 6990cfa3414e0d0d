import CSMPLinux
import CURCU
import Glibc
import Synchronization

/// A hint to the processor that the caller is spinning (x86 `PAUSE`).
///
/// Call it inside every busy-wait loop: it lowers power use, frees the
/// sibling hyperthread and avoids the memory-order-violation pipeline flush
/// when the awaited store arrives. Costs a few to ~140 cycles; any thread.
@inline(__always)
public func spinLoopHint() {
    curcu_cpu_relax()
}

/// The number of CPUs this process may run on (`sched_getaffinity` at
/// start-up), at least 1.
public let onlineCPUCount: Int = Int(smp_allowed_cpu_count())

/// A dedicated pthread, optionally pinned to one CPU, that runs one closure
/// and can be joined.
///
/// Dedicated threads are what liburcu's QSBR flavour and the per-core
/// executors need: a thread whose whole life the caller controls (unlike a
/// Swift concurrency pool thread). Creating one costs a `pthread_create`;
/// it is not a hot-path operation.
///
/// Concurrency contract: `start` and `join` may be called from any thread;
/// `join` must be called exactly once (it is also called by `deinit` if the
/// caller forgot, so a thread is never leaked detached).
public final class PinnedThread: Sendable {
    /// The CPU the thread was pinned to, or nil if it was left unpinned.
    public let cpu: Int?
    private let handle: Mutex<pthread_t?>

    /// Starts a thread running `body`.
    ///
    /// - Parameters:
    ///   - cpu: the CPU to pin to, taken modulo ``onlineCPUCount`` (so a
    ///     workload written for 4 CPUs still runs on 2); nil leaves it unpinned.
    ///   - name: a thread name (at most 15 bytes are kept) for `top`/`gdb`.
    ///   - body: the thread's whole work.
    public init(cpu: Int? = nil, name: String = "smp-worker", _ body: @escaping @Sendable () -> Void) {
        let pinned = cpu.map { $0 % onlineCPUCount }
        self.cpu = pinned
        let box = Unmanaged.passRetained(ThreadStart(cpu: pinned, name: name, body: body))
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, pinnedThreadEntry, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        self.handle = Mutex(tid)
    }

    /// Waits for the thread's body to return. Idempotent.
    public func join() {
        let tid = handle.withLock { h -> pthread_t? in
            defer { h = nil }
            return h
        }
        if let tid { pthread_join(tid, nil) }
    }

    deinit { join() }
}

/// Pins the calling thread to `cpu` (modulo ``onlineCPUCount``).
/// Returns false if the kernel refused.
@discardableResult
public func pinCurrentThread(to cpu: Int) -> Bool {
    smp_pin_current_thread(Int32(cpu % onlineCPUCount)) == 0
}

private final class ThreadStart {
    let cpu: Int?
    let name: String
    let body: @Sendable () -> Void
    init(cpu: Int?, name: String, body: @escaping @Sendable () -> Void) {
        self.cpu = cpu
        self.name = name
        self.body = body
    }
}

// A nonisolated free function: a closure literal written in a main-actor
// context would be main-actor isolated and trap on the new thread.
private func pinnedThreadEntry(_ arg: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let start = Unmanaged<ThreadStart>.fromOpaque(arg!).takeRetainedValue()
    if let cpu = start.cpu { pinCurrentThread(to: cpu) }
    smp_set_current_thread_name(start.name)
    start.body()
    return nil
}

/// A reusable sense-reversing spin barrier for a fixed number of threads.
///
/// Used to start the threads of a stress round or a benchmark at the same
/// instant. Waiters spin with ``spinLoopHint()`` and then `sched_yield`, so
/// oversubscribed rounds (more threads than CPUs) still make progress.
/// Any thread may call ``wait()``; exactly `parties` threads must call it
/// per round.
public final class SpinBarrier: Sendable {
    private let parties: Int
    private let arrived = Atomic<Int>(0)
    private let generation = Atomic<Int>(0)

    public init(parties: Int) {
        precondition(parties > 0)
        self.parties = parties
    }

    /// Blocks until all `parties` threads have arrived.
    public func wait() {
        // Acquire the generation first so that the release by the last
        // arriver below orders everything before the barrier before
        // everything after it, for every party.
        let gen = generation.load(ordering: .acquiring)
        if arrived.add(1, ordering: .acquiringAndReleasing).newValue == parties {
            arrived.store(0, ordering: .relaxed)
            generation.store(gen &+ 1, ordering: .releasing)
            return
        }
        var spins = 0
        while generation.load(ordering: .acquiring) == gen {
            spins += 1
            if spins < 1_000 { spinLoopHint() } else { sched_yield() }
        }
    }
}
