import SMPPrimitives
import Synchronization

/// Errors of the TCP socket API (active open and the async form), with
/// the errno Linux gives for each.
@frozen
public enum TCPSocketError: Error, Sendable, Hashable {
    /// EADDRINUSE: the 4-tuple (an explicit local port) is taken by a
    /// connection, or a listener holds the local port.
    case addressInUse
    /// EADDRNOTAVAIL: the local address is not one of the stack's, or the
    /// stack has no address of the peer's family.
    case addressNotAvailable
    /// EAFNOSUPPORT: the local and remote addresses are of different families.
    case familyMismatch
    /// EADDRNOTAVAIL (Linux's connect with the ephemeral range used up
    /// towards this peer): no free ephemeral port.
    case noEphemeralPort
    /// ECONNREFUSED: the peer answered the SYN with a RST.
    case refused
    /// ETIMEDOUT: retransmissions (of the SYN or of data) exhausted.
    case timedOut
    /// ECONNRESET: the peer reset the connection.
    case reset
    /// ECONNABORTED: the connection was aborted on this side.
    case aborted
    /// EPIPE: the write side was shut down.
    case writeShutDown
    /// EBADF: the connection is closed (or the listener was closed).
    case closed

    /// The errno Linux reports for the same condition.
    public var errno: Int32 {
        switch self {
        case .addressInUse: return 98           // EADDRINUSE
        case .addressNotAvailable, .noEphemeralPort: return 99   // EADDRNOTAVAIL
        case .familyMismatch: return 97         // EAFNOSUPPORT
        case .refused: return 111               // ECONNREFUSED
        case .timedOut: return 110              // ETIMEDOUT
        case .reset: return 104                 // ECONNRESET
        case .aborted: return 103               // ECONNABORTED
        case .writeShutDown: return 32          // EPIPE
        case .closed: return 9                  // EBADF
        }
    }

    /// The error of a connection that ended for `reason`.
    init(_ reason: TCPCloseReason?) {
        switch reason {
        case .refused: self = .refused
        case .timedOut, .finWait2Timeout: self = .timedOut
        case .reset: self = .reset
        case .aborted: self = .aborted
        case .normal, nil: self = .closed
        }
    }
}

/// A ``TCPSegmentSink`` that keeps the one segment an engine sends while
/// it is made (the SYN of ``TCPConnection/init(connecting:configuration:isn:now:sink:)``)
/// instead of sending it: the active open builds the engine on the
/// connecting thread, and the SYN goes out from the socket's first run on
/// the flow's owner core, after the PCB entry is in.
struct HeldSegmentSink: TCPSegmentSink {
    /// A held segment (a SYN carries no payload).
    struct Segment: Sendable {
        var header: TCPHeader
        var endpoints: TCPEndpoints
    }
    var segment: Segment?

    mutating func send(_ header: TCPHeader, payload: TCPPayload, endpoints: TCPEndpoints) {
        precondition(segment == nil && payload.first.count + payload.second.count == 0,
                     "HeldSegmentSink holds one segment without payload")
        segment = Segment(header: header, endpoints: endpoints)
    }
}

extension EndpointStack {
    /// Active open (RFC 9293 §3.10.1 OPEN, active; connect(2)): a TCP
    /// connection to `remote`, returned in SYN-SENT.
    ///
    /// The source address is chosen as a UDP socket's: the stack's address
    /// of the peer's family, or `local`'s address. The local port is
    /// `local`'s, or with none (or port 0) an ephemeral port from
    /// 32768–60999 chosen by RFC 6056 §3.3.3 (Algorithm 3, simple
    /// hash-based: a keyed hash of the local and remote addresses and the
    /// remote port offsets a stack-wide counter, so that each peer sees
    /// its own sequence and the ports of one peer are used in turn). A
    /// port is usable if the demux would send the new 4-tuple's segments
    /// to nothing yet: no connection with that 4-tuple (one in TIME-WAIT
    /// included) and no listener on the local port (the IPv4-mapped
    /// fallback to a dual-stack `::` listener included). So one ephemeral
    /// port serves several peers, as Linux's `__inet_hash_connect`.
    ///
    /// The engine is made here, its SYN held; the socket lives on the
    /// flow's owner core (where the input path delivers the flow's
    /// segments: the core of ``TCPListenerSocket``'s accepted connections
    /// too). Its PCB entry goes in before the SYN leaves (the first run on
    /// that core sends it), so the SYN-ACK finds the socket. The handler
    /// runs first in SYN-SENT, then in ESTABLISHED, or in CLOSED with
    /// ``TCPSocket/closeReason`` ``TCPCloseReason/refused`` (the peer's
    /// RST) or ``TCPCloseReason/timedOut`` (the SYN's retransmissions,
    /// ``TCPConfiguration/maximumSynRetransmissions``, exhausted). The
    /// port is free again once the connection is CLOSED (after TIME-WAIT
    /// for an active closer): the PCB entry is the reservation.
    ///
    /// Concurrency: any thread, an executor of the stack's too (it never
    /// waits for a core). Cost: the engine's buffers and the socket (a
    /// few allocations), one PCB-table lookup per candidate port, one
    /// insert under the table's control lock.
    ///
    /// - Parameters:
    ///   - remote: the peer (IPv4, IPv6, or IPv4-mapped IPv6 for IPv4).
    ///   - local: the local address (a wildcard or one of the stack's) and
    ///     port (0: ephemeral); nil for both chosen.
    ///   - configuration: buffers, options, timers (the MSS is clamped to
    ///     the device MTU as a listener's).
    ///   - onReadable: the readiness handler (executor form), run on the
    ///     socket's core after each batch of segments or timer expiry and
    ///     once when it closes (see ``TCPSocket``).
    /// - Throws: ``TCPSocketError/addressNotAvailable``,
    ///   ``TCPSocketError/familyMismatch``, ``TCPSocketError/addressInUse``
    ///   (an explicit port whose 4-tuple or listener is taken),
    ///   ``TCPSocketError/noEphemeralPort``.
    public func connectTCP(to remote: InetEndpoint, from local: InetEndpoint? = nil,
                           configuration: TCPConfiguration = TCPConfiguration(),
                           onReadable: @escaping @Sendable (TCPSocket) -> Void) throws(TCPSocketError) -> TCPSocket
    {
        try openTCP(to: remote, from: local, configuration: configuration, onReadable: onReadable, context: nil)
    }

