import FastDemux

/// A passive open (RFC 9293 §3.10.1 OPEN, passive; §3.10.7.2 LISTEN):
/// answers SYNs with SYN-ACKs from a bounded SYN queue of half-open
/// entries (BSD's syncache: a SYN costs a small entry, not a connection
/// with buffers), and turns each completed handshake into an ESTABLISHED
/// ``TCPConnection`` in a bounded accept queue.
///
/// Every refusal is counted: a SYN beyond the SYN queue
/// (``TCPDropReason/synQueueFull``, no reply, as Linux without SYN
/// cookies), a completing ACK when the accept queue is full
/// (``TCPDropReason/acceptQueueFull``: the ACK is dropped and the entry
/// kept, so the SYN-ACK retransmission retries — Linux's behaviour with
/// tcp_abort_on_overflow off).
///
/// Concurrency: like a connection, owned by one thread at a time. Cost: a
/// linear scan of the SYN queue per segment (bounded by its capacity), no
/// allocation except the buffers of a connection when a handshake completes.
public struct TCPListener: Sendable {
    /// The port listened on.
    public let port: UInt16
    /// The configuration given to accepted connections.
    public let configuration: TCPConfiguration
    /// SYN-queue bound.
    public let synQueueLimit: Int
    /// Accept-queue bound.
    public let acceptQueueLimit: Int
    /// Counters: SYNs, refusals, RSTs sent.
    public internal(set) var counters = TCPCounters()
    private let isn: TCPISNGenerator
    private var synQueue: [HalfOpen] = []
    private var acceptQueue: [TCPConnection] = []

    /// A half-open connection in SYN-RECEIVED (RFC 9293 §3.10.7.2 fourth: the
    /// state a SYN in LISTEN creates).
    struct HalfOpen: Sendable {
        var endpoints: TCPEndpoints
        var iss: UInt32
        var irs: UInt32
        var options: TCPOptions
        var deadline: UInt64
        var retransmits: Int
    }

    /// A listener on `port` with the given bounds (Linux's somaxconn-style
    /// accept backlog and tcp_max_syn_backlog).
    public init(port: UInt16, configuration: TCPConfiguration = TCPConfiguration(),
                synQueueLimit: Int = 128, acceptQueueLimit: Int = 128, isn: TCPISNGenerator) {
        self.port = port
        self.configuration = configuration
        self.synQueueLimit = synQueueLimit
        self.acceptQueueLimit = acceptQueueLimit
        self.isn = isn
        synQueue.reserveCapacity(synQueueLimit)
        acceptQueue.reserveCapacity(acceptQueueLimit)
    }

    /// Half-open entries.
    public var synQueueDepth: Int { synQueue.count }
    /// Established connections waiting for ``accept()``.
    public var acceptQueueDepth: Int { acceptQueue.count }

    /// Takes the oldest established connection, if any.
    public mutating func accept() -> TCPConnection? {
        acceptQueue.isEmpty ? nil : acceptQueue.removeFirst()
    }

    /// The earliest SYN-ACK retransmission deadline.
    public var nextDeadline: UInt64? {
        var d: UInt64? = nil
        for e in synQueue where d == nil || e.deadline < d! { d = e.deadline }
        return d
    }

    /// Processes a segment addressed to the listening port from `source`
    /// to `destination` (the caller found no connection for its 4-tuple).
    ///
    /// - Returns: true if a connection was added to the accept queue.
    @discardableResult
    public mutating func receive(_ h: TCPHeader, payload: UnsafeRawBufferPointer, source: IPAddress,
                                 destination: IPAddress, now: UInt64, sink: inout some TCPSegmentSink) -> Bool {
        counters.segmentsReceived += 1
        let ends = TCPEndpoints(replyTo: h, source: source, destination: destination)
        if let i = synQueue.firstIndex(where: { $0.endpoints == ends }) {
            return receiveHalfOpen(at: i, h, payload: payload, now: now, sink: &sink)
        }
        // RFC 9293 §3.10.7.2, LISTEN. First: an incoming RST is ignored.
        if h.flags.contains(.rst) {
            counters.drop(.listenerUnexpected)
            return false
        }
        // Second: an ACK is answered by <SEQ=SEG.ACK><CTL=RST>.
        if h.flags.contains(.ack) {
            counters.drop(.noConnection)
            reset(h, payloadLength: payload.count, ends: ends, sink: &sink)
            return false
        }
        // Third: a SYN.
        guard h.flags.contains(.syn), !h.flags.contains(.fin) else {
            counters.drop(.listenerUnexpected)
            return false
        }
        guard synQueue.count < synQueueLimit else {
            counters.drop(.synQueueFull)
            return false
        }
        let iss = isn.initialSequenceNumber(local: ends.local, localPort: ends.localPort,
                                            remote: ends.remote, remotePort: ends.remotePort, now: now)
        let entry = HalfOpen(endpoints: ends, iss: iss, irs: h.sequenceNumber, options: h.options,
                             deadline: now + configuration.initialRetransmissionTimeout, retransmits: 0)
        synQueue.append(entry)
        sendSynAck(entry, now: now, sink: &sink)
        return false
    }

