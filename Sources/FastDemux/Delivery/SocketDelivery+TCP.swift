import Synchronization
import SMPPrimitives

// The TCP step of the delivery: the connection's receive state and the
// immediate ACK, decided on the delivering thread.
extension SocketDelivery {
    /// In-sequence bookkeeping and the immediate ACK for a segment just
    /// queued on `s`.
    ///
    /// With ``TCPSerialization/socketTryLock`` (the fast path) the state is
    /// taken with a try-lock; if another thread holds it, the segment goes
    /// to the socket's backlog and is announced in the lock word, so the
    /// holder processes it before releasing (the input never waits). With
    /// ``TCPSerialization/caller`` the caller's lock or ownership already
    /// serializes the connection. Either way a due ACK is recorded as sent
    /// and handed to the sink at the next flush.
    @inlinable
    @inline(__always)
    mutating func tcpInput(_ s: Socket, key: FlowKey, segment seg: TCPSegmentInfo, payloadLength: Int,
                           serialization: TCPSerialization, counting: Bool) {
        guard s.stateWord.load(ordering: .relaxed) == SocketState.connected.rawValue else { return }
        var inSequence = true
        var ack: UInt32?
        switch serialization {
        case .caller:
            let r = s.tcpState.receive(seg, payloadLength: payloadLength, policy: s.ackPolicy)
            inSequence = r.inSequence
            if r.ackNow {
                s.tcpState.didSendAck()
                ack = s.tcpState.nextExpected
            }
        case .socketTryLock:
            // Each RMW is counted where it is issued: the try-lock's CAS only
            // when its pre-check found the lock free, every release CAS and
            // backlog subtract, the backlog put's own RMWs. Without
            // `counting` the locals are dead and optimized away.
            var rmws = 0
            if s.tcpLock.tryLock(countingRMWs: &rmws) {
                if counting { stats.sync.lockAcquisitions &+= 1 }
                let r = s.tcpState.receive(seg, payloadLength: payloadLength, policy: s.ackPolicy)
                inSequence = r.inSequence
                ack = s.releaseTCPLock(ackDue: r.ackNow, sendNow: true, countingRMWs: &rmws)
            } else {
                if counting { stats.sync.contendedAcquisitions &+= 1 }
                var puts = PCQPutCounts()
                let queued = s.tcpBacklog.put(Socket.backlogWord(seg, payloadLength: payloadLength), counting: &puts)
                rmws &+= puts.atomicRMWs
                guard queued else {
                    stats.tcpBacklogOverflows &+= 1
                    if counting { stats.sync.atomicRMWs &+= rmws }
                    return
                }
                // Announce it in the lock word: the holder cannot release
                // before it has processed it. If the holder released just
                // before, take the lock ourselves and process the backlog.
                rmws &+= 1    // the announcement's add
                if s.tcpLock.announceBacklogged() && s.tcpLock.tryLock(countingRMWs: &rmws) {
                    if counting { stats.sync.lockAcquisitions &+= 1 }
                    ack = s.releaseTCPLock(ackDue: false, sendNow: true, countingRMWs: &rmws)
                } else {
                    stats.deferredACKs &+= 1
                }
            }
            if counting { stats.sync.atomicRMWs &+= rmws }
        }
        if !inSequence { stats.outOfSequence &+= 1 }
        if let ack {
            stats.immediateACKs &+= 1
            if ackCount == capacity { flushACKs() }
            acks[ackCount] = TCPAck(key: key, ackNumber: ack, duplicate: !inSequence)
            ackCount &+= 1
        }
    }
}
