import Synchronization
import SMPPrimitives

// The TCP side of a socket: the lock word with its backlog (Linux's "owned
// socket + backlog"), ACKs owed to the worker, and the control-path access
// to the receive state. The fast path's use of it is the delivery step's TCP
// immediate-ACK step (`SocketDelivery+TCP.swift`).
extension Socket {
    /// Packs a segment for the backlog: sequence, payload length (≤ 65535)
    /// and flags in one word.
    @inlinable
    static func backlogWord(_ seg: TCPSegmentInfo, payloadLength: Int) -> UInt {
        UInt(seg.sequenceNumber) << 32 | UInt(min(payloadLength, 0xffff)) << 16 | UInt(seg.flags.rawValue)
    }

    /// Under `tcpLock`: runs the announced backlogged segments through the
    /// receive state; returns true if one of them wants an ACK now.
    @inlinable
    func processBacklogLocked() -> Bool {
        var unused = 0
        return processBacklogLocked(countingRMWs: &unused)
    }

    /// ``processBacklogLocked()``, adding its atomic RMWs to `rmws` (the
    /// backlog count's subtract; the drain itself issues none).
    @inlinable
    func processBacklogLocked(countingRMWs rmws: inout Int) -> Bool {
        let announced = tcpLock.backlogged
        guard announced > 0 else { return false }
        var due = false
        // Only announced segments: their puts happen-before the announcement.
        let n = tcpBacklog.drain(max: announced) { w in
            let seg = TCPSegmentInfo(sequenceNumber: UInt32(truncatingIfNeeded: w >> 32), acknowledgmentNumber: 0,
                                     flags: TCPFlags(rawValue: UInt16(truncatingIfNeeded: w)), window: 0)
            if tcpState.receive(seg, payloadLength: Int((w >> 16) & 0xffff), policy: ackPolicy).ackNow { due = true }
        }
        rmws &+= tcpLock.consumedBacklogged(n)
        return due
    }

    /// Releases `tcpLock`, first processing every segment announced in the
    /// backlog (the release CAS fails while any is announced). `ackDue` says
    /// an ACK is already due. With `sendNow`, a due ACK is recorded as sent
    /// and its number returned; otherwise it is left to the worker
    /// (`ackOwed`).
    @inlinable
    func releaseTCPLock(ackDue: Bool, sendNow: Bool) -> UInt32? {
        var unused = 0
        return releaseTCPLock(ackDue: ackDue, sendNow: sendNow, countingRMWs: &unused)
    }

    /// ``releaseTCPLock(ackDue:sendNow:)``, adding to `rmws` every atomic
    /// RMW it issues: each release CAS attempt (one more per round that
    /// found a segment announced meanwhile) and each backlog subtract.
    @inlinable
    func releaseTCPLock(ackDue: Bool, sendNow: Bool, countingRMWs rmws: inout Int) -> UInt32? {
        var due = ackDue
        var ack: UInt32?
        while true {
            if processBacklogLocked(countingRMWs: &rmws) { due = true }
            if due {
                if sendNow {
                    tcpState.didSendAck()
                    ack = tcpState.nextExpected
                } else {
                    ackOwed.store(true, ordering: .relaxed)
                }
                due = false
            }
            rmws &+= 1
            if tcpLock.tryUnlock() { return ack }
            spinLoopHint()   // an announced segment may still be on its way into the queue
        }
    }

    /// Sends the ACK the fast path left to the worker (its try-lock failed
    /// and the lock holder could not send), through `emit`. Returns true if
    /// an ACK was sent. Any thread (takes the TCP lock, spinning briefly).
    @discardableResult
    public func sendOwedACK(key: FlowKey, _ emit: (TCPAck) -> Void) -> Bool {
        guard proto == .tcp else { return false }
        let owed = ackOwed.load(ordering: .relaxed) && ackOwed.exchange(false, ordering: .acquiring)
        guard owed || tcpLock.backlogged > 0 else { return false }
        tcpLock.lock()
        let due = processBacklogLocked() || owed
        if let ack = releaseTCPLock(ackDue: due, sendNow: true) {
            emit(TCPAck(key: key, ackNumber: ack, duplicate: false))
            return true
        }
        return false
    }

    /// Runs `body` on the TCP receive state under the TCP lock (tests,
    /// worker). Spins while an input thread holds it (a few instructions).
    /// Segments backlogged meanwhile are processed on release; an ACK they
    /// need is left to the worker (``owesACK``).
    @discardableResult
    public func withTCPState<R>(_ body: (inout TCPReceiveState) throws -> R) rethrows -> R {
        tcpLock.lock()
        defer {
            _ = releaseTCPLock(ackDue: false, sendNow: false)
            if ackOwed.load(ordering: .relaxed) { scheduleWorkerNow() }
        }
        return try body(&tcpState)
    }

    /// Schedules the worker without delay (control path).
    func scheduleWorkerNow() {
        guard let worker else { return }
        workerScheduled.store(true, ordering: .relaxed)
        worker._withUnsafeGuaranteedRef { _ = $0.schedule() }
    }

    /// Whether the fast path left an ACK to the worker.
    public var owesACK: Bool { ackOwed.load(ordering: .relaxed) }
}
