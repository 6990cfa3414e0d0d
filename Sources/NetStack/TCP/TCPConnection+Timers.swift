extension TCPConnection {
    /// Runs every timer that has expired at `now` (see ``nextDeadline``):
    /// the end of TIME-WAIT, the delayed ACK, the retransmission timeout,
    /// the persist timer, an orphan's FIN-WAIT-2 timeout. Sends what they
    /// cause to `sink`.
    public mutating func handleTimers(now: UInt64, sink: inout some TCPSegmentSink) {
        if let t = timeWaitDeadline, now >= t {
            // RFC 9293 §3.10.8: "If the time-wait timeout expires on a
            // connection, delete the TCB".
            enterClosed(.normal)
            return
        }
        if let t = finWait2Deadline, now >= t {
            // An orphan whose peer never sent its FIN: dropped silently, as
            // Linux's FIN-WAIT-2 timewait socket (tcp_time_wait with
            // TCP_FIN_WAIT2) at the end of tcp_fin_timeout. A late segment
            // of the peer's then draws a RST (no connection).
            counters.finWait2Timeouts += 1
            enterClosed(.finWait2Timeout)
            return
        }
        if let t = delayedAckDeadline, now >= t {
            delayedAckDeadline = nil
            if ackPending {
                counters.delayedAcksSent += 1
                sendAck(now: now, sink: &sink)
            }
        }
        if let t = retransmitDeadline, now >= t {
            retransmitDeadline = nil
            retransmissionTimeout(now: now, sink: &sink)
            if state == .closed { return }
        }
        if let t = persistDeadline, now >= t {
            persistDeadline = nil
            persistTimeout(now: now, sink: &sink)
        }
    }

    /// RFC 6298 §5.4-5.7 (and §3.8.3's R2 limit, RFC 9293).
    mutating func retransmissionTimeout(now: UInt64, sink: inout some TCPSegmentSink) {
        counters.timeouts += 1
        retransmitCount += 1
        rttSeq = nil  // Karn: nothing retransmitted is timed
        switch state {
        case .synSent, .synReceived:
            guard retransmitCount <= configuration.maximumSynRetransmissions else {
                enterClosed(.timedOut)
                return
            }
            rtt.backOff()
            counters.retransmissions += 1
            sendSyn(now: now, sink: &sink)
        case .closed, .timeWait:
            return
        default:
            guard retransmitCount <= configuration.maximumRetransmissions else {
                enterClosed(.timedOut)
                return
            }
            let flight = TCPSeq.distance(sndMax, from: sndUna)
            guard flight > 0 else { return }
            // RFC 5681 §3.1 eq. 4 and LW; RFC 6298 §5.5 back-off; go-back-N
            // from SND.UNA (§5.4 retransmits the earliest segment; the rest
            // follow as the ACKs open cwnd).
            cc.onTimeout(flightSize: flight, mss: sendMSS, highestSent: sndMax)
            rtt.backOff()
            sndNxt = sndUna
            output(now: now, sink: &sink)
            if retransmitDeadline == nil && persistDeadline == nil { retransmitDeadline = now + rtt.rto }
        }
    }

    /// The persist timer: a zero-window probe of one byte (RFC 9293
    /// §3.8.6.1, RFC 1122 §4.2.2.17: probe with exponential back-off, keep
    /// the connection open however long the window stays shut), or the SWS
    /// override of §3.8.6.2.1 (send what the window allows).
    mutating func persistTimeout(now: UInt64, sink: inout some TCPSegmentSink) {
        guard state.maySend || state == .finWait1 || state == .lastAck || state == .closing else { return }
        persistBackoffs += 1
        let offset = TCPSeq.distance(sndNxt, from: sendBase)
        let remaining = Swift.max(sendRing.count - offset, 0)
        let usable = Swift.max(Swift.min(sndWnd, cc.cwnd) - TCPSeq.distance(sndNxt, from: sndUna), 0)
        if usable == 0 {
            if remaining > 0 {
                // One byte beyond the window; SND.NXT stays, SND.MAX covers
                // the byte so that an ACK of it is acceptable.
                let h = header(seq: sndNxt, flags: .ack, now: now)
                counters.windowProbes += 1
                emitFromSendRing(h, offset: offset, count: 1, sink: &sink)
                sndMax = TCPSeq.max(sndMax, sndNxt &+ 1)
            } else if finQueued && sndNxt == finSeq {
                counters.windowProbes += 1
                sendData(offset: offset, length: 0, fin: true, now: now, sink: &sink)
                return
            }
            armPersistIfStalled(now: now)
        } else if remaining > 0 {
            let len = Swift.min(remaining, usable, sendMSS)
            let fin = finQueued && sndNxt &+ UInt32(len) == finSeq && len == remaining
            sendData(offset: offset, length: len, fin: fin, now: now, sink: &sink)
            output(now: now, sink: &sink)
        }
    }
}
