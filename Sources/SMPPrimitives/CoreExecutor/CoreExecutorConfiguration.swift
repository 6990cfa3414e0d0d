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
        /// The defaults.
        public init() {}
    }
}
