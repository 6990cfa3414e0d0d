import Glibc
import PacketIO
import SMPPrimitives
import Synchronization

/// An IPv4/IPv6 endpoint on a multi-queue TUN device: one core executor
/// per queue, each with its own reassembly table, ICMP error rate limiter,
/// IP identification generator and pool cache, sharing one `Demux` (the
/// RCU PCB tables) for the UDP sockets of ``UDPSocket``.
///
/// Per packet on core k (`StackCore`, internal): parse (`PacketParser.parseNetwork`)
/// → UDP to a local address: delivered to its socket through the demux (an
/// IPv4 datagram with no IPv4 socket falls back to the IPv4-mapped key,
/// which reaches a dual-stack IPv6 socket unless it is v6-only) or, with no
/// socket, answered by an ICMP port unreachable (only where
/// ``ICMPErrorPolicy`` allows it, and rate-limited); a fragment →
/// reassembly, and the completed datagram is processed again; an ICMP or
/// ICMPv6 echo request to a local address → the echo reply on queue k.
/// Everything else is dropped with a reason; every packet is accounted
/// (``StackStatistics``).
///
/// Flow ownership: a flow belongs to core `hash(flow) % cores`, with a
/// keyed hash (a random seed per stack: a fixed seed would let a remote
/// sender aim all its flows at one core). A packet read on another core
/// is handed to its owner over the executors' mailboxes (one ring message,
/// no allocation) and counted as misplaced on its queue
/// (`TUNQueueReader.noteMisplaced`); the owner sends every packet of the
/// flow on its own queue, which teaches Linux's tun automq steering to
/// deliver the flow there (docs/TUN.md). Fragments and ICMP are owned by
/// the hash of their addresses alone (later fragments carry no ports).
///
/// Output: replies and socket sends are collected per core and written in
/// one batch per loop pass (an io_uring submission on a TUN queue) by a
/// poller of that core.
///
/// Concurrency contract: create and ``shutdown()`` from a thread that is
/// not one of the stack's executors. Sockets (``makeUDPSocket(_:v6Only:reusePort:core:onReadable:)``)
/// from any thread. ``statistics(core:)`` from any thread that is not an
/// executor of the stack (a synchronous call onto the core), and so is
/// ``gauges`` (what the stack holds: sockets, buffers, reassembly).
public final class EndpointStack: @unchecked Sendable {
    // @unchecked Sendable: immutable after init except `tun` (set once in
    // `start`, before any packet flows, then read-only) and `capture`
    // (immutable); each core's mutable state is touched only on its
    // executor (see StackCore).

    /// How a stack is set up.
    public struct Configuration: Sendable {
        /// The stack's own addresses (IPv4 and/or IPv6); packets to other
        /// addresses are dropped as ``StackDropReason/notLocal``.
        public var addresses: [IPAddress]
        /// Cores (executors), one per TUN queue.
        public var cores: Int
        /// The device MTU the output path fragments to.
        public var mtu: Int
        /// Receive-pool buffers (2 KiB each) shared by all cores.
        public var bufferCount: Int
        /// Reassembled-datagram buffers (64 KiB each) shared by all cores.
        public var datagramBufferCount: Int
        /// Receive-queue capacity of each socket.
        public var socketQueueCapacity: Int
        /// ICMP error rate limit per core (Linux's icmp_msgs_per_sec and
        /// icmp_msgs_burst).
        public var icmpErrorsPerSecond: Int
        /// The rate limiter's burst.
        public var icmpErrorBurst: Int
        /// Pin executor k to CPU k.
        public var pinned: Bool
        /// Idle loop passes an executor spins before it parks
        /// (`CoreExecutorGroup.Configuration.spinPasses`): lower costs
        /// less CPU between packets, higher less latency.
        public var spinPasses: Int
        /// The flow-ownership hash key (random by default).
        public var hashSeed: UInt64
        /// Reassembly limits per core.
        public var reassembly: ReassemblyConfiguration
        /// The fraction (0 to 1) of packets read from the device that the
        /// input path drops before parsing, at random (each core its own
        /// generator, seeded from ``hashSeed``), counted as
        /// ``StackDropReason/injectedLoss``: packet loss in the stack's own
        /// input, for testing the transports' recovery. 0 (off) by default.
        public var inputLoss: Double = 0
        /// TCP segmentation offload: the most MSS-sized segments one
        /// super-segment carries (``TCPConfiguration/maximumSegmentsPerSend``
        /// of every connection), when the device was opened with a
        /// virtio-net header (`TUNDevice(name:mode:virtioHeader:)`); the
        /// kernel cuts each super-segment into segments (tcp_gso_segment),
        /// so a 64 KiB burst of data costs one packet write instead of
        /// ~45. 1 or less, or a device without the header: off (one
        /// segment per packet). 44 by default: 44 × 1448 bytes fit a 64 KiB
        /// IP packet.
        public var tcpSegmentationOffload: Int = 44
        /// Super-segment buffers (``StackBuffers/segmentBufferSize`` each)
        /// shared by all cores, allocated only with segmentation offload.
        /// When none is free a super-segment goes out as separate segments.
        public var segmentBufferCount: Int = 128