    private mutating func receiveHalfOpen(at i: Int, _ h: TCPHeader, payload: UnsafeRawBufferPointer,
                                          now: UInt64, sink: inout some TCPSegmentSink) -> Bool {
        let e = synQueue[i]
        if h.flags.contains(.rst) {
            // RFC 5961 §3.2 in SYN-RECEIVED: only an exact RST (RCV.NXT)
            // removes the entry ("return to LISTEN", RFC 9293 §3.10.7.4).
            if h.sequenceNumber == e.irs &+ 1 { synQueue.remove(at: i) } else { counters.drop(.resetOutOfWindow) }
            return false
        }
        if h.flags.contains(.syn) {
            // A retransmitted SYN: answer with the SYN-ACK again; any other
            // SYN gets a challenge ACK (RFC 5961 §4.2), the same segment.
            if h.sequenceNumber != e.irs { counters.drop(.synChallenged) }
            sendSynAck(e, now: now, sink: &sink)
            return false
        }
        guard h.flags.contains(.ack) else {
            counters.drop(.missingAck)
            return false
        }
        // SYN-RECEIVED: SND.UNA < SEG.ACK =< SND.NXT, i.e. SEG.ACK = ISS+1;
        // otherwise <SEQ=SEG.ACK><CTL=RST> (RFC 9293 §3.10.7.4 fifth check).
        guard h.acknowledgmentNumber == e.iss &+ 1 else {
            counters.drop(.unacceptableAck)
            reset(h, payloadLength: payload.count, ends: e.endpoints, sink: &sink)
            return false
        }
        guard h.sequenceNumber == e.irs &+ 1 else {
            counters.drop(.outOfWindow)
            return false
        }
        guard acceptQueue.count < acceptQueueLimit else {
            counters.drop(.acceptQueueFull)
            return false
        }
        synQueue.remove(at: i)
        var c = TCPConnection(accepting: e, configuration: configuration, now: now)
        // The completing ACK may carry data or a FIN: the connection takes it.
        c.receive(h, payload: payload, now: now, sink: &sink)
        acceptQueue.append(c)
        return true
    }

    /// Retransmits SYN-ACKs whose timer expired (RFC 6298 back-off from
    /// the initial RTO) and drops entries past the SYN retry limit.
    public mutating func handleTimers(now: UInt64, sink: inout some TCPSegmentSink) {
        var i = 0
        while i < synQueue.count {
            if synQueue[i].deadline <= now {
                synQueue[i].retransmits += 1
                if synQueue[i].retransmits > configuration.maximumSynRetransmissions {
                    synQueue.remove(at: i)
                    continue
                }
                let backoff = configuration.initialRetransmissionTimeout << UInt64(synQueue[i].retransmits)
                synQueue[i].deadline = now + Swift.min(backoff, configuration.maximumRetransmissionTimeout)
                counters.retransmissions += 1
                sendSynAck(synQueue[i], now: now, sink: &sink)
            }
            i += 1
        }
    }

    private mutating func sendSynAck(_ e: HalfOpen, now: UInt64, sink: inout some TCPSegmentSink) {
        // The options the accepted connection will run with (RFC 7323 §2.2
        // and §3.2: window scale and timestamps only if the SYN had them).
        var o = TCPOptions()
        o.maximumSegmentSize = UInt16(clamping: configuration.maximumSegmentSize)
        if configuration.windowScaling && e.options.windowScale != nil {
            o.windowScale = TCPConnection.receiveWindowShift(configuration)
        }
        if configuration.timestamps, let ts = e.options.timestamp {
            o.timestamp = (TCPConnection.timestampValue(now: now, iss: e.iss), ts.value)
        }
        // RFC 7323 §2.2: a SYN's window is never scaled.
        let h = TCPHeader(sourcePort: e.endpoints.localPort, destinationPort: e.endpoints.remotePort,
                          sequenceNumber: e.iss, acknowledgmentNumber: e.irs &+ 1, flags: [.syn, .ack],
                          window: UInt16(clamping: configuration.receiveBufferSize), options: o)
        counters.segmentsSent += 1
        sink.send(h, payload: .empty, endpoints: e.endpoints)
    }

    private mutating func reset(_ h: TCPHeader, payloadLength: Int, ends: TCPEndpoints, sink: inout some TCPSegmentSink) {
        guard let r = h.resetReply(payloadLength: payloadLength) else { return }
        counters.resetsSent += 1
        counters.segmentsSent += 1
        sink.send(r, payload: .empty, endpoints: ends)
    }
}

extension TCPConnection {
    /// The connection a completed passive handshake creates.
    init(accepting e: TCPListener.HalfOpen, configuration: TCPConfiguration, now: UInt64) {
        self.init(endpoints: e.endpoints, configuration: configuration, iss: e.iss, now: now)
        irs = e.irs
        rcvNxt = e.irs &+ 1
        applyPeerSynOptions(e.options)
        sndUna = iss &+ 1
        sndNxt = iss &+ 1
        sndMax = iss &+ 1
        rcvAdv = rcvNxt &+ UInt32(Swift.min(recvRing.free, 65535))
        lastAckSent = rcvNxt
        // So that the completing ACK's window is taken (fifth check).
        sndWl1 = irs
        sndWl2 = iss
        if e.retransmits == 0 { rtt.sample(now &- (e.deadline &- configuration.initialRetransmissionTimeout)) }
        state = .established
    }
}
