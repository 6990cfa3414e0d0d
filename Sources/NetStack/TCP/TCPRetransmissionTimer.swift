/// The retransmission timeout of RFC 6298: SRTT and RTTVAR from RTT
/// samples, the RTO with its bounds, and exponential back-off. Times in
/// microseconds.
struct TCPRetransmissionTimer {
    private(set) var smoothedRTT: UInt64 = 0
    private(set) var rttVariance: UInt64 = 0
    private(set) var hasSample = false
    /// The current RTO, before back-off.
    private(set) var baseRTO: UInt64
    /// Consecutive back-offs (RFC 6298 §5.5).
    private(set) var backoffs = 0
    let minimum: UInt64
    let maximum: UInt64

    init(configuration c: TCPConfiguration) {
        baseRTO = c.initialRetransmissionTimeout  // RFC 6298 §2.1
        minimum = c.minimumRetransmissionTimeout
        maximum = c.maximumRetransmissionTimeout
    }

    /// The RTO with back-off applied (RFC 6298 §5.5: double per expiry,
    /// §2.5: capped at the maximum).
    var rto: UInt64 {
        var r = baseRTO
        for _ in 0..<backoffs {
            r = r &* 2
            if r >= maximum { return maximum }
        }
        return Swift.min(r, maximum)
    }

    /// An RTT measurement `r` (RFC 6298 §2.2/§2.3, alpha = 1/8, beta = 1/4,
    /// K = 4, clock granularity G taken as 1 ms).
    mutating func sample(_ r: UInt64) {
        let r = Swift.max(r, 1)
        if !hasSample {
            // §2.2: SRTT <- R, RTTVAR <- R/2.
            smoothedRTT = r
            rttVariance = r / 2
            hasSample = true
        } else {
            // §2.3: RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'|; SRTT <- 7/8 SRTT + 1/8 R'.
            let diff = smoothedRTT > r ? smoothedRTT - r : r - smoothedRTT
            rttVariance = (3 * rttVariance + diff) / 4
            smoothedRTT = (7 * smoothedRTT + r) / 8
        }
        // RTO <- SRTT + max(G, K*RTTVAR), then the §2.4 minimum and §2.5 maximum.
        baseRTO = Swift.min(Swift.max(smoothedRTT + Swift.max(1000, 4 * rttVariance), minimum), maximum)
        // §5.7 (and Karn's algorithm, RFC 6298 §3): a new sample from a
        // segment not retransmitted ends the back-off.
        backoffs = 0
    }

    /// §5.5: the timer expired; back off.
    mutating func backOff() { backoffs += 1 }

    /// Forgets the back-off (new data acknowledged, RFC 6298 §5.7 note).
    mutating func resetBackoff() { backoffs = 0 }
}

/// NewReno congestion control: slow start and congestion avoidance (RFC
/// 5681 §3.1), fast retransmit and fast recovery (RFC 5681 §3.2) with the
/// partial-ACK handling of RFC 6582 §3.2. Bytes throughout.
struct TCPCongestionControl {
    var cwnd: Int
    var ssthresh = Int.max / 2
    /// Duplicate ACKs in a row (RFC 5681 §3.2).
    var duplicateAcks = 0
    /// In fast recovery until SND.UNA passes ``recover``.
    var inRecovery = false
    /// RFC 6582 §3.2 "recover": the highest sequence number sent when
    /// recovery began.
    var recover: UInt32 = 0
    /// Bytes acknowledged in congestion avoidance not yet turned into cwnd.
    private var avoidanceCredit = 0

    init(mss: Int, initialSegments: Int) {
        // RFC 6928 §2: IW = min(10*MSS, max(2*MSS, 14600)), with the segment
        // count configurable; RFC 5681 §3.1 (IW ≤ 4 segments) if it is set lower.
        cwnd = Swift.min(initialSegments * mss, Swift.max(2 * mss, 14600))
        if initialSegments < 10 { cwnd = Swift.max(mss, initialSegments * mss) }
    }

    /// New data acknowledged outside recovery (RFC 5681 §3.1).
    mutating func onNewAck(bytes: Int, mss: Int) {
        if cwnd < ssthresh {
            // Slow start: cwnd += min(N, SMSS) (RFC 5681 eq. 2, RFC 3465 L=1).
            cwnd += Swift.min(bytes, mss)
        } else {
            // Congestion avoidance: about one SMSS per RTT (RFC 5681 §3.1,
            // byte counting: one SMSS per cwnd bytes acknowledged).
            avoidanceCredit += bytes
            if avoidanceCredit >= cwnd {
                avoidanceCredit -= cwnd
                cwnd += mss
            }
        }
    }

    /// RFC 5681 §3.2 step 2 / RFC 6582 §3.2 step 2: the third duplicate ACK.
    mutating func enterRecovery(flightSize: Int, mss: Int, highestSent: UInt32) {
        ssthresh = Swift.max(flightSize / 2, 2 * mss)  // RFC 5681 eq. 4
        cwnd = ssthresh + 3 * mss  // step 3: inflate by the three segments that left
        inRecovery = true
        recover = highestSent
    }

    /// RFC 5681 §3.2 step 4: another duplicate ACK in recovery.
    mutating func inflate(mss: Int) { cwnd += mss }

    /// RFC 6582 §3.2 step 5, full acknowledgment: leave recovery with
    /// cwnd = min(ssthresh, FlightSize + SMSS) (option 1).
    mutating func exitRecovery(flightSize: Int, mss: Int) {
        cwnd = Swift.min(ssthresh, Swift.max(flightSize, 0) + mss)
        inRecovery = false
        duplicateAcks = 0
        avoidanceCredit = 0
    }

    /// RFC 6582 §3.2 step 5, partial acknowledgment: deflate by the amount
    /// acknowledged, add back one SMSS if at least one SMSS was acknowledged.
    mutating func partialAck(bytes: Int, mss: Int) {
        cwnd = Swift.max(cwnd - bytes, mss)
        if bytes >= mss { cwnd += mss }
    }

    /// RFC 5681 §3.1 eq. 4 and the loss window: a retransmission timeout.
    mutating func onTimeout(flightSize: Int, mss: Int, highestSent: UInt32) {
        ssthresh = Swift.max(flightSize / 2, 2 * mss)
        cwnd = mss  // LW = 1 SMSS
        inRecovery = false
        duplicateAcks = 0
        avoidanceCredit = 0
        // RFC 6582 §4.1 (and RFC 6582 §3.2 step 1's check): duplicate ACKs
        // for data sent before the timeout must not start a fast retransmit.
        recover = highestSent
    }
}
