import FastDemux

extension TCPConnection {
    /// Sends what is due: new or retransmitted data and the FIN within the
    /// peer's window and the congestion window, a window update after the
    /// application read, or an ACK that is owed now. Call it after
    /// ``write(_:)``, ``read(into:)`` and ``shutdownWrite()``; the engine's
    /// own calls (``receive(_:payload:now:sink:)``, ``handleTimers(now:sink:)``)
    /// call it themselves.
    public mutating func output(now: UInt64, sink: inout some TCPSegmentSink) {
        switch state {
        case .established, .closeWait, .finWait1, .closing, .lastAck:
            break
        case .finWait2, .timeWait:
            if ackNow { sendAck(now: now, sink: &sink) }
            return
        case .closed, .synSent, .synReceived:
            return
        }
        // A window update is due when reading moved the right edge far
        // enough (RFC 9293 §3.8.6.2.2, the receiver's SWS rule).
        if windowUpdateDue { ackNow = true }

        var sentSomething = false
        while true {
            let offset = TCPSeq.distance(sndNxt, from: sendBase)
            let remaining = Swift.max(sendRing.count - offset, 0)
            let inFlight = TCPSeq.distance(sndNxt, from: sndUna)
            // RFC 9293 §3.8.6.2.1 usable window, limited by cwnd (RFC 5681 §3.1).
            let usable = Swift.max(Swift.min(sndWnd, cc.cwnd) - inFlight, 0)
            // New data may go out as a super-segment; what SND.NXT resends
            // after a timeout goes one MSS at a time (as it would without).
            let limit = TCPSeq.lt(sndNxt, sndMax) ? sendMSS : maximumSendLength
            var len = Swift.min(remaining, usable, limit)
            if len > sendMSS {
                // Whole MSS pieces; a short last piece only where the loop
                // below would send it as a segment of its own right after
                // the full ones: all that is queued, and Nagle off (with
                // Nagle the full pieces are in flight, which holds it).
                let tail = len % sendMSS
                if tail != 0 && !(len == remaining && !configuration.nagle) { len -= tail }
            }
            let finDue = finQueued && sndNxt &+ UInt32(len) == finSeq && len == remaining
            if len == 0 && !finDue { break }
            if len > 0 && len < sendMSS {
                // Sender SWS avoidance (RFC 9293 §3.8.6.2.1): a short segment
                // only if it is all there is (and Nagle, RFC 1122 §4.2.3.4,
                // allows one with data in flight), or at least half the
                // largest window the peer offered.
                let allQueued = len == remaining
                let nagleAllows = !configuration.nagle || inFlight == 0
                let halfWindow = maxSndWnd > 0 && len >= maxSndWnd / 2
                if !((allQueued && nagleAllows) || halfWindow) { break }
            }
            sendData(offset: offset, length: len, fin: finDue, now: now, sink: &sink)
            sentSomething = true
            if finDue { break }
        }
        if !sentSomething && ackNow { sendAck(now: now, sink: &sink) }
        armPersistIfStalled(now: now)
    }

    /// Data (and FIN) from ring offset `offset`, at SND.NXT.
    mutating func sendData(offset: Int, length len: Int, fin: Bool, now: UInt64, sink: inout some TCPSegmentSink) {
        let seq = sndNxt
        let retransmission = TCPSeq.lt(seq, sndMax)
        var flags: TCPFlags = .ack
        if fin { flags.insert(.fin) }
        if len > 0 && offset + len == sendRing.count { flags.insert(.psh) }
        let h = header(seq: seq, flags: flags, now: now)
        if retransmission {
            counters.retransmissions += 1
            rttSeq = nil  // Karn's algorithm (RFC 6298 §3)
        } else {
            counters.bytesSent += len
            if rttSeq == nil && !timestampsOn && len > 0 { rttSeq = seq; rttStart = now }
        }
        emitFromSendRing(h, offset: offset, count: len, sink: &sink)
        if len > sendMSS { counters.superSegmentsSent += 1 }
        sndNxt = seq &+ UInt32(len) &+ (fin ? 1 : 0)
        sndMax = TCPSeq.max(sndMax, sndNxt)
        // RFC 6298 §5.1: start the timer if it is not running.
        if retransmitDeadline == nil { retransmitDeadline = now + rtt.rto }
        persistDeadline = nil
    }

    /// Retransmits one segment at SND.UNA without moving SND.NXT (fast
    /// retransmit, RFC 5681 §3.2 step 2; a partial ACK, RFC 6582 §3.2 step 5).
    mutating func retransmitFirst(now: UInt64, sink: inout some TCPSegmentSink) {
        let offset = TCPSeq.distance(sndUna, from: sendBase)
        guard offset >= 0 else { return }
        let len = Swift.min(Swift.max(sendRing.count - offset, 0), sendMSS)
        let fin = finQueued && sndUna &+ UInt32(len) == finSeq && TCPSeq.lt(finSeq, sndMax)
        guard len > 0 || fin else { return }
        var flags: TCPFlags = .ack
        if fin { flags.insert(.fin) }
        let h = header(seq: sndUna, flags: flags, now: now)
        counters.retransmissions += 1
        rttSeq = nil
        emitFromSendRing(h, offset: offset, count: len, sink: &sink)
    }

