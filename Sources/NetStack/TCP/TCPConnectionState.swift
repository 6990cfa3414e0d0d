/// The connection states of RFC 9293 §3.3.2 (LISTEN is the
/// ``TCPListener``; a listener's SYN-RECEIVED entries are not connections
/// until the handshake completes, BSD's syncache design).
public enum TCPConnectionState: Sendable, Hashable, CustomStringConvertible {
    /// No connection (never opened, or finished: see ``TCPConnection/closeReason``).
    case closed
    /// Active open: our SYN sent, waiting for the peer's SYN (RFC 9293 §3.10.7.3).
    case synSent
    /// Simultaneous open: both SYNs seen, waiting for the ACK of ours.
    case synReceived
    /// Data flows both ways.
    case established
    /// We closed (FIN sent), the peer's ACK of it not yet received.
    case finWait1
    /// Our FIN acknowledged; the peer may still send.
    case finWait2
    /// Both sides sent FIN at the same time; waiting for the ACK of ours.
    case closing
    /// Waiting 2*MSL for old duplicates to die (RFC 9293 §3.4.2).
    case timeWait
    /// The peer closed; we may still send.
    case closeWait
    /// We closed after the peer; waiting for the ACK of our FIN.
    case lastAck

    /// The RFC's name.
    public var description: String {
        switch self {
        case .closed: "CLOSED"
        case .synSent: "SYN-SENT"
        case .synReceived: "SYN-RECEIVED"
        case .established: "ESTABLISHED"
        case .finWait1: "FIN-WAIT-1"
        case .finWait2: "FIN-WAIT-2"
        case .closing: "CLOSING"
        case .timeWait: "TIME-WAIT"
        case .closeWait: "CLOSE-WAIT"
        case .lastAck: "LAST-ACK"
        }
    }

    /// States in which our data may still be sent (RFC 9293 §3.10.2 SEND).
    var maySend: Bool { self == .established || self == .closeWait }
    /// States in which the peer's data is accepted (RFC 9293 §3.10.7.4 seventh check).
    var mayReceive: Bool { self == .established || self == .finWait1 || self == .finWait2 }
}

/// How a connection ended.
public enum TCPCloseReason: Sendable, Hashable {
    /// Both FINs exchanged and acknowledged (after TIME-WAIT for the active closer).
    case normal
    /// The peer reset the connection (in a synchronized state).
    case reset
    /// The peer refused the connection (RST in SYN-SENT: ECONNREFUSED).
    case refused
    /// Retransmissions exhausted (RFC 9293 §3.8.3 R2).
    case timedOut
    /// The application aborted (RST sent).
    case aborted
    /// Orphaned in FIN-WAIT-2 longer than
    /// ``TCPConfiguration/finWait2Timeout`` (the peer never sent its
    /// FIN): dropped without a RST, as Linux's default tcp_fin_timeout.
    case finWait2Timeout
}
