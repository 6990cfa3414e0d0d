import Synchronization
import SMPPrimitives

/// The delivery step, written once: what every stack organization does
/// with a packet once it has found the packet's socket and holds whatever
/// serializes the connection. The fast path (``DemuxInput``, also behind
/// DemuxLab's direct and deferred fast-path organizations) and DemuxLab's
/// MsgP, ConnP-T and ConnP-L organizations run exactly this code, so that
/// the differences between them come from the organization alone: which
/// thread delivers, which locks it takes.
///
/// Per packet (``deliver(_:to:tcp:counting:)``): the closed check, one PCQ
/// put on the socket's receive queue, the run tracking for the readiness
/// pass, a sampled depth, and for TCP the receive state and the immediate
/// ACK (`SocketDelivery+TCP.swift`). Per batch (``flush(counting:)``): one
/// full fence, then per touched socket its ready-set bit, its worker's
/// schedule and its parked reader's wake-up, the ready set's reader rung
/// once per run of its sockets (`SocketDelivery+Readiness.swift`), and the
/// batch's ACKs handed to the sink. No allocation, no retain or release.
///
/// Statistics: the plain outcome counters (offered, enqueued, drops, TCP
/// ACK and sequence counters, worker schedules) are always kept; the
/// synchronization points and hand-off observations (atomic RMWs, lock
/// acquisitions, wake-ups, cross-core hand-offs, queue operations, depth
/// and batch-size histograms) only with `counting`. `counting` is a
/// parameter rather than a stored flag so that a caller passing a constant
/// (the fast path passes `true`) pays no test for it once inlined. Each is
/// counted where its event happens (docs/Statistics.md): the PCQ reports
/// the RMWs of each put, a ring is counted by what it did, and a cross-core
/// hand-off compares the CPU this thread runs on (sampled at the first
/// enqueue of each batch) with the CPU the socket's reader was last seen on.
///
/// Concurrency contract: owned by one thread (an input thread or a core
/// thread), never shared; `~Copyable`, kept inline in its owner. The touched
/// sockets must stay alive until the next ``flush(counting:)``: the caller
/// flushes inside the read section in which it looked them up, or while
/// holding what keeps them attached, or on the thread that owns them.
@usableFromInline
package struct SocketDelivery: ~Copyable {
    /// The statistics of this thread's deliveries (plain counters).
    @usableFromInline package var stats = DemuxStats()
    /// The delivering thread's CPU, sampled once per batch, against which
    /// each enqueue's reader CPU is classified (with `counting`).
    @usableFromInline var handoffCPU = HandoffCPUClassifier()
    /// Which puts record the receive-queue depth.
    @usableFromInline var depthSampler: DepthSampler
    /// Touched-socket runs (and ACKs) kept before a flush is forced.
    @usableFromInline let capacity: Int
    /// Sockets that got packets since the last flush, deduplicated against
    /// the previous entry, with the run length of each.
    @usableFromInline let touched: UnsafeMutablePointer<SocketReference>
    @usableFromInline let touchedRuns: UnsafeMutablePointer<Int>
    @usableFromInline var touchedCount = 0
    /// The ACKs decided since the last flush.
    @usableFromInline let acks: UnsafeMutablePointer<TCPAck>
    @usableFromInline var ackCount = 0
    /// Receives the ACKs at each flush (a no-op when none was given:
    /// non-optional, so calling it needs no unwrap).
    @usableFromInline let ackSink: @Sendable (UnsafeBufferPointer<TCPAck>) -> Void

    /// - Parameters:
    ///   - depthSampleInterval: see ``Demux/Configuration/depthSampleInterval``.
    ///   - capacity: socket runs (and ACKs) buffered before a forced flush.
    ///   - ackSink: receives the ACKs decided, once per flush, as a buffer
    ///     valid only during the call.
    @usableFromInline
    package init(depthSampleInterval: Int, capacity: Int,
                 ackSink: (@Sendable (UnsafeBufferPointer<TCPAck>) -> Void)? = nil) {
        precondition(capacity >= 1)
        depthSampler = DepthSampler(interval: depthSampleInterval)
        self.capacity = capacity
        self.ackSink = ackSink ?? { _ in }
        touched = .allocate(capacity: capacity)
        touchedRuns = .allocate(capacity: capacity)
        acks = .allocate(capacity: capacity)
    }

    deinit {
        touched.deallocate()
        touchedRuns.deallocate()
        acks.deallocate()
    }

    /// Delivers one packet whose lookup found `socket` (nil: no socket,
    /// counted as `no_socket`). Counts the packet as offered.
    ///
    /// `tcp` says what serializes the connection's TCP receive state (see
    /// ``TCPSerialization``). Per packet: a relaxed load of the socket's
    /// state, one PCQ put, plain counter updates; for TCP the receive state
    /// (run between the put's reservation and its publication: see
    /// ``deliverReserving(_:to:tcp:counting:)``).
    @inlinable
    @inline(__always)
    @discardableResult
    package mutating func deliver(_ packet: DemuxPacket, to socket: SocketReference?, tcp: TCPSerialization,
                                  counting: Bool) -> DemuxVerdict {
        // A full run or ACK buffer is flushed here, before the reservation,
        // not inside it: a flush between reserving and publishing would
        // ring the reader for a slot it cannot take yet (it would spin
        // until the publication below). The same test `remember` makes.
        makeRoom(for: 1, counting: counting)
        switch deliverReserving(packet, to: socket, tcp: tcp, counting: counting) {
        case .ticket(let t):
            socket.unsafelyUnwrapped.withSocket { $0.queue.publish(packet.packet, at: t) }
            return .queued
        case .dropped(let reason):
            return .dropped(reason)
        }
    }

    /// ``deliver(_:to:tcp:counting:)`` except that the packet's value is
    /// not written yet: on `.ticket(t)` everything else is done (counted
    /// as enqueued, remembered for the readiness pass, TCP state and ACK)
    /// and the caller must `socket.queue.publish(packet.packet, at: t)`
    /// before the next ``flush(counting:)`` and before any
    /// ``flush(counting:)`` this delivery could force, i.e. with at most
    /// ``capacity`` runs and ACKs added since the last flush.
    ///
    /// Why split: every reservation (a CAS on the producer line) and every
    /// TCP try-lock is a locked instruction, which waits until the store
    /// buffer has drained. A value and flag store goes to lines the reader
    /// took last, so it waits for their transfer from the reader's core;
    /// interleaved with the locked instructions of the next packet, each
    /// packet paid one such transfer after another. Reserving a chunk
    /// first and publishing it after lets the chunk's stores overlap.
    @inlinable
    @inline(__always)
    package mutating func deliverReserving(_ packet: DemuxPacket, to socket: SocketReference?, tcp: TCPSerialization,
                                           counting: Bool) -> Reservation {
        stats.offered &+= 1
        guard let socket else {
            stats.drops.record(.noSocket)
            return .dropped(.noSocket)
        }
        // No retain: the caller keeps the socket alive (see the type's
        // contract).
        return socket.withSocket { s in
            let r = reserve(packet, on: s, counting: counting)
            if case .ticket = r { admitted(packet, on: s, socket, tcp: tcp, counting: counting) }
            return r
        }
    }

    /// Flushes now if `count` more runs or ACKs could overflow the
    /// buffers (so that ``deliverReserving(_:to:tcp:counting:)`` of `count`
    /// packets never forces a flush before their values are published).
    @inlinable
    package mutating func makeRoom(for count: Int, counting: Bool) {
        if touchedCount &+ count > capacity || ackCount &+ count > capacity { flush(counting: counting) }
    }

    /// The first half of an enqueue: the closed check and the reservation
    /// of a slot in `s`'s receive queue (the ticket), or the drop with its
    /// counts. A `.ticket` must be published (`PCQ.publish`) exactly
    /// once, before the next ``flush(counting:)``: until then the reader
    /// sees the queue end before it (as behind a preempted producer).
    @inlinable
    @inline(__always)
    package mutating func reserve(_ packet: DemuxPacket, on s: Socket, counting: Bool) -> Reservation {
        // Not locking the socket (the NetBSD proposal): its state word is
        // read relaxed; a close racing with us is caught by the teardown
        // drain, which runs after a grace period or under the caller's lock.
        if s.stateWord.load(ordering: .relaxed) == SocketState.closed.rawValue {
            stats.drops.record(.socketClosed)
            s.droppedClosedCount.add(1, ordering: .relaxed)
            if counting { stats.sync.atomicRMWs &+= 1 }
            return .dropped(.socketClosed)
        }
        let ticket: UInt?
        if counting {
            stats.socketQueue.queueOps &+= 1
            // The queue counts the RMWs of this put (its ticket CAS, lost
            // CASes retried, a failed put's counter, high-water CASes).
            var puts = PCQPutCounts()
            ticket = s.queue.reserve(&puts)
            stats.sync.add(puts)
        } else {
            ticket = s.queue.reserve()
        }
        guard let ticket else {
            stats.drops.record(.queueFull)
            s.droppedQueueFullCount.add(1, ordering: .relaxed)
            if counting { stats.sync.atomicRMWs &+= 1 }
            return .dropped(.queueFull)
        }
        return .ticket(ticket)
    }

    /// The second half: the bookkeeping of a packet whose slot was
    /// reserved (counted as enqueued; the hand-off classified, the depth
    /// sampled, the socket remembered for the readiness pass) and for TCP
    /// the receive state and the immediate ACK. Independent of whether the
    /// slot is published yet: the ACK leaves at the next flush, after it.
    @inlinable
    @inline(__always)
    package mutating func admitted(_ packet: DemuxPacket, on s: Socket, _ ref: SocketReference,
                                   tcp: TCPSerialization, counting: Bool) {
        stats.enqueued &+= 1
        if counting {
            // First enqueue since the last flush: sample this thread's CPU
            // for the batch (one sched_getcpu per batch, not per packet).
            if touchedCount == 0 { handoffCPU.sample() }
            handoffCPU.classify(consumerCPU: s.observedReaderCPU.cpu, into: &stats.sync)
            if depthSampler.isDue() { stats.socketQueue.recordDepth(s.queue.approximateCount) }
        }
        remember(ref, counting: counting)
        if let segment = packet.tcp, s.proto == .tcp {
            tcpInput(s, key: packet.key, segment: segment, payloadLength: packet.payloadLength,
                     serialization: tcp, counting: counting)
        }
    }

    /// Remembers `socket` for the readiness pass of the next flush.
    @inlinable
    @inline(__always)
    mutating func remember(_ socket: SocketReference, counting: Bool) {
        let last = touchedCount &- 1
        if touchedCount > 0 && touched[last] == socket {
            // A load and a store, not `&+=` through the pointer: Swift 6.3
            // crashes compiling that in-place modify here with -sanitize=thread
            // ("Invalid bitcast" in its access instrumentation).
            touchedRuns[last] = touchedRuns[last] &+ 1
            return
        }
        // Full: publish what we have (the sockets are still kept alive).
        if touchedCount == capacity { flush(counting: counting) }
        touched[touchedCount] = socket
        touchedRuns[touchedCount] = 1
        touchedCount &+= 1
    }

    /// Publishes readiness of the sockets touched since the last flush and
    /// hands the pending ACKs to the sink. Once per batch (burst, drain).
    @inlinable
    package mutating func flush(counting: Bool) {
        if touchedCount > 0 { publishReadiness(counting: counting) }
        if ackCount > 0 { flushACKs() }
    }

    @inlinable
    mutating func flushACKs() {
        ackSink(UnsafeBufferPointer(start: acks, count: ackCount))
        ackCount = 0
    }

    /// Loads each resolved socket's hot line, its queue object and the
    /// queue's producer line (the
    /// middle pass of a batch delivery: the batch's lookups are done, its
    /// enqueues follow). The loads have no dependencies between packets, so
    /// the processor overlaps their cache misses instead of paying them one
    /// after the other. Returns a value the caller must keep (so that the
    /// loads are not optimized away).
    @inlinable
    package static func warm(_ sockets: UnsafePointer<SocketReference?>, count: Int) -> UInt {
        var sink: UInt = 0
        for i in 0..<count {
            sockets[i]?.withSocket { s in
                sink &+= UInt(s.stateWord.load(ordering: .relaxed)) &+ s.queue.warmProducerLine()
            }
        }
        return sink
    }
}

/// The outcome of ``SocketDelivery/reserve(_:on:counting:)``: a reserved
/// receive-queue ticket to publish, or the drop (already counted).
@usableFromInline
package enum Reservation {
    case ticket(UInt)
    case dropped(DemuxDropReason)
}

/// What serializes a connection's TCP receive state during delivery.
@usableFromInline
package enum TCPSerialization {
    /// The fast path: the input try-locks the socket's own TCP lock; when
    /// another thread holds it, the segment goes to the socket's backlog,
    /// which the holder processes before releasing (the input never waits).
    case socketTryLock
    /// The caller already serializes the connection (a connection or group
    /// lock, or the owning thread): the receive state is run directly.
    case caller
}
