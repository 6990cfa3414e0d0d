import FastDemux

/// One TCP connection as a sans-IO state machine (RFC 9293 §3.10 event
/// processing): segments and the time go in, segments (to a
/// ``TCPSegmentSink``) and the next timer deadline come out. It owns no
/// thread, socket or clock.
///
/// ## Concurrency contract
/// A connection is a value owned by one thread at a time (the socket's
/// kernel continuation, or whoever holds the socket's TCP lock): every
/// mutating call runs to completion on that thread, and handing the
/// connection to another thread needs a happens-before edge (a lock
/// release/acquire or a queue hand-off). It must not be copied while in
/// use: the two buffers are allocated once at creation and shared
/// copy-on-write, so a copy would both allocate on its next write and fork
/// the state. It is `Sendable` as a value (all its parts are), so that it
/// can move between threads under a lock or through a queue.
///
/// ## Cost
/// Steady state allocates nothing: the send and receive rings, the
/// out-of-order ranges and the counters are allocated by the initialiser.
/// A call processes one segment (or one timer expiry) with O(reassembly
/// ranges) work plus one copy of the payload in and of each sent payload
/// out (in the sink).
///
/// ## Time
/// `now` is microseconds of one monotonic clock (any epoch), never
/// decreasing between calls. ``nextDeadline`` says when to call
/// ``handleTimers(now:sink:)`` next (the integrator puts it on the timer
/// wheel); calling it early is harmless.
public struct TCPConnection: Sendable {
    /// The state of RFC 9293 §3.3.2.
    public internal(set) var state: TCPConnectionState
    /// Why the connection reached CLOSED (nil while open).
    public internal(set) var closeReason: TCPCloseReason?
    /// The two ends.
    public let endpoints: TCPEndpoints
    /// Counters of this connection.
    public internal(set) var counters = TCPCounters()
    let configuration: TCPConfiguration

    // MARK: Send sequence variables (RFC 9293 §3.3.1)
    var iss: UInt32
    var sndUna: UInt32
    var sndNxt: UInt32
    /// The highest sequence number sent (+1): SND.NXT may be pulled back by a
    /// timeout (go-back-N) while ACKs up to here stay acceptable.
    var sndMax: UInt32
    /// SND.WND in bytes (scaled).
    var sndWnd = 0
    var sndWl1: UInt32 = 0
    var sndWl2: UInt32 = 0
    /// MAX.SND.WND of RFC 5961 §5.2 (and the sender SWS rule, RFC 9293 §3.8.6.2.1).
    var maxSndWnd = 0
    /// Payload bytes per segment (the peer's MSS, minus our timestamp option).
    var sendMSS: Int
    /// The send ring: bytes from ``sendBase`` (first unacknowledged data byte).
    var sendRing: TCPByteRing
    var sendBase: UInt32
    /// The application closed its side: a FIN follows the data at ``finSeq``.
    var finQueued = false
    var finSeq: UInt32 = 0

    // MARK: Receive sequence variables
    var irs: UInt32 = 0
    var rcvNxt: UInt32 = 0
    /// RCV.NXT + RCV.WND as last advertised: never moves left (RFC 9293 §3.8.6.2.2).
    var rcvAdv: UInt32 = 0
    var recvRing: TCPByteRing
    var reassembly: TCPReassemblyQueue
    /// The peer's FIN's sequence number, once seen (possibly out of order).
    var peerFinSeq: UInt32?
    /// The peer's FIN was consumed (RCV.NXT passed it).
    public internal(set) var peerFinished = false
    /// Largest payload seen: the "full-sized segment" of the ACK rule.
    var rcvMSS: Int

    // MARK: Options (RFC 7323)
    var sndShift: UInt8 = 0
    var rcvShift: UInt8 = 0
    var timestampsOn = false
    /// Both SYNs carried a window scale (RFC 7323 §2.2).
    var windowScaleAgreed = false
    var tsRecent: UInt32 = 0
    var tsOffset: UInt32
    var lastAckSent: UInt32 = 0

    // MARK: ACK state
    var ackPending = false
    var ackNow = false
    var fullSegmentsUnacked = 0
    var delayedAckDeadline: UInt64?

    // MARK: Timers and estimators
    var retransmitDeadline: UInt64?
    var retransmitCount = 0
    var persistDeadline: UInt64?
    var persistBackoffs = 0
    var timeWaitDeadline: UInt64?
    /// The end of an orphaned connection's FIN-WAIT-2 (``close(now:)``).
    var finWait2Deadline: UInt64?
    /// ``TCPConnection/close(now:)`` ran: no application reads any more.
    public internal(set) var isOrphaned = false
    var rtt: TCPRetransmissionTimer
    var cc: TCPCongestionControl
    /// Karn timing without timestamps: the segment timed and when it left.
    var rttSeq: UInt32?
    var rttStart: UInt64 = 0
    /// When the first SYN left (the handshake's RTT sample).
    var synSentAt: UInt64 = 0