        /// A configuration; every parameter sets the property of the same name.
        public init(addresses: [IPAddress], cores: Int = 1, mtu: Int = 1500, bufferCount: Int = 8192,
                    datagramBufferCount: Int = 32, socketQueueCapacity: Int = 1024,
                    icmpErrorsPerSecond: Int = 1000, icmpErrorBurst: Int = 50, pinned: Bool = false,
                    spinPasses: Int = 2_000,
                    hashSeed: UInt64 = UInt64.random(in: .min ... .max),
                    reassembly: ReassemblyConfiguration = ReassemblyConfiguration(maxQueues: 64, maxFragments: 1024)) {
            self.addresses = addresses
            self.cores = cores
            self.mtu = mtu
            self.bufferCount = bufferCount
            self.datagramBufferCount = datagramBufferCount
            self.socketQueueCapacity = socketQueueCapacity
            self.icmpErrorsPerSecond = icmpErrorsPerSecond
            self.icmpErrorBurst = icmpErrorBurst
            self.pinned = pinned
            self.spinPasses = spinPasses
            self.hashSeed = hashSeed
            self.reassembly = reassembly
        }
    }

    /// Receives the packets a core writes when the stack runs without a
    /// device (tests): core index, the packets, whose buffers the callee
    /// now owns, and the pools to read and free them with. Runs on that
    /// core's executor.
    public typealias Capture = @Sendable (_ core: Int, _ packets: UnsafeBufferPointer<PacketRef>,
                                          _ buffers: StackBuffers) -> Void

    /// The configuration (immutable).
    public let configuration: Configuration
    /// The executors: core k reads and writes queue k.
    public let group: CoreExecutorGroup
    /// The PCB tables and sockets.
    public let demux: Demux<QSBR>
    /// The pools.
    public let buffers: StackBuffers
    /// The per-core engines.
    let cores: [StackCore]
    /// The UDP port reservations (bind conflicts, ephemeral ports).
    let ports = UDPPortTable()
    /// SO_REUSEPORT groups by bound endpoint (a pthread lock: joins and
    /// leaves on several threads contend, see `PthreadMutex`).
    let reuseGroups = PthreadLockedValue<[InetEndpoint: ReusePortGroup]>([:])
    /// The ISN generator of every TCP listener and active open (RFC 6528:
    /// one secret key).
    let isn = TCPISNGenerator()
    /// RFC 6056's next_ephemeral of TCP's active opens (a relaxed
    /// counter: it only spreads the attempts, the PCB insert arbitrates).
    let tcpEphemeralCounter = Atomic<UInt32>(UInt32.random(in: 0 ... .max))
    /// The live counts of ``StackGauges`` no table keeps.
    let live = StackLiveCounts()
    let capture: Capture?
    /// Whether TCP connections send super-segments (the device has a
    /// virtio-net header and ``Configuration/tcpSegmentationOffload`` is
    /// above 1). Immutable; any thread.
    public var segmentationOffload: Bool { tcpSegmentsPerSend > 1 }
    /// The TUN reader, when started on a device.
    nonisolated(unsafe) private(set) var reader: TUNQueueReader?
    private let finalStatistics = Mutex<[StackStatistics]?>(nil)
    /// The cores' gauges at shutdown (their caches and tables stay as they
    /// were: nothing runs on them any more).
    private let finalCoreGauges = Mutex<[CoreGauges]?>(nil)
    /// What ``TCPConfiguration/maximumSegmentsPerSend`` the stack's
    /// connections get: ``Configuration/tcpSegmentationOffload`` on a device
    /// with a virtio-net header, else 1.
    let tcpSegmentsPerSend: Int
    private let firstIPv4: IPAddress?
    private let firstIPv6: IPAddress?

    /// A stack without a device: packets come in through
    /// ``inject(_:core:)`` and go out to `capture`. Any thread that is not
    /// an executor; starts `configuration.cores` executors.
    public convenience init(configuration: Configuration, capture: Capture? = nil) {
        self.init(configuration: configuration, capture: capture, segmentationOffload: false)
    }

