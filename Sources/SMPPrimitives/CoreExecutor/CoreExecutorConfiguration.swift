extension CoreExecutorGroup {
    /// Tuning knobs of a group's executors, fixed when the group starts.
    public struct Configuration: Sendable {
        /// Idle loop passes (each with a CPU pause) before parking.
        public var spinPasses = 2_000
        /// Slots per mailbox ring.
        public var mailboxCapacity = 1_024
        /// Longest park while pollers are registered (how often an idle
        /// executor looks at its pollers; rounded up to nanoseconds).
        public var pollerParkTimeout: Duration = .milliseconds(1)
        /// Pin executor i to CPU i (modulo the CPU count); false leaves them unpinned.
        public var pinned = true
        /// The most incoming messages one executor may absorb into its
        /// private backlog while one of its sends waits for room in a full
        /// ring (see ``CoreExecutor/send(_:to:)``). Reaching it means
        /// handlers flood each other without ever returning; the executor
        /// traps with a message saying so. 24 + 8 bytes per message.
        public var mailboxBacklogLimit = 1 << 20
        /// The deepest nesting of synchronous `CoreExecutor.call(_:)`
        /// waits on one executor (a call whose target calls back, whose
        /// callee calls back again, ...). Deeper nesting traps, as
        /// DragonFly BSD panics past a fixed IPI nesting depth: it means
        /// unbounded recursion through the mailboxes.
        public var maxCallNesting = 16
        /// Which fence the doorbells use (see ``DoorbellFence``).
        public var doorbellFence: DoorbellFence = .automatic
        /// The defaults.
        public init() {}
    }
}
