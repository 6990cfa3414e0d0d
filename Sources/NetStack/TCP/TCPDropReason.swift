/// Why a segment was dropped or refused, or an event the engine counts.
/// Every refusal increments exactly one reason in ``TCPCounters``.
public enum TCPDropReason: Int, Error, Sendable, CaseIterable, Hashable {
    /// Fewer than 20 bytes (RFC 9293 §3.1).
    case truncatedHeader
    /// Data offset below 5 or past the segment's end (RFC 9293 §3.1).
    case badDataOffset
    /// An option's length byte is missing or the option runs past the header.
    case optionOverrun
    /// An option length below 2 (RFC 9293 §3.1: "illegal option length").
    case badOptionLength
    /// Checksum wrong (RFC 9293 §3.1).
    case badChecksum
    /// Not acceptable by the receive test (RFC 9293 §3.10.7.4 first check).
    case outOfWindow
    /// PAWS: TSval older than TS.Recent (RFC 7323 §5.3).
    case pawsRejected
    /// An ACK of data not yet sent, or too old (RFC 5961 §5.2).
    case unacceptableAck
    /// A reset outside the window (RFC 5961 §3.2).
    case resetOutOfWindow
    /// A reset in the window but not exact: answered by a challenge ACK (RFC 5961 §3.2).
    case resetChallenged
    /// A SYN on a synchronized connection: answered by a challenge ACK (RFC 5961 §4.2).
    case synChallenged
    /// An out-of-order segment that needed one more range than allowed.
    case reassemblyRangesFull
    /// A segment without ACK on a synchronized connection (RFC 9293 §3.10.7.4 fifth check).
    case missingAck
    /// A segment for a closed connection or no listener (RST sent, RFC 9293 §3.10.7.1).
    case noConnection
    /// A segment in SYN-SENT that is neither a SYN nor an acceptable RST.
    case unexpectedInSynSent
    /// The listener's SYN queue was full.
    case synQueueFull
    /// The listener's accept queue was full when the handshake completed.
    case acceptQueueFull
    /// A non-SYN, non-ACK segment to a listener, or a SYN with other control bits.
    case listenerUnexpected
    /// A segment with data after the peer's FIN.
    case dataAfterFin
    /// A reset in TIME-WAIT, ignored (RFC 1337 §3).
    case resetInTimeWait
    /// A reset in SYN-SENT whose ACK does not acknowledge our SYN (RFC 9293 §3.10.7.3).
    case resetUnacceptable
}

/// A connection's or listener's counters: segments in and out, the
/// congestion and timer events the tests and statistics look at, and one
/// count per ``TCPDropReason``. Plain integers updated by the owning thread.
public struct TCPCounters: Sendable, Hashable {
    /// Segments handed to ``TCPConnection/receive(_:payload:now:sink:)`` (or the listener).
    public var segmentsReceived = 0
    /// Segments given to the sink (a super-segment counts its MSS-sized
    /// pieces, as they go out on the wire).
    public var segmentsSent = 0
    /// Super-segments given to the sink: calls carrying more than one MSS
    /// (``TCPConfiguration/maximumSegmentsPerSend``).
    public var superSegmentsSent = 0
    /// Data bytes sent for the first time.
    public var bytesSent = 0
    /// Data bytes delivered in order to the receive buffer.
    public var bytesReceived = 0
    /// Segments retransmitted (any cause).
    public var retransmissions = 0
    /// Fast retransmits (RFC 5681 §3.2 step 2, RFC 6582 partial ACKs).
    public var fastRetransmits = 0
    /// Retransmission timeouts.
    public var timeouts = 0
    /// Zero-window probes sent.
    public var windowProbes = 0
    /// Duplicate ACKs sent for out-of-order arrivals.
    public var duplicateAcksSent = 0
    /// Duplicate ACKs received (RFC 5681 §2 definition).
    public var duplicateAcksReceived = 0
    /// Challenge ACKs sent (RFC 5961).
    public var challengeAcks = 0
    /// ACKs sent without data.
    public var pureAcksSent = 0
    /// Delayed ACKs sent by the timer.
    public var delayedAcksSent = 0
    /// RSTs sent.
    public var resetsSent = 0
    /// Orphaned connections ended by ``TCPConfiguration/finWait2Timeout``.
    public var finWait2Timeouts = 0
    /// Out-of-order segments kept.
    public var outOfOrderSegments = 0
    /// Segments (partly) duplicate of data already received.
    public var duplicateSegments = 0
    private var drops = [Int](repeating: 0, count: TCPDropReason.allCases.count)

    /// All zero.
    public init() {}

    /// Drops counted for `reason`.
    public subscript(reason: TCPDropReason) -> Int {
        get { drops[reason.rawValue] }
        set { drops[reason.rawValue] = newValue }
    }

    /// The sum of all drop counts.
    public var totalDrops: Int { drops.reduce(0, +) }

    mutating func drop(_ reason: TCPDropReason) { drops[reason.rawValue] &+= 1 }
}