    /// A stack; with `segmentationOffload` (a device with a virtio-net
    /// header) its TCP connections send super-segments.
    init(configuration: Configuration, capture: Capture?, segmentationOffload: Bool) {
        precondition(configuration.cores >= 1)
        let offload = segmentationOffload && configuration.tcpSegmentationOffload > 1
        tcpSegmentsPerSend = offload ? configuration.tcpSegmentationOffload : 1
        self.configuration = configuration
        self.capture = capture
        firstIPv4 = configuration.addresses.first { $0.family == .ipv4 }
        firstIPv6 = configuration.addresses.first { $0.family == .ipv6 }
        var executorConfiguration = CoreExecutorGroup.Configuration()
        executorConfiguration.pinned = configuration.pinned
        executorConfiguration.spinPasses = configuration.spinPasses
        group = CoreExecutorGroup(count: configuration.cores, configuration: executorConfiguration)
        let pool = PacketPool(bufferCount: configuration.bufferCount)
        let datagramPool = PacketPool(bufferCount: configuration.datagramBufferCount,
                                      bufferSize: ReassemblyTable.recommendedDatagramBufferSize, batchSize: 4)
        let segmentPool = offload
            ? PacketPool(bufferCount: configuration.segmentBufferCount, bufferSize: StackBuffers.segmentBufferSize,
                         batchSize: 8)
            : nil
        let buffers = StackBuffers(pool: pool, datagramPool: datagramPool, segmentPool: segmentPool)
        self.buffers = buffers
        demux = Demux(configuration: .init(queueCapacity: configuration.socketQueueCapacity, pool: pool,
                                           release: { buffers.free($0) }))
        var cores: [StackCore] = []
        for k in 0..<configuration.cores {
            cores.append(StackCore(index: k, executor: group.executors[k], configuration: configuration,
                                   demux: demux, buffers: buffers))
        }
        self.cores = cores
        let opaque = UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())
        for c in cores {
            c.stackBits = opaque
            c.capture = capture
            c.peers = group.executors
            c.executor.addPoller { [c] in c.poll() }
        }
    }

    /// Starts a stack on `device`: queue k is read and written by core k
    /// (`configuration.cores` must equal the device's queue count).
    /// A device opened with a virtio-net header turns on TCP segmentation
    /// offload (``Configuration/tcpSegmentationOffload``).
    /// Any thread that is not an executor.
    /// - Throws: `TUNError` if the reader cannot start.
    public static func start(on device: TUNDevice, configuration: Configuration) throws(TUNError) -> EndpointStack {
        precondition(configuration.cores == device.queues.count, "one core per queue")
        let stack = EndpointStack(configuration: configuration, capture: nil,
                                  segmentationOffload: device.virtioHeaderSize > 0)
        let cores = stack.cores
        // Each core learns the reader on its own executor before the reader
        // starts polling (the reader's input gets it too, see below).
        let reader = try TUNQueueReader(device: device, executors: stack.group, pool: stack.buffers.pool) {
            reader, queue, packets in
            cores[queue].input(packets, reader: reader)
        }
        stack.reader = reader
        for c in cores { stack.group.call(on: c.index) { [c, reader] in c.tun = reader } }
        return stack
    }

    deinit { shutdown() }

    /// Stops the device reader and the executors; the counters are kept
    /// (``statistics(core:)`` returns them afterwards). Idempotent; not on
    /// an executor of the stack.
    public func shutdown() {
        let done = finalStatistics.withLock { $0 != nil }
        if done { return }
        reader?.stop()
        let stats = (0..<cores.count).map { k in group.call(on: k) { [c = cores[k]] in (c.stats, c.gauges) } }
        finalCoreGauges.withLock { $0 = stats.map(\.1) }
        finalStatistics.withLock { $0 = stats.map(\.0) }
        group.shutdown(runPending: false)
    }

    /// Core `core`'s counters (a synchronous call onto the core while the
    /// stack runs; the final values after ``shutdown()``). Not on an
    /// executor of the stack.
    public func statistics(core: Int) -> StackStatistics {
        if let s = finalStatistics.withLock({ $0 }) { return s[core] }
        return group.call(on: core) { [c = cores[core]] in c.stats }
    }

    /// The sum over all cores.
    public var totalStatistics: StackStatistics {
        (0..<cores.count).reduce(StackStatistics()) { $0 + statistics(core: $1) }
    }

    /// What the stack holds now: sockets, table entries, buffers per pool,
    /// reassembly queues (see ``StackGauges``). Any thread that is not an
    /// executor of the stack: one synchronous call onto each core (its
    /// caches, output batch and reassembly table are read there), one lock
    /// of each pool, of the port table and of the reuseport groups; after
    /// ``shutdown()`` the cores' part is what they held when they stopped.
    ///
    /// Exact when the stack is quiescent (no traffic, no socket being made
    /// or closed). While traffic flows the parts are read at slightly
    /// different instants: buffers moving between a core's cache and the
    /// pool's global stack between the two reads can make `inUse` off by
    /// up to a cache batch per core (64 receive buffers), either way.
    public var gauges: StackGauges {
        let cores = finalCoreGauges.withLock { $0 }
            ?? (0..<self.cores.count).map { k in group.call(on: k) { [c = self.cores[k]] in c.gauges } }
        var g = StackGauges()
        for c in cores {
            g.receiveBuffers.cachedFree += c.cachedFree
            g.outputBatched += c.outputBatched
            g.reassemblyQueues += c.reassemblyQueues
            g.reassemblyFragments += c.reassemblyFragments
            g.reassemblyBytes += c.reassemblyBytes
        }
        // The global stacks after the cores: a buffer a core freed to its
        // cache before our call is counted free once, in the cache.
        let pool = buffers.pool, datagramPool = buffers.datagramPool
        g.receiveBuffers.capacity = pool.bufferCount
        g.receiveBuffers.inUse = pool.bufferCount - pool.globalFreeCount - g.receiveBuffers.cachedFree
        g.datagramBuffers.capacity = datagramPool.bufferCount
        g.datagramBuffers.inUse = datagramPool.bufferCount - datagramPool.globalFreeCount
        g.openSockets = live.openSockets.load(ordering: .relaxed)
        g.socketWorkers = live.workers.load(ordering: .relaxed)
        g.reusePortMemberLists = live.memberLists.load(ordering: .relaxed)
        g.tcpListeners = live.tcpListeners.load(ordering: .relaxed)
        g.tcpConnections = live.tcpConnections.load(ordering: .relaxed)
        g.tcpSocketObjects = live.tcpSocketObjects.load(ordering: .relaxed)
        g.liveSockets = demux.table.liveSockets
        g.closingSockets = demux.table.closingSockets
        g.boundEntries = demux.table.boundCount
        g.connectedEntries = demux.table.connectedCount
        g.tableNodesPendingReclaim = demux.table.reclamationBacklog.pending
        g.portReservations = ports.reservationCount
        g.reusePortGroups = reuseGroups.withLock { $0.count }
        return g
    }

    /// Core `core`'s reassembly counters (as ``statistics(core:)``).
    public func reassemblyStatistics(core: Int) -> ReassemblyStatistics {
        group.call(on: core) { [c = cores[core]] in c.reassembly.statistics }
    }

    /// The TUN reader's counters of queue `queue`, if running on a device.
    public func queueStatistics(queue: Int) -> TUNQueueReader.Statistics? {
        reader?.statistics(queue: queue)
    }

    /// Copies `packet` (a raw IP datagram) into a receive buffer and
    /// processes it on core `core` as if read from queue `core`; replies go
    /// to the capture output (or the device). For tests and tools; any
    /// thread that is not an executor of the stack. False if the pool is
    /// exhausted or the packet too large.
    @discardableResult
    public func inject(_ packet: [UInt8], core: Int = 0) -> Bool {
        group.call(on: core) { [c = cores[core]] in c.inject(packet) }
    }

    // MARK: Internal

    /// Whether `address` is one of the stack's (IPv4-mapped IPv6 forms
    /// count as their IPv4 address).
    func isLocal(_ address: IPAddress) -> Bool { cores[0].isLocal(address) }

    /// The stack's first address of `family`, if any (a stored value:
    /// every send from a wildcard-bound socket asks).
    func localAddress(_ family: AddressFamily) -> IPAddress? {
        family == .ipv4 ? firstIPv4 : firstIPv6
    }

    /// The core of the calling thread, if it is one of the stack's executors.
    var currentCore: StackCore? {
        guard let e = CoreExecutor.current, e.core < cores.count, group.executors[e.core] === e else { return nil }
        return cores[e.core]
    }

    /// The core that owns the UDP flow between `local` and `remote` (IPv4
    /// forms, never IPv4-mapped).
    func owner(local: InetEndpoint, remote: InetEndpoint) -> Int {
        cores[0].owner(local: local.address, localPort: local.port, remote: remote.address, remotePort: remote.port)
    }
}

extension IPAddress {
    /// The IPv4-mapped IPv6 form (::ffff:a.b.c.d) of an IPv4 address.
    @inlinable var mappedToIPv6: IPAddress { IPAddress(ipv6High: 0, low: 0xffff_0000_0000 | low) }
    /// Whether this is an IPv4-mapped IPv6 address.
    @inlinable var isIPv4Mapped: Bool { family == .ipv6 && high == 0 && low >> 32 == 0xffff }
    /// The IPv4 address of an IPv4-mapped IPv6 address (self otherwise).
    @inlinable var unmapped: IPAddress { isIPv4Mapped ? IPAddress(ipv4: UInt32(truncatingIfNeeded: low)) : self }
}

extension InetEndpoint {
    /// The endpoint with an IPv4-mapped address turned into IPv4.
    var unmapped: InetEndpoint { InetEndpoint(address.unmapped, port) }
}
