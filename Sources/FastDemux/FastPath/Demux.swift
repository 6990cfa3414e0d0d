import Synchronization
import SMPPrimitives

/// The fast protocol and port demultiplexer (the NetBSD "Fast protocol and
/// port demultiplexing" proposal): input threads look the socket up inside an
/// RCU read section without locking it, put the packet on the socket's
/// receive PCQ, schedule the socket's worker (coalesced), wake the reader
/// only if it is parked, and ACK in-sequence TCP segments from the input
/// path when the socket's TCP state can be try-locked.
///
/// ## Using it (e.g. from a pcap replay, a TUN device, a generator)
///
///     let pool = PacketPool(bufferCount: 65_536)             // 2 KiB buffers
///     let demux = Demux<QSBR>(configuration: .init(pool: pool))
///
///     // Sockets (any thread, also while traffic flows):
///     let dns = demux.makeSocket(.udp)
///     try dns.bind(InetEndpoint(IPAddress(ipv4: 0), 53))     // wildcard
///     let web = demux.makeSocket(.tcp)
///     try web.bind(InetEndpoint(IPAddress("10.0.0.1")!, 80)); try web.listen()
///     let conn = demux.makeSocket(.tcp)
///     try conn.connect(to: InetEndpoint(IPAddress("192.0.2.7")!, 40000),
///                      from: InetEndpoint(IPAddress("10.0.0.1")!, 80))
///
///     // Optional: one reader for many sockets (an epoll in miniature).
///     let ready = SocketReadySet(capacity: 1024); ready.add(dns); ready.add(conn)
///
///     // Input thread (a dedicated thread, registered with QSBR):
///     QSBR.registerThread()
///     let input = demux.makeInput(ackSink: { acks in /* send them */ })
///     var cache = PacketPool.Cache(pool: pool)
///     let parser = PacketParser()
///     while running {
///         input.burst { b in                                  // one read section
///             for _ in 0..<32 {
///                 guard let p = cache.allocate() else { break }
///                 let n = readFrame(into: pool.buffer(p)); pool.setLength(n, of: p)
///                 if b.input(p, frame: pool.bytes(p), parser: parser) != .queued {
///                     cache.free(p)                           // dropped: counted by reason
///                 }
///             }
///         }                                                   // readiness, ACKs published
///         input.quiescent()                                   // QSBR: between bursts
///     }
///     QSBR.unregisterThread()
///     let stats = input.stats                                  // after the thread stopped
///
///     // Reader (single reader per socket): blocking, non-blocking, batch, async.
///     while let p = dns.receive() { handle(pool.bytes(p)); pool.free(p) }
///     for await p in conn.packets { ... }
///
///     dns.close()            // one grace period; queued packets back to the pool
///
/// `DemuxInput.deliver(_:key:tcp:payloadLength:)` is the parser-free entry
/// (a `FlowKey` from elsewhere); `drop(_:)` / `drop(parseReason:)` count
/// packets rejected before lookup, so that for every input
/// `stats.offered == stats.enqueued + stats.drops.total`. Packets still
/// queued at close are counted per socket (`counters.droppedClosed`) and in
/// `table.packetsDrainedAtTeardown`.
///
/// Concurrency contract: ``makeSocket(_:queueCapacity:)`` and the socket
/// control operations from any thread; each ``DemuxInput`` from exactly one
/// thread (registered with `Flavor`; QSBR threads call
/// ``DemuxInput/quiescent()`` between bursts and go offline before
/// blocking); per-flow order holds when each flow enters through one input
/// (RSS-style steering), which the TCP state also assumes.
public final class Demux<Flavor: RCUFlavor>: @unchecked Sendable {
    // @unchecked Sendable: immutable after init; the table is thread-safe.

    /// The configuration given at init (immutable).
    public let configuration: Configuration
    /// The PCB tables (any thread; see ``PCBTable``).
    public let table: PCBTable<Flavor>

    /// An empty demultiplexer (no sockets). Any thread.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        table = PCBTable(expectedConnections: configuration.expectedConnections, pool: configuration.pool,
                         release: configuration.release)
    }

    /// Waits until every deferred close (``Socket/closeDeferred()``) issued
    /// before has finished its teardown (`rcu_barrier`). Not inside a read
    /// section.
    public func barrier() { Flavor.barrier() }

    /// A new, unbound socket (any thread; allocates).
    public func makeSocket(_ proto: TransportProtocol, queueCapacity: Int? = nil) -> Socket {
        Socket(proto: proto, queueCapacity: queueCapacity ?? configuration.queueCapacity,
               ackPolicy: configuration.ackPolicy, control: table)
    }

    /// An input context for one input thread (create it anywhere, then use
    /// it on that thread only; allocates its buffers once).
    /// Its cross-core hand-off count observes where the input thread runs
    /// (once per burst) and where each socket's reader last ran, so it
    /// needs no CPU number, pinned or not.
    /// - Parameter ackSink: receives the ACKs decided on the fast path,
    ///   once per burst, as a buffer valid only during the call.
    public func makeInput(ackSink: (@Sendable (UnsafeBufferPointer<TCPAck>) -> Void)? = nil)
        -> DemuxInput<Flavor>
    {
        DemuxInput(demux: self, ackSink: ackSink)
    }
}

/// A parsed packet for ``DemuxInput/deliver(batch:onDrop:)``: a plain
/// value (any thread).
@frozen
public struct DemuxPacket: Sendable, BitwiseCopyable {
    /// The word the socket's reader receives for this packet.
    public var packet: PacketRef
    /// The key its socket is looked up by (as the packet arrived).
    public var key: FlowKey
    /// TCP: the segment's header fields (nil for UDP).
    public var tcp: TCPSegmentInfo?
    /// Transport payload bytes (sequence space for TCP).
    public var payloadLength: Int

    /// Creates the delivery record of one packet (a plain value: any thread).
    ///
    /// - Parameters:
    ///   - packet: the word the socket's reader receives if the packet is
    ///     queued (a dropped packet's buffer stays with the caller).
    ///   - key: the 5-tuple as the packet arrived.
    ///   - tcp: the segment's header fields; nil for UDP.
    ///   - payloadLength: transport payload bytes.
    @inlinable
    public init(packet: PacketRef, key: FlowKey, tcp: TCPSegmentInfo? = nil, payloadLength: Int = 0) {
        self.packet = packet
        self.key = key
        self.tcp = tcp
        self.payloadLength = payloadLength
    }
}

/// What happened to a delivered packet.
public enum DemuxVerdict: Sendable, Equatable {
    /// On the socket's receive queue: the reader now owns the word.
    case queued
    /// Not queued, counted under the reason: the caller still owns the
    /// word (free its buffer).
    case dropped(DemuxDropReason)
}
