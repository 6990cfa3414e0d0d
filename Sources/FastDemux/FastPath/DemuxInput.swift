import Synchronization
import SMPPrimitives

/// The per-input-thread side of a ``Demux``: the lookup in the PCB tables
/// and the delivery step (`SocketDelivery`, shared with every
/// organization of the comparison) with its statistics, the sockets touched
/// in the current burst and the ACKs to emit.
///
/// Concurrency contract: one thread only (it is not `Sendable`-safe to share;
/// hand it to its thread at start and read ``stats`` after that thread stops).
/// That thread is registered with `Flavor`; it calls the per-packet methods
/// inside ``burst(_:)``.
public final class DemuxInput<Flavor: RCUFlavor>: @unchecked Sendable {
    // @unchecked Sendable: created on one thread and then owned by the input
    // thread it is handed to; nothing in it is shared while in use (hence
    // also `@exclusivity(unchecked)`: its vars have a single user).

    /// Packets (batch chunk) and touched-socket runs handled per flush.
    public static var burstCapacity: Int { 64 }

    @usableFromInline let table: PCBTable<Flavor>
    /// The delivery step and this thread's statistics.
    @exclusivity(unchecked) @usableFromInline var delivery: SocketDelivery
    @exclusivity(unchecked) @usableFromInline var inBurst = false
    /// Sockets resolved by the first pass of ``deliver(batch:onDrop:)``.
    @usableFromInline let resolved: UnsafeMutablePointer<SocketReference?>
    /// The receive-queue tickets reserved by the third pass of
    /// ``deliver(batch:onDrop:)``, published by its fourth.
    @usableFromInline let tickets: UnsafeMutablePointer<UInt>
    /// Keeps the warming loads of ``deliver(batch:onDrop:)`` from being
    /// optimized away.
    @exclusivity(unchecked) @usableFromInline var warmSink: UInt = 0

    /// This thread's statistics (plain counters, written by the input
    /// thread only: read them after it stopped).
    public var stats: DemuxStats { delivery.stats }

    init(demux: Demux<Flavor>, ackSink: (@Sendable (UnsafeBufferPointer<TCPAck>) -> Void)?) {
        table = demux.table
        delivery = SocketDelivery(depthSampleInterval: demux.configuration.depthSampleInterval,
                                  capacity: Self.burstCapacity, ackSink: ackSink)
        resolved = .allocate(capacity: Self.burstCapacity)
        tickets = .allocate(capacity: Self.burstCapacity)
    }

    deinit {
        resolved.deallocate()
        tickets.deallocate()
    }

    /// Runs one burst: enters a read section, runs `body` (which calls
    /// ``deliver(_:key:tcp:payloadLength:)`` / ``drop(_:)`` per packet),
    /// publishes readiness of the touched sockets and hands the burst's ACKs
    /// to the sink, then leaves the read section. Readiness is published
    /// inside the section so the touched sockets cannot be freed meanwhile.
    @inlinable
    public func burst<R>(_ body: (DemuxInput<Flavor>) throws -> R) rethrows -> R {
        Flavor.readLock()
        inBurst = true
        delivery.stats.readSections &+= 1
        defer {
            flush()
            inBurst = false
            Flavor.readUnlock()
        }
        return try body(self)
    }

    /// QSBR: reports a quiescent state (call between bursts, every few
    /// hundred packets to a few milliseconds). No-op for other flavours.
    @inlinable
    public func quiescent() {
        if Flavor.self == QSBR.self { QSBR.quiescentState() }
    }

    /// Counts a packet the caller drops before lookup.
    @inlinable
    public func drop(_ reason: DemuxDropReason) {
        delivery.stats.offered &+= 1
        delivery.stats.drops.record(reason)
    }

    /// Counts a packet the parser rejected (under `malformed` or
    /// `unsupported`, and per parser reason).
    @inlinable
    public func drop(parseReason: DropReason) {
        delivery.stats.parseDrops[Int(parseReason.rawValue)] &+= 1
        drop(DemuxDropReason(parseReason))
    }

    /// Parses `frame` and delivers it (must run inside ``burst(_:)``).
    /// `packet` is the word the socket's reader will receive for this frame.
    @inlinable
    @discardableResult
    public func input(_ packet: PacketRef, frame: UnsafeRawBufferPointer, parser: PacketParser,
                      linkType: LinkType = .ethernet) -> DemuxVerdict {
        switch parser.parse(frame, linkType: linkType) {
        case .packet(let p):
            return deliver(packet, key: p.flow, tcp: p.tcp, payloadLength: p.payloadLength)
        case .dropped(let r):
            drop(parseReason: r)
            return .dropped(DemuxDropReason(r))
        }
    }

    /// The fast path for one parsed packet. Must run inside ``burst(_:)``.
    ///
    /// Per packet: 1–3 hash lookups (no lock, no shared write), one PCQ put
    /// (one atomic RMW inside the queue), and for TCP one try-lock CAS on a
    /// line the input thread normally owns. No allocation, no retain.
    @inlinable
    @discardableResult
    public func deliver(_ packet: PacketRef, key: FlowKey, tcp: TCPSegmentInfo? = nil, payloadLength: Int = 0)
        -> DemuxVerdict
    {
        assert(inBurst, "deliver outside of burst { }")
        // The table's reference keeps the socket alive until a grace period
        // after its removal, and we are inside a read section.
        return delivery.deliver(DemuxPacket(packet: packet, key: key, tcp: tcp, payloadLength: payloadLength),
                                to: table.lookup(key), tcp: .socketTryLock, counting: true)
    }

    /// The fast path for a packet whose socket the caller already looked up
    /// in ``Demux/table`` inside this burst (nil: no socket, counted as
    /// `no_socket`): for a stack that adds its own lookup rules on top of
    /// the PCB tables' (NetStack's dual-stack fallback to the IPv4-mapped
    /// key). Same cost and contract as
    /// ``deliver(_:key:tcp:payloadLength:)`` minus the lookup; the
    /// reference must come from a lookup in the current burst.
    @inlinable
    @discardableResult
    package func deliver(_ packet: PacketRef, key: FlowKey, to socket: SocketReference?, payloadLength: Int = 0)
        -> DemuxVerdict
    {
        assert(inBurst, "deliver outside of burst { }")
        return delivery.deliver(DemuxPacket(packet: packet, key: key, tcp: nil, payloadLength: payloadLength),
                                to: socket, tcp: .socketTryLock, counting: true)
    }

    /// Publishes readiness for the sockets touched so far and emits the
    /// pending ACKs. Called by ``burst(_:)``; inside a read section.
    @inlinable
    public func flush() {
        delivery.flush(counting: true)
    }
}