    /// A pure ACK `<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>`, where SND.NXT is
    /// the next new octet (SND.MAX): after a timeout pulled SND.NXT back,
    /// the peer may already hold everything up to SND.MAX, and an ACK
    /// numbered below its RCV.NXT would fail its acceptability test (BSD's
    /// tcp_output does the same). With the window shut, a zero-window
    /// probe's byte is beyond SND.NXT but not in the peer's buffer: then
    /// SND.NXT itself.
    mutating func sendAck(now: UInt64, sink: inout some TCPSegmentSink) {
        let h = header(seq: sndWnd == 0 ? sndNxt : sndMax, flags: .ack, now: now)
        counters.pureAcksSent += 1
        emit(h, payload: .empty, sink: &sink)
    }

    /// A challenge ACK (RFC 5961 §3.2, §4.2, §5.2 all answer with the same
    /// `<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>`). RFC 5961 §7's rate limit is
    /// not applied (a connection is owned by one thread; a limit would be a
    /// per-stack counter for the integrator).
    mutating func sendChallengeAck(now: UInt64, sink: inout some TCPSegmentSink) {
        counters.challengeAcks += 1
        sendAck(now: now, sink: &sink)
    }

    /// The SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED) with our options.
    mutating func sendSyn(now: UInt64, sink: inout some TCPSegmentSink) {
        var o = TCPOptions()
        o.maximumSegmentSize = UInt16(clamping: configuration.maximumSegmentSize)
        let synAck = state == .synReceived
        // RFC 7323 §2.2: send the window scale on a SYN-ACK only if the SYN had one.
        if configuration.windowScaling && (!synAck || windowScaleAgreed) {
            o.windowScale = rcvShift
        }
        if configuration.timestamps && (!synAck || timestampsOn) {
            o.timestamp = (tsValue(now), synAck ? tsRecent : 0)
        }
        // RFC 7323 §2.2: the window field of a SYN is never scaled.
        let window = UInt16(clamping: recvRing.free)
        var flags: TCPFlags = .syn
        if synAck { flags.insert(.ack) }
        let h = TCPHeader(sourcePort: endpoints.localPort, destinationPort: endpoints.remotePort,
                          sequenceNumber: iss, acknowledgmentNumber: synAck ? rcvNxt : 0,
                          flags: flags, window: window, options: o)
        if synAck {
            rcvAdv = rcvNxt &+ UInt32(window)
            lastAckSent = rcvNxt
        }
        if retransmitCount == 0 { synSentAt = now }
        emit(h, payload: .empty, sink: &sink)
        sndNxt = iss &+ 1
        sndMax = TCPSeq.max(sndMax, sndNxt)
        if retransmitDeadline == nil { retransmitDeadline = now + rtt.rto }
    }

    /// A header carrying ACK of RCV.NXT, the window and the timestamp; it
    /// clears the owed ACK (every segment sent piggybacks it).
    mutating func header(seq: UInt32, flags: TCPFlags, now: UInt64) -> TCPHeader {
        var o = TCPOptions()
        if timestampsOn { o.timestamp = (tsValue(now), tsRecent) }
        let window = advertiseWindow()
        ackPending = false
        ackNow = false
        fullSegmentsUnacked = 0
        delayedAckDeadline = nil
        lastAckSent = rcvNxt
        return TCPHeader(sourcePort: endpoints.localPort, destinationPort: endpoints.remotePort,
                         sequenceNumber: seq, acknowledgmentNumber: rcvNxt, flags: flags,
                         window: window, options: o)
    }