    init(endpoints: TCPEndpoints, configuration c: TCPConfiguration, iss: UInt32, now: UInt64) {
        self.endpoints = endpoints
        self.configuration = c
        self.state = .closed
        self.iss = iss
        sndUna = iss
        sndNxt = iss
        sndMax = iss
        sendBase = iss &+ 1
        sendRing = TCPByteRing(capacity: c.sendBufferSize)
        recvRing = TCPByteRing(capacity: c.receiveBufferSize)
        reassembly = TCPReassemblyQueue(capacity: c.reassemblyRanges)
        // RFC 9293 §3.7.1: without an MSS option assume 536 (IPv4) or 1220
        // (IPv6, RFC 8200 §5's 1280 minus 60).
        sendMSS = endpoints.local.family == .ipv4 ? 536 : 1220
        rcvMSS = Swift.min(c.maximumSegmentSize, 536)
        rtt = TCPRetransmissionTimer(configuration: c)
        cc = TCPCongestionControl(mss: sendMSS, initialSegments: c.initialWindowSegments)
        cc.recover = iss
        tsOffset = TCPConnection.timestampOffset(iss: iss)
        rcvShift = c.windowScaling ? TCPConnection.receiveWindowShift(c) : 0
    }

    /// The window shift that lets the whole receive buffer be advertised
    /// (RFC 7323 §2.3: at most 14).
    static func receiveWindowShift(_ c: TCPConfiguration) -> UInt8 {
        var shift: UInt8 = 0
        while shift < 14 && (c.receiveBufferSize >> Int(shift)) > 65535 { shift += 1 }
        return shift
    }

    /// A per-connection TSval offset derived from the ISN (RFC 7323 §7.1
    /// suggests a random offset per connection; the ISN is one).
    static func timestampOffset(iss: UInt32) -> UInt32 { iss &* 0x9E37_79B9 }

    /// TSval at `now`: a millisecond clock (RFC 7323 §5.4 asks for 1 ms to
    /// 1 s per tick) plus the connection's offset.
    static func timestampValue(now: UInt64, iss: UInt32) -> UInt32 {
        UInt32(truncatingIfNeeded: now / 1000) &+ timestampOffset(iss: iss)
    }

    /// Active open (RFC 9293 §3.10.1 OPEN, active): sends the SYN with MSS,
    /// window scale and timestamp options and enters SYN-SENT.
    ///
    /// - Parameters:
    ///   - endpoints: the local address/port (an ephemeral port chosen by the
    ///     caller) and the peer.
    ///   - configuration: buffers, options, timers.
    ///   - isn: the ISN generator (RFC 6528).
    ///   - now: the current time (µs).
    ///   - sink: receives the SYN.
    public init(connecting endpoints: TCPEndpoints, configuration: TCPConfiguration = TCPConfiguration(),
                isn: TCPISNGenerator, now: UInt64, sink: inout some TCPSegmentSink) {
        let iss = isn.initialSequenceNumber(local: endpoints.local, localPort: endpoints.localPort,
                                            remote: endpoints.remote, remotePort: endpoints.remotePort, now: now)
        self.init(endpoints: endpoints, configuration: configuration, iss: iss, now: now)
        state = .synSent
        sendSyn(now: now, sink: &sink)
    }

    // MARK: Application interface

    /// Bytes the application may write now (free send-buffer space); 0
    /// once the write side is shut down or the connection is not (yet or
    /// any more) sending. Backpressure: write at most this much, then wait
    /// for it to grow (it grows when ACKs free the buffer).
    public var writableBytes: Int {
        guard !finQueued else { return 0 }
        switch state {
        case .synSent, .synReceived, .established, .closeWait: return sendRing.free
        default: return 0
        }
    }

    /// Copies up to ``writableBytes`` bytes into the send buffer and returns
    /// how many it took. Nothing is sent until ``output(now:sink:)`` (so
    /// several writes can go out as full segments).
    public mutating func write(_ bytes: UnsafeRawBufferPointer) -> Int {
        let n = Swift.min(bytes.count, writableBytes)
        guard n > 0 else { return 0 }
        return sendRing.append(UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
    }

    /// Bytes the application can read.
    public var readableBytes: Int { recvRing.count }

    /// True when the peer's FIN has been consumed and every byte before it
    /// read: a read would return end-of-file.
    public var atEndOfFile: Bool { peerFinished && recvRing.count == 0 }

    /// Copies up to `buffer.count` received bytes out and returns how many.
    /// Reading opens the window: call ``output(now:sink:)`` afterwards so
    /// that a window update goes out when it is due (RFC 9293 §3.8.6.2.2).
    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        recvRing.read(into: buffer)
    }

