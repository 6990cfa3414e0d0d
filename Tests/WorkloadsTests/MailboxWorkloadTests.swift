import SMPPrimitives
import Synchronization
import Testing
import Workloads

/// Every implementation of the three executor workloads, at a small size,
/// must verify its own result.
///
/// The workloads block their calling thread (joins, semaphores) while
/// their baselines run Swift tasks, so each runs on a dedicated thread and
/// the test awaits it: blocking a cooperative-pool thread (2 on this
/// machine) could starve those tasks.
@Suite(.serialized) struct MailboxWorkloadTests {
    @Test(arguments: ["mailbox-pingpong", "mailbox-stream", "defer-coalesce"])
    func everyImplementationChecks(workload: String) async {
        guard let w = WorkloadRegistry.named(workload) else {
            Issue.record("workload \(workload) is not registered")
            return
        }
        #expect(w.impls.count >= 5)
        for (name, run) in w.impls {
            let n = workload == "mailbox-pingpong" ? 2_000 : 20_000
            let r = await offPool { run(WorkloadOptions(n: n, capSeconds: 20)) }
            #expect(r.checked, "\(workload) \(name): \(r.note ?? "")")
            #expect(r.ops == n, "\(workload) \(name) did \(r.ops) of \(n)")
            #expect(r.workload == workload && r.impl == name)
        }
    }
}

/// Runs `body` on a new thread and resumes with its result.
func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    let thread = Mutex<PinnedThread<Void>?>(nil)
    let result = await withCheckedContinuation { (k: CheckedContinuation<T, Never>) in
        let t = PinnedThread(cpu: nil, name: "workload") { k.resume(returning: body()) }
        thread.withLock { $0 = t }
    }
    thread.withLock { $0 }?.join()
    return result
}
