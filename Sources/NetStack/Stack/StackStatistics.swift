import FastDemux

/// Why an ``EndpointStack`` dropped a packet (one bucket per reason, on
/// the core that dropped it).
@frozen
public enum StackDropReason: UInt8, CaseIterable, Sendable, BitwiseCopyable, CustomStringConvertible {
    /// The parser refused it (malformed, unsupported, martian, multicast,
    /// ...; the parser's own reason is counted in
    /// ``StackStatistics/parseDrops``).
    case parse = 0
    /// Not addressed to one of the stack's addresses (Linux would forward
    /// or drop it; the stack is an endpoint and forwards nothing).
    case notLocal
    /// Neither UDP nor TCP: a transport the stack does not serve (SCTP,
    /// ...). The slot of the former `tcpNotYet`.
    case unsupportedTransport
    /// UDP to a port with no socket (an ICMP port unreachable may have
    /// gone out, see ``StackStatistics/portUnreachableSent``).
    case noSocket
    /// The socket's receive queue was full.
    case socketQueueFull
    /// The socket was closing.
    case socketClosed
    /// An ICMP message the stack does not act on (replies, errors: not
    /// reported to sockets yet), or one ICMP input refused.
    case icmpIgnored
    /// The handoff to the owning core failed (its mailbox ring was full).
    case handoffFull
    /// A reply could not be built (pool exhausted, too large).
    case outputFailed
    /// Dropped on arrival by the configured input loss
    /// (``EndpointStack/Configuration/inputLoss``: a test of the
    /// transports' recovery, never set in service).
    case injectedLoss

    /// Number of reasons.
    public static let count = StackDropReason.allCases.count

    /// The stable snake_case name (statistics, JSON).
    public var description: String {
        switch self {
        case .parse: return "parse"
        case .notLocal: return "not_local"
        case .unsupportedTransport: return "unsupported_transport"
        case .noSocket: return "no_socket"
        case .socketQueueFull: return "socket_queue_full"
        case .socketClosed: return "socket_closed"
        case .icmpIgnored: return "icmp_ignored"
        case .handoffFull: return "handoff_full"
        case .outputFailed: return "output_failed"
        case .injectedLoss: return "injected_loss"
        }
    }
}

/// One core's (or the sum of all cores') packet accounting.
///
/// Every packet that enters a core — read from its queue
/// (``packetsIn``), handed over by another core (``handedIn``) or
/// completed by reassembly (``datagramsReassembled``) — ends in exactly one
/// bucket: delivered to a socket, answered (echo), handed to its owner
/// core, taken by reassembly, or dropped with a reason. ``isConserved``
/// checks it. Output packets (replies, socket sends, ICMP errors) are
/// counted separately.
///
/// Plain counters written by their core only; read them through
/// ``EndpointStack/statistics(core:)``, which fetches them on the core.
public struct StackStatistics: Sendable, Equatable {
    /// Packets read from the device (or injected) on this core.
    public var packetsIn = 0
    /// Packets another core read and handed over, because this core owns
    /// their flow.
    public var handedIn = 0
    /// Datagrams completed by reassembly (each is processed as a new
    /// packet).
    public var datagramsReassembled = 0

    /// Datagrams put on a socket's receive queue.
    public var delivered = 0
    /// Echo requests answered (ICMP and ICMPv6).
    public var echoRequestsAnswered = 0
    /// Packets read here whose flow another core owns: handed to it over
    /// the mailboxes (counted as misplaced on the TUN queue).
    public var handedOff = 0
    /// Fragments given to reassembly (queued, completing or dropped
    /// there: the reassembly table's own counters say which).
    public var fragmentsToReassembly = 0
    /// Drops by reason (``StackDropReason`` raw values).
    public var drops = [Int](repeating: 0, count: StackDropReason.count)
    /// Parser drops by the parser's reason (`DropReason` raw values).
    public var parseDrops = [Int](repeating: 0, count: DropReason.count)

