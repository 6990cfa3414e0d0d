extension TCPConnection {
    /// Processes one arriving segment (RFC 9293 §3.10.7 SEGMENT ARRIVES)
    /// and sends what it causes (ACKs, data the ACK let out, RSTs) to
    /// `sink`.
    ///
    /// - Parameters:
    ///   - header: the parsed header (``TCPHeader/parse(_:)``; the caller
    ///     has checked the checksum and that the segment is for this
    ///     connection's 4-tuple).
    ///   - payload: the segment's data; copied into the receive buffer, not
    ///     retained.
    ///   - now: the current time (µs).
    ///   - sink: receives the segments to send.
    public mutating func receive(_ header: TCPHeader, payload: UnsafeRawBufferPointer, now: UInt64,
                                 sink: inout some TCPSegmentSink) {
        counters.segmentsReceived += 1
        switch state {
        case .closed:
            // RFC 9293 §3.10.7.1: everything is answered with a RST (except a RST).
            counters.drop(.noConnection)
            if let r = header.resetReply(payloadLength: payload.count) {
                counters.resetsSent += 1
                emit(r, payload: .empty, sink: &sink)
            }
        case .synSent:
            receiveInSynSent(header, payload: payload, now: now, sink: &sink)
        default:
            receiveSynchronized(header, payload: payload, now: now, sink: &sink)
        }
    }

    /// Takes the options of the peer's SYN (RFC 7323 §2.2 window scale
    /// only if both SYNs carry it; §3.2 timestamps likewise; RFC 9293
    /// §3.7.1 MSS, default 536/1220 without the option).
    mutating func applyPeerSynOptions(_ o: TCPOptions) {
        if let ws = o.windowScale, configuration.windowScaling {
            windowScaleAgreed = true
            sndShift = Swift.min(ws, 14)  // RFC 7323 §2.3: use 14 if larger
        } else {
            windowScaleAgreed = false
            sndShift = 0
            rcvShift = 0
        }
        if let ts = o.timestamp, configuration.timestamps {
            timestampsOn = true
            tsRecent = ts.value
        } else {
            timestampsOn = false
        }
        let peerMSS = o.maximumSegmentSize.map(Int.init) ?? (endpoints.local.family == .ipv4 ? 536 : 1220)
        // RFC 9293 §3.7.1 / RFC 6691: the payload per segment is the MSS
        // minus the option bytes we put in every segment.
        sendMSS = Swift.max(Swift.min(peerMSS, configuration.maximumSegmentSize) - (timestampsOn ? 12 : 0), 64)
        rcvMSS = Swift.max(Swift.min(configuration.maximumSegmentSize, peerMSS) - (timestampsOn ? 12 : 0), 64)
        cc = TCPCongestionControl(mss: sendMSS, initialSegments: configuration.initialWindowSegments)
        cc.recover = iss
    }

    /// RFC 9293 §3.10.7.3, SYN-SENT.
    mutating func receiveInSynSent(_ h: TCPHeader, payload: UnsafeRawBufferPointer, now: UInt64,
                                   sink: inout some TCPSegmentSink) {
        var ackAcceptable = false
        if h.flags.contains(.ack) {
            // First: an ACK of something other than our SYN gets
            // <SEQ=SEG.ACK><CTL=RST> (unless it is a RST).
            if TCPSeq.le(h.acknowledgmentNumber, iss) || TCPSeq.gt(h.acknowledgmentNumber, sndMax) {
                counters.drop(.unacceptableAck)
                if !h.flags.contains(.rst), let r = h.resetReply(payloadLength: payload.count) {
                    counters.resetsSent += 1
                    emit(r, payload: .empty, sink: &sink)
                }
                return
            }
            ackAcceptable = true
        }
        if h.flags.contains(.rst) {
            // Second: a RST is acceptable only with an acceptable ACK (RFC
            // 9293 §3.10.7.3; RFC 5961 §3.2 leaves SYN-SENT to this rule).
            if ackAcceptable { enterClosed(.refused) } else { counters.drop(.resetUnacceptable) }
            return
        }
        guard h.flags.contains(.syn) else {
            counters.drop(.unexpectedInSynSent)
            return
        }
        // Fourth: the peer's SYN.
        irs = h.sequenceNumber
        rcvNxt = irs &+ 1
        applyPeerSynOptions(h.options)
        if ackAcceptable {
            sndUna = h.acknowledgmentNumber
            // RFC 7323 §2.2: the window of a SYN-ACK is not scaled.
            sndWnd = Int(h.window)
            maxSndWnd = sndWnd
            sndWl1 = h.sequenceNumber
            sndWl2 = h.acknowledgmentNumber
            // An RTT sample from the SYN unless it was retransmitted (Karn).
            if retransmitCount == 0 { rtt.sample(now - synSentAt) }
            retransmitDeadline = nil
            retransmitCount = 0
            rtt.resetBackoff()
            enterEstablished()
            // Our SYN offered the unscaled window (RFC 7323 §2.2).
            rcvAdv = rcvNxt &+ UInt32(Swift.min(recvRing.free, 65535))
            ackNow = true
            // Data on a SYN-ACK is not taken (rare; the peer retransmits it).
            output(now: now, sink: &sink)
        } else {
            // Simultaneous open (RFC 9293 §3.5 figure 7): SYN-RECEIVED, send SYN-ACK.
            state = .synReceived
            sendSyn(now: now, sink: &sink)
        }
    }

    /// The handshake completed: ESTABLISHED, or FIN-WAIT-1 if the
    /// application already closed (RFC 9293 §3.10.4 "queue ... after
    /// entering ESTABLISHED").
    mutating func enterEstablished() {
        state = finQueued ? .finWait1 : .established
        if finQueued { finSeq = sendBase &+ UInt32(truncatingIfNeeded: sendRing.count) }
    }

    /// RFC 9293 §3.10.7.4, the synchronized states (and SYN-RECEIVED).
    mutating func receiveSynchronized(_ h: TCPHeader, payload: UnsafeRawBufferPointer, now: UInt64,
                                      sink: inout some TCPSegmentSink) {
        let isRst = h.flags.contains(.rst)
        let seq = h.sequenceNumber
        let segLen = Int(h.sequenceLength(payloadLength: payload.count))

        // PAWS (RFC 7323 §5.3 R1): a TSval older than TS.Recent marks an
        // old duplicate; drop it and send an ACK. RSTs are exempt (Linux
        // does the same: a RST often carries no timestamp, and RFC 5961
        // §3 already guards resets).
        if timestampsOn, !isRst, let ts = h.options.timestamp, TCPSeq.lt(ts.value, tsRecent) {
            counters.drop(.pawsRejected)
            sendAck(now: now, sink: &sink)
            return
        }

        // First check: sequence acceptability (RFC 9293 §3.10.7.4 table).
        let rcvWnd = currentWindow
        let acceptable: Bool
        if segLen == 0 {
            acceptable = rcvWnd == 0
                ? seq == rcvNxt
                : TCPSeq.inRange(seq, rcvNxt, rcvNxt &+ UInt32(rcvWnd))
        } else if rcvWnd == 0 {
            acceptable = false
        } else {
            let last = seq &+ UInt32(segLen) &- 1
            acceptable = TCPSeq.inRange(seq, rcvNxt, rcvNxt &+ UInt32(rcvWnd))
                || TCPSeq.inRange(last, rcvNxt, rcvNxt &+ UInt32(rcvWnd))
        }
        if !acceptable {
            // "If an incoming segment is not acceptable, an acknowledgment
            // should be sent in reply (unless the RST bit is set)".
            if isRst {
                counters.drop(.resetOutOfWindow)
            } else {
                counters.drop(.outOfWindow)
                if segLen > 0 && TCPSeq.lt(seq, rcvNxt) { counters.duplicateSegments += 1 }
                // TIME-WAIT: a retransmitted FIN restarts the 2 MSL timer (§3.10.7.4 sixth check).
                if state == .timeWait && h.flags.contains(.fin) { startTimeWait(now: now) }
                sendAck(now: now, sink: &sink)
            }
            return
        }

        // Second check: RST (RFC 5961 §3.2): exactly RCV.NXT resets, any
        // other in-window RST gets a challenge ACK.
        if isRst {
            // RFC 1337 §3 (TIME-WAIT assassination, fix F1): a RST in
            // TIME-WAIT is ignored; the 2*MSL wait runs out as it should.
            if state == .timeWait {
                counters.drop(.resetInTimeWait)
                return
            }
            if seq == rcvNxt {
                enterClosed(.reset)
            } else {
                counters.drop(.resetChallenged)
                sendChallengeAck(now: now, sink: &sink)
            }
            return
        }

        // Fourth check: SYN in a synchronized state (RFC 5961 §4.2): challenge ACK.
        if h.flags.contains(.syn) {
            counters.drop(.synChallenged)
            sendChallengeAck(now: now, sink: &sink)
            return
        }

        // Fifth check: no ACK, drop.
        guard h.flags.contains(.ack) else {
            counters.drop(.missingAck)
            return
        }

        // TS.Recent (RFC 7323 §4.3 (2)): from a segment that covers the
        // last ACK we sent.
        if timestampsOn, let ts = h.options.timestamp, TCPSeq.le(seq, lastAckSent) {
            tsRecent = ts.value
        }

        let ack = h.acknowledgmentNumber
        if state == .synReceived {
            // SYN-RECEIVED: SND.UNA < SEG.ACK =< SND.NXT moves to ESTABLISHED,
            // otherwise <SEQ=SEG.ACK><CTL=RST>.
            guard TCPSeq.lt(sndUna, ack) && TCPSeq.le(ack, sndMax) else {
                counters.drop(.unacceptableAck)
                if let r = h.resetReply(payloadLength: payload.count) {
                    counters.resetsSent += 1
                    emit(r, payload: .empty, sink: &sink)
                }
                return
            }
            sndUna = ack
            sndWnd = Int(h.window) << Int(sndShift)
            maxSndWnd = sndWnd
            sndWl1 = seq
            sndWl2 = ack
            retransmitDeadline = nil
            retransmitCount = 0
            rtt.resetBackoff()
            enterEstablished()
        }

        // ACK acceptability (RFC 5961 §5.2): (SND.UNA - MAX.SND.WND) =<
        // SEG.ACK =< SND.NXT (SND.MAX here: ACKs of data sent before a
        // timeout pulled SND.NXT back are valid).
        let oldestAcceptable = sndUna &- UInt32(truncatingIfNeeded: maxSndWnd)
        if TCPSeq.gt(ack, sndMax) || TCPSeq.lt(ack, oldestAcceptable) {
            counters.drop(.unacceptableAck)
            sendAck(now: now, sink: &sink)
            return
        }
        processAck(h, payloadLength: payload.count, now: now, sink: &sink)
        if state == .closed { return }

        // Seventh check: the data.
        if payload.count > 0 || h.flags.contains(.fin) {
            receiveData(h, payload: payload, now: now)
        }
        output(now: now, sink: &sink)
        if delayedAckDeadline == nil && ackPending { delayedAckDeadline = now + configuration.delayedAckTimeout }
    }

    /// RFC 9293 §3.10.7.4 fifth check: SND.UNA, the send window, the
    /// retransmission timer, congestion control and the FIN's acknowledgment.
    mutating func processAck(_ h: TCPHeader, payloadLength: Int, now: UInt64, sink: inout some TCPSegmentSink) {
        let ack = h.acknowledgmentNumber
        let seq = h.sequenceNumber
        let segWnd = Int(h.window) << Int(sndShift)
        let flight = TCPSeq.distance(sndMax, from: sndUna)

        if TCPSeq.gt(ack, sndUna) {
            let acked = TCPSeq.distance(ack, from: sndUna)
            // Data bytes acknowledged (the FIN's number is not in the ring).
            let dataEnd = sendBase &+ UInt32(truncatingIfNeeded: sendRing.count)
            let dataAcked = TCPSeq.gt(ack, sendBase) ? TCPSeq.distance(TCPSeq.lt(ack, dataEnd) ? ack : dataEnd, from: sendBase) : 0
            sendRing.consume(dataAcked)
            sendBase = sendBase &+ UInt32(truncatingIfNeeded: dataAcked)
            sndUna = ack
            if TCPSeq.lt(sndNxt, sndUna) { sndNxt = sndUna }  // a probe byte or a go-back-N rewind

            // RTT (RFC 6298 §3 with Karn's rule; RFC 7323 §4.1 RTTM with
            // timestamps: TSecr of an ACK that advances SND.UNA).
            if timestampsOn, let ts = h.options.timestamp, ts.echoReply != 0 {
                let nowTS = tsValue(now)
                let ms = nowTS &- ts.echoReply
                if ms < 0x8000_0000 { rtt.sample(UInt64(ms) * 1000) }
            } else if let r = rttSeq, TCPSeq.gt(ack, r) {
                rtt.sample(now - rttStart)
                rttSeq = nil
            }
            retransmitCount = 0
            persistBackoffs = 0

            // Congestion control (RFC 5681 §3, RFC 6582 §3.2 step 5).
            if cc.inRecovery {
                if TCPSeq.ge(ack, cc.recover) {
                    cc.exitRecovery(flightSize: TCPSeq.distance(sndMax, from: sndUna), mss: sendMSS)
                } else {
                    // Partial ACK: retransmit the next hole, deflate.
                    retransmitFirst(now: now, sink: &sink)
                    counters.fastRetransmits += 1
                    cc.partialAck(bytes: acked, mss: sendMSS)
                }
            } else {
                cc.duplicateAcks = 0
                cc.onNewAck(bytes: acked, mss: sendMSS)
            }

            // RFC 6298 §5.2/§5.3: stop the timer when all is acknowledged,
            // otherwise restart it.
            if sndUna == sndMax {
                retransmitDeadline = nil
            } else {
                retransmitDeadline = now + rtt.rto
            }
        } else if ack == sndUna && payloadLength == 0 && !h.flags.contains(.fin)
                    && segWnd == sndWnd && segWnd > 0 && flight > 0 {
            // (A zero window is excluded: the ACKs of zero-window probes
            // repeat SND.UNA but signal no loss.)
            // A duplicate ACK (RFC 5681 §2 definition).
            counters.duplicateAcksReceived += 1
            cc.duplicateAcks += 1
            if cc.inRecovery {
                cc.inflate(mss: sendMSS)  // RFC 5681 §3.2 step 4
            } else if cc.duplicateAcks == 3 && TCPSeq.gt(ack &- 1, cc.recover &- 1) {
                // RFC 6582 §3.2 steps 1-2: fast retransmit and enter recovery.
                cc.enterRecovery(flightSize: flight, mss: sendMSS, highestSent: sndMax)
                retransmitFirst(now: now, sink: &sink)
                counters.fastRetransmits += 1
                retransmitDeadline = now + rtt.rto
            }
        }

        // Send window update (RFC 9293 §3.10.7.4: if SND.WL1 < SEG.SEQ or
        // (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)).
        if TCPSeq.lt(sndWl1, seq) || (sndWl1 == seq && TCPSeq.le(sndWl2, ack)) {
            sndWnd = segWnd
            sndWl1 = seq
            sndWl2 = ack
            maxSndWnd = Swift.max(maxSndWnd, sndWnd)
            if sndWnd > 0 { persistDeadline = nil; persistBackoffs = 0 }
        }

        // Our FIN acknowledged?
        let finAcked = finQueued && TCPSeq.gt(sndUna, finSeq)
        switch state {
        case .finWait1 where finAcked:
            state = .finWait2
            armFinWait2Timeout(now: now)
        case .closing where finAcked:
            startTimeWait(now: now)
        case .lastAck where finAcked:
            enterClosed(.normal)
        default:
            break
        }
    }

    /// RFC 9293 §3.10.7.4 seventh and eighth checks: data into the receive
    /// buffer (in order, or held out of order) and the FIN.
    mutating func receiveData(_ h: TCPHeader, payload: UnsafeRawBufferPointer, now: UInt64) {
        guard state.mayReceive else {
            // CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: the peer's FIN was
            // already received; "ignore the segment text".
            if payload.count > 0 { counters.drop(.dataAfterFin) }
            return
        }
        var seq = h.sequenceNumber
        var data = payload
        var fin = h.flags.contains(.fin)
        if let pf = peerFinSeq, payload.count > 0, TCPSeq.gt(seq &+ UInt32(payload.count), pf) {
            counters.drop(.dataAfterFin)
            return
        }
        // Trim what was already received.
        if TCPSeq.lt(seq, rcvNxt) {
            let skip = Swift.min(TCPSeq.distance(rcvNxt, from: seq), data.count)
            counters.duplicateSegments += 1
            data = UnsafeRawBufferPointer(rebasing: data[skip...])
            seq = seq &+ UInt32(skip)
            if fin && TCPSeq.lt(seq, rcvNxt) { fin = false }  // that FIN was consumed before
        }
        // Trim what does not fit the buffer (the window and the free space).
        let offset = TCPSeq.distance(seq, from: rcvNxt)
        let room = recvRing.free - offset
        if data.count > room {
            data = UnsafeRawBufferPointer(rebasing: data[0..<Swift.max(room, 0)])
            fin = false  // the FIN follows the trimmed bytes
        }
        if fin { peerFinSeq = seq &+ UInt32(data.count) }

        if !data.isEmpty {
            if data.count > rcvMSS { rcvMSS = Swift.min(data.count, configuration.maximumSegmentSize) }
            if offset == 0 {
                recvRing.write(data, at: recvRing.count)
                recvRing.commit(data.count)
                rcvNxt = rcvNxt &+ UInt32(data.count)
                counters.bytesReceived += data.count
                var filled = false
                while let end = reassembly.popContiguous(at: rcvNxt) {
                    let more = TCPSeq.distance(end, from: rcvNxt)
                    recvRing.commit(more)
                    counters.bytesReceived += more
                    rcvNxt = end
                    filled = true
                }
                // An orphan (``close(now:)``) drops what it receives; the
                // window stays open so that the peer can reach its FIN.
                if isOrphaned { recvRing.consume(recvRing.count) }
                ackPending = true
                if data.count >= rcvMSS { fullSegmentsUnacked += 1 }
                // RFC 5681 §4.2: ACK at least every second full-sized
                // segment, and at once when a segment fills (part of) a hole.
                if filled || !reassembly.isEmpty || fullSegmentsUnacked >= 2 { ackNow = true }
            } else {
                // Out of order: keep it and send a duplicate ACK at once
                // (RFC 5681 §4.2, §3.2; RFC 9293 §3.10.7.4).
                if reassembly.insert(seq, seq &+ UInt32(data.count)) {
                    recvRing.write(data, at: recvRing.count + offset)
                    counters.outOfOrderSegments += 1
                } else {
                    counters.drop(.reassemblyRangesFull)
                }
                counters.duplicateAcksSent += 1
                ackNow = true
            }
        } else if offset != 0 || !fin {
            ackNow = true  // a FIN-less empty remainder (already received): re-ACK
        }

        // The FIN, once everything before it is in (eighth check).
        if let pf = peerFinSeq, pf == rcvNxt, !peerFinished {
            rcvNxt = rcvNxt &+ 1
            peerFinished = true
            ackNow = true
            switch state {
            case .established:
                state = .closeWait
            case .finWait1:
                // Our FIN not yet acknowledged (else processAck moved us to FIN-WAIT-2).
                state = .closing
            case .finWait2:
                startTimeWait(now: now)
            default:
                break
            }
        } else if fin && offset != 0 {
            ackNow = true
        }
    }

    /// TIME-WAIT for 2*MSL (RFC 9293 §3.10.7.4; restarted by a retransmitted FIN).
    mutating func startTimeWait(now: UInt64) {
        state = .timeWait
        retransmitDeadline = nil
        persistDeadline = nil
        finWait2Deadline = nil
        timeWaitDeadline = now + 2 * configuration.maximumSegmentLifetime
    }
}
