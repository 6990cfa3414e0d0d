import Glibc
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
    /// The baselines that run on Swift concurrency's cooperative pool. In
    /// this process the pool is shared with every other test, and Swift
    /// Testing runs synchronous tests on it too: two long ones (the
    /// namespace and stress suites) hold both of its threads on a 2-core
    /// machine, and an AsyncStream ping-pong then made 0 round trips in
    /// 57 s (CI's ASan lane). So they are checked in a process of their
    /// own (`poolBaselinesCheckInAProcessOfTheirOwn`), where the pool is
    /// theirs.
    static let poolImpls: Set<String> = ["actor", "asyncstream"]

    @Test(arguments: ["mailbox-pingpong", "mailbox-stream", "defer-coalesce"])
    func everyImplementationChecks(workload: String) async {
        guard let w = WorkloadRegistry.named(workload) else {
            Issue.record("workload \(workload) is not registered")
            return
        }
        #expect(w.impls.count >= 5)
        #expect(Set(w.impls.map(\.name)).isSuperset(of: Self.poolImpls))
        for (name, run) in w.impls where !Self.poolImpls.contains(name) {
            let n = workload == "mailbox-pingpong" ? 2_000 : 20_000
            let r = await offPool { run(WorkloadOptions(n: n, capSeconds: 20)) }
            #expect(r.checked, "\(workload) \(name): \(r.note ?? "")")
            #expect(r.ops == n, "\(workload) \(name) did \(r.ops) of \(n)")
            #expect(r.workload == workload && r.impl == name)
        }
    }

    @Test func poolBaselinesCheckInAProcessOfTheirOwn() async {
        let r = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var failed = false
            for workload in ["mailbox-pingpong", "mailbox-stream", "defer-coalesce"] {
                guard let w = WorkloadRegistry.named(workload) else { exit(2) }
                for (name, run) in w.impls where MailboxWorkloadTests.poolImpls.contains(name) {
                    let n = workload == "mailbox-pingpong" ? 2_000 : 20_000
                    let r = await offPool { run(WorkloadOptions(n: n, capSeconds: 20)) }
                    if !r.checked || r.ops != n || r.workload != workload || r.impl != name {
                        let line = "\(workload) \(name): checked \(r.checked), \(r.ops) of \(n): \(r.note ?? "")\n"
                        _ = line.withCString { write(2, $0, strlen($0)) }
                        failed = true
                    }
                }
            }
            exit(failed ? 1 : 0)
        }
        if let r, r.exitStatus != .exitCode(0) {
            Issue.record("\(String(decoding: r.standardErrorContent, as: UTF8.self))")
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