    /// ICMP port unreachable messages sent (IPv4 and IPv6).
    public var portUnreachableSent = 0
    /// Errors the no-error rules forbade (RFC 1122 §3.2.2, RFC 4443 §2.4(e)).
    public var icmpErrorsSuppressed = 0
    /// Errors the rate limiter refused.
    public var icmpErrorsRateLimited = 0
    /// Datagrams sent by sockets through this core.
    public var datagramsSent = 0
    /// Socket sends that failed on this core (pool exhausted, too large).
    public var sendFailures = 0
    /// Packets built on this core for another core's queue, handed over.
    public var writesHandedOff = 0
    /// Packets handed to the device (or the capture output).
    public var packetsOut = 0
    /// Runs of the sockets' worker continuations on this core (the NetBSD
    /// proposal's kcont: the socket's deferred work, scheduled by the
    /// demultiplexer when it queues a datagram, coalesced while pending).
    public var socketWorkerRuns = 0
    /// TCP segments built and queued (the engines' and the input path's
    /// RSTs); a super-segment counts once (it is one packet to the device).
    public var tcpSegmentsSent = 0
    /// TCP super-segments written (GSO packets of more than one MSS behind
    /// a virtio-net header, see ``EndpointStack/Configuration/tcpSegmentationOffload``),
    /// counted as they are built; each is also in ``tcpSegmentsSent``.
    public var tcpSuperSegmentsSent = 0
    /// RSTs the input path sent for segments to no connection and no
    /// listener (RFC 9293 §3.10.7.1).
    public var tcpResetsSent = 0
    /// Connections a listener's handshake completed (accepted sockets made).
    public var tcpConnectionsAccepted = 0
    /// Runs of the input path's immediate-ACK step (the NetBSD fast
    /// path's try-lock taken): the queued segments went through the engine
    /// on the input path.
    public var tcpInputPathRuns = 0
    /// Segments the immediate-ACK step took from the socket queues (per
    /// run: the queue depth at the hand-off).
    public var tcpInputPathSegments = 0
    /// Pure ACKs sent from the input path (immediate ACKs).
    public var tcpImmediateAcks = 0
    /// Pure ACKs sent by the sockets' continuations (delayed ACKs, window
    /// updates, ACKs of segments the input path left queued).
    public var tcpDeferredAcks = 0
    /// Immediate-ACK steps that found the engine in use (the try-lock
    /// failed): the segment waited for the holder.
    public var tcpTryLockFailures = 0
    /// Orphaned connections (closed by the application) dropped in
    /// FIN-WAIT-2 after ``TCPConfiguration/finWait2Timeout`` (Linux's
    /// tcp_fin_timeout): their peers never sent a FIN.
    public var tcpFinWait2Timeouts = 0

    /// An empty set of counters.
    public init() {}

    /// Drops with this reason.
    public func dropped(_ reason: StackDropReason) -> Int { drops[Int(reason.rawValue)] }
    /// Drops, all reasons.
    public var droppedTotal: Int { drops.reduce(0, +) }
    /// Packets that entered this core.
    public var entered: Int { packetsIn + handedIn + datagramsReassembled }
    /// Packets accounted for.
    public var accounted: Int {
        delivered + echoRequestsAnswered + handedOff + fragmentsToReassembly + droppedTotal
    }
    /// Whether every packet that entered is accounted for.
    public var isConserved: Bool { entered == accounted }

    /// The scalar counters (for ``+``).
    private static let scalars: [WritableKeyPath<StackStatistics, Int> & Sendable] = [
        \.packetsIn, \.handedIn, \.datagramsReassembled, \.delivered, \.echoRequestsAnswered, \.handedOff,
        \.fragmentsToReassembly, \.portUnreachableSent, \.icmpErrorsSuppressed, \.icmpErrorsRateLimited,
        \.datagramsSent, \.sendFailures, \.writesHandedOff, \.packetsOut, \.socketWorkerRuns,
        \.tcpSegmentsSent, \.tcpSuperSegmentsSent, \.tcpResetsSent, \.tcpConnectionsAccepted, \.tcpInputPathRuns,
        \.tcpInputPathSegments, \.tcpImmediateAcks, \.tcpDeferredAcks, \.tcpTryLockFailures,
        \.tcpFinWait2Timeouts,
    ]

    /// The sum of two sets of counters (control path: allocates).
    public static func + (a: StackStatistics, b: StackStatistics) -> StackStatistics {
        var s = a
        for k in scalars { s[keyPath: k] += b[keyPath: k] }
        s.drops = zip(a.drops, b.drops).map(+)
        s.parseDrops = zip(a.parseDrops, b.parseDrops).map(+)
        return s
    }
}
