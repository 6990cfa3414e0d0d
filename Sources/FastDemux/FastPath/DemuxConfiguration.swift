extension Demux {
    /// How a ``Demux`` and its sockets and inputs are set up (a value,
    /// fixed at ``Demux/init(configuration:)``).
    public struct Configuration: Sendable {
        /// Receive-queue capacity of new sockets (full = drop, counted).
        public var queueCapacity: Int = 256
        /// When the fast path ACKs TCP segments.
        public var ackPolicy: TCPAckPolicy = .default
        /// Where packets still queued in closed sockets are returned.
        public var pool: PacketPool?
        /// Frees a packet still queued in a closed socket instead of
        /// `pool` (for packet words that name buffers of several pools, as
        /// NetStack's reassembled datagrams do). Called on the thread that
        /// finishes the teardown (the closer, or call_rcu's thread for a
        /// deferred close).
        public var release: (@Sendable (PacketRef) -> Void)?
        /// Record the receive-queue depth after every `n`-th successful put
        /// (reading the depth touches the reader's index line, so it is
        /// sampled). 0 disables depth sampling.
        public var depthSampleInterval: Int = 64
        /// Expected number of connections (initial table size).
        public var expectedConnections: Int = 4096

        /// A configuration; every parameter sets the property of the same name.
        public init(queueCapacity: Int = 256, ackPolicy: TCPAckPolicy = .default, pool: PacketPool? = nil,
                    depthSampleInterval: Int = 64, expectedConnections: Int = 4096,
                    release: (@Sendable (PacketRef) -> Void)? = nil) {
            self.release = release
            self.queueCapacity = queueCapacity
            self.ackPolicy = ackPolicy
            self.pool = pool
            self.depthSampleInterval = depthSampleInterval
            self.expectedConnections = expectedConnections
        }
    }
}