    /// TSval: a millisecond clock (RFC 7323 §5.4 asks for 1 ms to 1 s per
    /// tick) offset per connection.
    @inline(__always)
    func tsValue(_ now: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: now / 1000) &+ tsOffset }

    /// The window the receive buffer can take beyond RCV.NXT.
    var receiveSpace: Int {
        Swift.min(recvRing.free, 65535 << Int(rcvShift))
    }

    /// The window advertised now, in bytes: never moving the right edge
    /// left (RFC 9293 §3.8.6.2.2 / RFC 7323 §2.4), and raising it only by
    /// at least min(buffer/2, MSS) (the receiver's SWS avoidance, RFC 9293
    /// §3.8.6.2.2 and RFC 1122 §4.2.3.3).
    var currentWindow: Int { Swift.max(TCPSeq.distance(rcvAdv, from: rcvNxt), 0) }
    var windowIncrementThreshold: Int { Swift.min(recvRing.capacity / 2, rcvMSS) }

    /// Reading moved the possible right edge by at least the SWS threshold.
    var windowUpdateDue: Bool {
        let space = receiveSpace
        let cur = TCPSeq.gt(rcvAdv, rcvNxt) ? currentWindow : 0
        // Only worth a segment of its own if the window grows by two
        // segments or opens from (nearly) zero (Linux's __tcp_cleanup_rbuf
        // rule, which satisfies RFC 9293 §3.8.6.2.2's).
        return space - cur >= Swift.max(windowIncrementThreshold, Swift.min(2 * rcvMSS, recvRing.capacity / 2))
            || (cur < rcvMSS && space - cur >= windowIncrementThreshold)
    }

    /// Computes the window field and moves RCV.ADV.
    mutating func advertiseWindow() -> UInt16 {
        let space = receiveSpace
        let cur = currentWindow
        var wnd = cur
        if space > cur && space - cur >= windowIncrementThreshold { wnd = space }
        // Round up so that scaling never shrinks the right edge (the rounded
        // part may exceed the buffer by less than 2^shift; bytes beyond the
        // buffer are trimmed on arrival).
        let unit = 1 << Int(rcvShift)
        let field = Swift.min((wnd + unit - 1) >> Int(rcvShift), 65535)
        rcvAdv = TCPSeq.max(rcvAdv, rcvNxt &+ UInt32(truncatingIfNeeded: field << Int(rcvShift)))
        return UInt16(field)
    }

    /// Data waits but nothing is in flight and nothing could be sent: start
    /// the persist timer (RFC 9293 §3.8.6.1 zero-window probing; and the
    /// §3.8.6.2.1 override timer for a window too small to send into).
    mutating func armPersistIfStalled(now: UInt64) {
        let offset = TCPSeq.distance(sndNxt, from: sendBase)
        let remaining = sendRing.count - offset
        let waiting = remaining > 0 || (finQueued && TCPSeq.le(sndNxt, finSeq))
        if waiting && sndNxt == sndUna && retransmitDeadline == nil && persistDeadline == nil {
            var t = configuration.persistTimeout
            for _ in 0..<persistBackoffs { t = Swift.min(t * 2, configuration.maximumPersistTimeout) }
            persistDeadline = now + t
        }
    }

    /// The longest payload one sink call carries:
    /// ``TCPConfiguration/maximumSegmentsPerSend`` MSS, and no more whole
    /// MSS than fit a 64 KiB IP packet behind the largest headers (IPv6's
    /// 40 bytes, a 60-byte TCP header; ``TCPHeader/write(payload:into:source:destination:)``'s
    /// limit).
    var maximumSendLength: Int {
        let k = configuration.maximumSegmentsPerSend
        if k <= 1 { return sendMSS }
        return sendMSS * Swift.max(Swift.min(k, (65535 - 40 - 60) / sendMSS), 1)
    }

    /// Hands one segment (or a super-segment of more than one MSS) to the
    /// sink and counts it by its MSS-sized pieces.
    mutating func emit(_ h: TCPHeader, payload: TCPPayload, sink: inout some TCPSegmentSink) {
        countSegments(payload.count)
        Self.transmit(h, payload: payload, endpoints: endpoints, sendMSS: sendMSS, sink: &sink)
    }

    /// `emit` of `len` bytes at `offset` in the send ring. The count comes
    /// first and the send runs inside the ring's borrow without touching
    /// `self` mutably: a mutating call inside `sendRing.withPieces` would
    /// overlap the ring's read access, and Swift would copy the ring for
    /// it, retaining and releasing its storage on every data segment (and
    /// a non-mutating method of `self` there would copy all of `self`, six
    /// buffers): the send is static, on copies of the two fields it needs.
    mutating func emitFromSendRing(_ h: TCPHeader, offset: Int, count len: Int, sink: inout some TCPSegmentSink) {
        countSegments(len)
        let endpoints = self.endpoints, mss = sendMSS
        sendRing.withPieces(offset: offset, count: len) {
            Self.transmit(h, payload: $0, endpoints: endpoints, sendMSS: mss, sink: &sink)
        }
    }

    /// Counts the segments a payload of `n` bytes leaves as (one, or a
    /// super-segment's worth).
    mutating func countSegments(_ n: Int) {
        counters.segmentsSent += n > sendMSS ? (n + sendMSS - 1) / sendMSS : 1
    }

    /// Hands the segment to `sink` (split at the send MSS if larger).
    static func transmit(_ h: TCPHeader, payload: TCPPayload, endpoints: TCPEndpoints, sendMSS: Int,
                         sink: inout some TCPSegmentSink) {
        if payload.count > sendMSS {
            sink.send(h, payload: payload, endpoints: endpoints, segmentSize: sendMSS)
        } else {
            sink.send(h, payload: payload, endpoints: endpoints)
        }
    }
}
