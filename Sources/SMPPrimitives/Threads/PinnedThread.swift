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

/// The number of CPUs this process may run on (`sched_getaffinity`, read
/// once at first use), at least 1. A global constant: any thread; later
/// affinity changes are not seen.
public let onlineCPUCount: Int = Int(smp_allowed_cpu_count())

/// The CPU the calling thread runs on at this instant (`sched_getcpu`), or
/// -1 if the kernel does not say. Any thread; a few nanoseconds (a load
/// from the thread's rseq area with glibc 2.35+). The thread may migrate
/// right after: callers that classify events by CPU sample it once per
/// batch and say so.
@inline(__always)
public func currentCPU() -> Int {
    Int(smp_current_cpu())
}

/// A dedicated pthread, optionally pinned to one CPU, that runs one closure
/// and hands its result to the thread that joins it.
///
/// Dedicated threads are what liburcu's QSBR flavour and the per-core
/// executors need: a thread whose whole life the caller controls (unlike a
/// Swift concurrency pool thread). Creating one costs a `pthread_create`;
/// it is not a hot-path operation.
///
/// Values cross without `Sendable` boxes: the body is a `sending` closure
/// (what it captures moves to the new thread, and the compiler checks that
/// the spawning code no longer uses it), and ``join()`` returns the body's
/// result as `sending` (it moves back to the joiner). The result is written
/// by the thread before it exits and read after `pthread_join`, which POSIX
/// orders after everything the thread did.
///
/// Concurrency contract: ``join()`` may be called from any thread, once
/// (a second call traps: the result was already handed over); waiting is
/// shared, so `deinit` joins a thread nobody joined (a thread is never
/// leaked detached) and drops its result.
public final class PinnedThread<Result>: @unchecked Sendable {
    // @unchecked Sendable: `handle` is a Mutex; `result` is written once by
    // the thread before it exits and read only by the one joiner, after
    // pthread_join (which synchronizes with the thread's termination).

    /// The CPU the thread was pinned to, or nil if it was left unpinned.
    public let cpu: Int?
    private let handle: Mutex<pthread_t?>
    private let result: ResultSlot<Result>

    /// Starts a thread running `body`.
    ///
    /// - Parameters:
    ///   - cpu: the CPU to pin to, taken modulo ``onlineCPUCount`` (so a
    ///     workload written for 4 CPUs still runs on 2); nil leaves it unpinned.
    ///   - name: a thread name (at most 15 bytes are kept) for `top`/`gdb`.
    ///   - body: the thread's whole work; what it returns is handed to
    ///     ``join()``.
    public init(cpu: Int? = nil, name: String = "smp-worker", _ body: sending @escaping () -> sending Result) {
        let pinned = cpu.map { $0 % onlineCPUCount }
        self.cpu = pinned
        let slot = ResultSlot<Result>()
        result = slot
        let start = Unmanaged.passRetained(ThreadStart(cpu: pinned, name: name) { slot.value = body() })
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, pinnedThreadEntry, start.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        self.handle = Mutex(tid)
    }

    /// Waits for the thread's body to return and hands over its result.
    /// Any thread but this one; at most once.
    @discardableResult
    public func join() -> sending Result {
        waitForExit()
        guard let r = result.value.take() else { preconditionFailure("PinnedThread joined twice") }
        // The thread has exited (pthread_join) and nobody else can reach
        // the slot's value: it is disconnected from every other region.
        nonisolated(unsafe) let value = r
        return value
    }

    /// Waits for the thread to exit. Idempotent; concurrent callers each
    /// return once it has exited (the first one joins).
    private func waitForExit() {
        handle.withLock { h in
            if let tid = h {
                pthread_join(tid, nil)
                h = nil
            }
        }
    }

    deinit { waitForExit() }
}

/// Where a thread's body leaves its result for the joiner.
private final class ResultSlot<Result> {
    var value: Result?
}

/// Pins the calling thread to `cpu` (modulo ``onlineCPUCount``).
/// Returns false if the kernel refused.
@discardableResult
public func pinCurrentThread(to cpu: Int) -> Bool {
    smp_pin_current_thread(Int32(cpu % onlineCPUCount)) == 0
}

/// What a new thread needs before it runs its body. Passed through
/// `pthread_create` as a retained raw pointer: it belongs to the new thread.
private final class ThreadStart {
    let cpu: Int?
    let name: String
    let run: () -> Void
    init(cpu: Int?, name: String, run: @escaping () -> Void) {
        self.cpu = cpu
        self.name = name
        self.run = run
    }
}

// A nonisolated free function: a closure literal written in a main-actor
// context would be main-actor isolated and trap on the new thread.
private func pinnedThreadEntry(_ arg: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let start = Unmanaged<ThreadStart>.fromOpaque(arg!).takeRetainedValue()
    if let cpu = start.cpu { pinCurrentThread(to: cpu) }
    smp_set_current_thread_name(start.name)
    start.run()
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

    /// A barrier for `parties` threads (at least 1).
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