    /// ``connectTCP(to:from:configuration:onReadable:)`` with the socket's
    /// ``TCPSocket/context`` set before its first run.
    func openTCP(to remote: InetEndpoint, from local: InetEndpoint?, configuration: TCPConfiguration,
                 onReadable: @escaping @Sendable (TCPSocket) -> Void, context: AnyObject?)
        throws(TCPSocketError) -> TCPSocket
    {
        let peer = remote.unmapped
        let bound = local?.address
            ?? (peer.address.family == .ipv4 ? IPAddress(ipv4: 0) : IPAddress(ipv6High: 0, low: 0))
        if !bound.isWildcard && !isLocal(bound) { throw .addressNotAvailable }
        let source: IPAddress
        do throws(SourceAddressFailure) {
            source = try sourceAddress(bound: bound, remote: peer.address)
        } catch {
            throw error == .notAvailable ? .addressNotAvailable : .familyMismatch
        }
        var c = configuration
        // Our SYN's MSS: what fits the device MTU behind the larger (IPv6)
        // header, as the listener's SYN-ACK.
        c.maximumSegmentSize = min(c.maximumSegmentSize, self.configuration.mtu - 60)
        c.maximumSegmentsPerSend = tcpSegmentsPerSend

        func attempt(_ port: UInt16) -> TCPSocket? {
            guard tcpTupleIsFree(local: source, port: port, remote: peer) else { return nil }
            let e = TCPEndpoints(local: source, localPort: port, remote: peer.address, remotePort: peer.port)
            var held = HeldSegmentSink()
            let connection = TCPConnection(connecting: e, configuration: c, isn: isn, now: tcpNow(), sink: &held)
            let core = cores[0].owner(local: source, localPort: port, remote: peer.address, remotePort: peer.port)
            let s = TCPSocket(stack: self, connection: connection, core: core, onReadable: onReadable,
                              heldSYN: held.segment, context: context)
            do throws(SocketError) {
                try s.start()
                return s
            } catch {
                // Another connect took the 4-tuple between the lookup and
                // the insert (the insert is the arbiter).
                s.discardUnstarted()
                return nil
            }
        }

        if let port = local?.port, port != 0 {
            guard let s = attempt(port) else { throw .addressInUse }
            return s
        }
        // RFC 6056 §3.3.3: port = min + (offset + next_ephemeral) % num,
        // next_ephemeral incremented per attempt, offset = F(local
        // address, remote address, remote port, secret key).
        let range = UDPPortTable.ephemeralRange
        let size = UInt64(range.upperBound - range.lowerBound) + 1
        let offset = keyedHash(seed: self.configuration.hashSeed ^ 0x6056_6056_6056_6056, source, peer.address,
                               UInt64(peer.port))
        for _ in 0..<size {
            let next = UInt64(tcpEphemeralCounter.wrappingAdd(1, ordering: .relaxed).oldValue)
            let port = range.lowerBound + UInt16((offset &+ next) % size)
            if let s = attempt(port) { return s }
        }
        throw .noEphemeralPort
    }

    /// Whether a connection from `local`:`port` to `remote` would get its
    /// segments: the demux delivers that 4-tuple to nothing yet (no
    /// connection, no listener on the local port, for IPv4 no dual-stack
    /// IPv6 listener either). A control-path lookup (registers the thread
    /// with the table's RCU flavour for the call). The insert that follows
    /// re-checks the exact 4-tuple under the table's lock.
    func tcpTupleIsFree(local: IPAddress, port: UInt16, remote: InetEndpoint) -> Bool {
        let key = FlowKey(transport: .tcp, source: remote.address, sourcePort: remote.port,
                          destination: local, destinationPort: port)
        if demux.table.socket(for: key) != nil { return false }
        if key.family == .ipv4 {
            var mapped = key
            mapped.source = remote.address.mappedToIPv6
            mapped.destination = local.mappedToIPv6
            if let s = demux.table.socket(for: mapped), !s.v6Only.load(ordering: .relaxed) { return false }
        }
        return true
    }
}
