// Waiting for async code from a synchronous workload runner.
import Dispatch
import Synchronization

/// Runs `body` in a new task and blocks the calling thread until it
/// returns, handing back its result.
///
/// The runners are synchronous (they join threads); their async baselines
/// run in tasks. Call it from a thread outside Swift's cooperative pool (a
/// runner's own thread): blocking a pool thread could starve the task.
func blockingAwait<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let box = Mutex<T?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let v = await body()
        box.withLock { $0 = v }
        done.signal()
    }
    done.wait()
    return box.withLock { $0 }!
}
