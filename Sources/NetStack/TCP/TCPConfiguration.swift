/// The tunables of a connection or listener. A plain value (any thread).
///
/// Times are in microseconds of the caller's monotonic clock (the same
/// clock that is passed as `now` to every engine call).
public struct TCPConfiguration: Sendable, Hashable {
    /// Receive buffer (bytes); the advertised window never exceeds its free
    /// space. Allocated once per connection.
    public var receiveBufferSize = 256 * 1024
    /// Send buffer (bytes): what the application may have queued and
    /// unacknowledged. Allocated once per connection.
    public var sendBufferSize = 256 * 1024
    /// The MSS this end announces (RFC 9293 §3.7.1: the interface MTU minus
    /// the IP and TCP fixed headers; 1460 for a 1500-byte Ethernet MTU over IPv4).
    public var maximumSegmentSize = 1460
    /// Offer window scaling (RFC 7323 §2).
    public var windowScaling = true
    /// Offer timestamps (RFC 7323 §3), used for RTTM and PAWS.
    public var timestamps = true
    /// Nagle's algorithm (RFC 9293 §3.7.4, RFC 1122 §4.2.3.4). Off by
    /// default: the integrator's callers are request/response servers that
    /// write whole messages (Linux's TCP_NODELAY).
    public var nagle = false
    /// Delayed-ACK timeout (RFC 1122 §4.2.3.2: under 0.5 s; RFC 5681 §4.2:
    /// within 500 ms; 200 ms is the classic BSD/Linux maximum).
    public var delayedAckTimeout: UInt64 = 200_000
    /// Initial RTO (RFC 6298 §2.1: 1 s).
    public var initialRetransmissionTimeout: UInt64 = 1_000_000
    /// Lower bound of the RTO (RFC 6298 §2.4: 1 s; Linux uses 200 ms, a
    /// deviation the RFC acknowledges in its §2.4 discussion). Keep it above
    /// the peer's delayed-ACK timeout plus the RTT: a lone segment's ACK may
    /// be delayed that long, and an RTO below it retransmits spuriously and
    /// collapses cwnd.
    public var minimumRetransmissionTimeout: UInt64 = 1_000_000
    /// Upper bound of the RTO (RFC 6298 §2.5: at least 60 s).
    public var maximumRetransmissionTimeout: UInt64 = 60_000_000
    /// Retransmissions of one segment before the connection is given up
    /// (RFC 9293 §3.8.3 R2; RFC 1122 §4.2.3.5 asks for at least 100 s).
    public var maximumRetransmissions = 12
    /// Retransmissions of a SYN or SYN-ACK before giving up (RFC 1122
    /// §4.2.3.5: R2 for a SYN at least 3 minutes is suggested; Linux
    /// tcp_syn_retries defaults to 6).
    public var maximumSynRetransmissions = 6
    /// Maximum segment lifetime; TIME-WAIT lasts 2*MSL (RFC 9293 §3.4.2,
    /// §3.10.7.4: MSL is 2 minutes). Configurable shorter (Linux uses 60 s
    /// for 2*MSL).
    public var maximumSegmentLifetime: UInt64 = 120_000_000
    /// How long an orphaned connection (the application called
    /// ``TCPConnection/close(now:)``: it reads nothing more) may stay in
    /// FIN-WAIT-2 waiting for the peer's FIN before it is dropped
    /// (Linux's net.ipv4.tcp_fin_timeout, 60 s; RFC 9293 §3.10.7.4 and
    /// RFC 1122 §4.2.2.13 allow ending it, since nothing can be delivered
    /// any more). Counted from entering FIN-WAIT-2 (or from the close, if
    /// later), not restarted by the peer's segments, as Linux's timer. A
    /// half-closed connection (``TCPConnection/shutdownWrite()`` only,
    /// still read) is never timed out.
    public var finWait2Timeout: UInt64 = 60_000_000
    /// Initial congestion window in segments (RFC 6928 §2: min(10*MSS,
    /// max(2*MSS, 14600)); this count is the 10).
    public var initialWindowSegments = 10
    /// Out-of-order ranges a connection keeps (RFC 9293 §3.10.7.4 allows
    /// holding them; the bound is this engine's).
    public var reassemblyRanges = 16
    /// First persist (zero-window probe) interval; backs off like the RTO
    /// (RFC 9293 §3.8.6.1, RFC 1122 §4.2.2.17).
    public var persistTimeout: UInt64 = 500_000
    /// The most MSS-sized segments one sink call may carry (a TCP
    /// super-segment for a device with segmentation offload, see
    /// ``TCPSegmentSink/send(_:payload:endpoints:segmentSize:)``). 1 (the
    /// default): every call is one segment of at most the MSS. Above 1, new
    /// data within the windows goes out in calls of up to this many MSS,
    /// never beyond 64 KiB of IP packet; retransmissions stay one MSS.
    /// ``EndpointStack`` sets it from its device (see
    /// ``EndpointStack/Configuration/tcpSegmentationOffload``).
    public var maximumSegmentsPerSend = 1
    /// Largest persist interval.
    public var maximumPersistTimeout: UInt64 = 60_000_000

    /// The defaults above.
    public init() {}
}
