// MARK: - Swift Concurrency bridge

extension CoreExecutor: TaskExecutor {
    /// Runs a task job on this executor's thread, so that
    /// `Task(executorPreference: executor) { ... }` and
    /// `withTaskExecutorPreference(executor) { ... }` pin async code to the
    /// core. From an executor of the same group the job is one mailbox
    /// message (no allocation); otherwise it goes through the foreign queue.
    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        if let me = currentPeer {
            let jobBits = unsafeBitCast(unowned, to: UInt.self)
            let exe = UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())
            me.send(MailboxMessage(function: runTaskJobMessage, jobBits, exe), to: self)
        } else {
            enqueueForeign(.task(unowned))
        }
    }
}

let runTaskJobMessage: MailboxMessage.Function = { a, b in
    let job = unsafeBitCast(a, to: UnownedJob.self)
    let exe = Unmanaged<CoreExecutor>.fromOpaque(UnsafeMutableRawPointer(bitPattern: b)!)
    exe._withUnsafeGuaranteedRef { job.runSynchronously(on: $0.asUnownedTaskExecutor()) }
}