    /// Discards up to `count` received bytes (a reader that only counts).
    public mutating func discard(_ count: Int) -> Int {
        let n = Swift.min(count, recvRing.count)
        recvRing.consume(n)
        return n
    }

    /// Half-close (RFC 9293 §3.10.4 CLOSE; shutdown(SHUT_WR)): a FIN is
    /// queued after the data already written. ESTABLISHED → FIN-WAIT-1,
    /// CLOSE-WAIT → LAST-ACK; in SYN-SENT/SYN-RECEIVED the FIN waits for
    /// the handshake ("queue for processing after entering ESTABLISHED").
    /// Call ``output(now:sink:)`` to send it.
    public mutating func shutdownWrite() {
        guard !finQueued else { return }
        switch state {
        case .synSent, .synReceived, .established, .closeWait:
            finQueued = true
            finSeq = sendBase &+ UInt32(truncatingIfNeeded: sendRing.count)
            if state == .established { state = .finWait1 }
            if state == .closeWait { state = .lastAck }
        default:
            break
        }
    }

    /// CLOSE by an application that reads nothing more (close(2) of a
    /// socket, not shutdown(2)): the half-close of ``shutdownWrite()``,
    /// and the connection becomes an orphan: received data is discarded
    /// (now and when it arrives: the window stays open so that the peer
    /// can finish), and once in FIN-WAIT-2 the connection is dropped after
    /// ``TCPConfiguration/finWait2Timeout`` unless the peer's FIN comes
    /// first (RFC 9293 §3.10.7.4 and RFC 1122 §4.2.2.13 allow the timeout;
    /// Linux's tcp_fin_timeout). Call ``output(now:sink:)`` to send the FIN.
    public mutating func close(now: UInt64) {
        shutdownWrite()
        isOrphaned = true
        recvRing.consume(recvRing.count)
        armFinWait2Timeout(now: now)
    }

    /// Starts the orphan's FIN-WAIT-2 timer (on ``close(now:)`` in
    /// FIN-WAIT-2, or on entering FIN-WAIT-2 after it).
    mutating func armFinWait2Timeout(now: UInt64) {
        guard isOrphaned, state == .finWait2, finWait2Deadline == nil else { return }
        finWait2Deadline = now + configuration.finWait2Timeout
    }

    /// ABORT (RFC 9293 §3.10.5): sends `<SEQ=SND.NXT><CTL=RST>` in a
    /// synchronized state and closes at once.
    public mutating func abort(now: UInt64, sink: inout some TCPSegmentSink) {
        switch state {
        case .closed, .timeWait:
            break
        case .synSent:
            break  // no RST: the peer has nothing to reset
        default:
            let h = TCPHeader(sourcePort: endpoints.localPort, destinationPort: endpoints.remotePort,
                              sequenceNumber: sndNxt, acknowledgmentNumber: 0, flags: .rst, window: 0)
            counters.resetsSent += 1
            emit(h, payload: .empty, sink: &sink)
        }
        enterClosed(.aborted)
    }

    /// The earliest time at which ``handleTimers(now:sink:)`` has work: the
    /// retransmission or persist timer, the delayed ACK, or the end of
    /// TIME-WAIT or of an orphan's FIN-WAIT-2. Nil when nothing is
    /// pending (CLOSED, or idle).
    public var nextDeadline: UInt64? {
        earliest(earliest(earliest(retransmitDeadline, persistDeadline), earliest(delayedAckDeadline, timeWaitDeadline)),
                 finWait2Deadline)
    }

    /// The smoothed RTT (µs), 0 before the first sample.
    public var smoothedRTT: UInt64 { rtt.smoothedRTT }
    /// The current retransmission timeout (µs), with back-off.
    public var retransmissionTimeout: UInt64 { rtt.rto }
    /// The congestion window (bytes).
    public var congestionWindow: Int { cc.cwnd }
    /// The peer's advertised window (bytes, scaled).
    public var sendWindow: Int { sndWnd }
    /// The negotiated parameters: the MSS this end sends with, the two
    /// window shifts and whether timestamps are on.
    public var negotiated: (sendMSS: Int, sendShift: UInt8, receiveShift: UInt8, timestamps: Bool) {
        (sendMSS, sndShift, rcvShift, timestampsOn)
    }
    /// Bytes written but not yet acknowledged (plus those not yet sent).
    public var unacknowledgedBytes: Int { sendRing.count }

    @inline(__always)
    func earliest(_ a: UInt64?, _ b: UInt64?) -> UInt64? {
        guard let a else { return b }
        guard let b else { return a }
        return Swift.min(a, b)
    }

    mutating func enterClosed(_ reason: TCPCloseReason) {
        state = .closed
        if closeReason == nil { closeReason = reason }
        retransmitDeadline = nil
        persistDeadline = nil
        delayedAckDeadline = nil
        timeWaitDeadline = nil
        finWait2Deadline = nil
    }
}
