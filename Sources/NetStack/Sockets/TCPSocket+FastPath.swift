import FastDemux

// The NetBSD "Fast protocol and port demultiplexing" proposal's TCP step:
// after the input path has put a segment on the socket's PCQ and scheduled
// the socket's continuation, "if TCP and in sequence, then if we need to
// send an immediate ACK: try to lock the socket; if successful, send an
// ACK". Here the socket lock is the engine's busy flag (`isRunning`), and
// "send an ACK" is the engine's own receive processing of what is queued,
// which sends the ACKs RFC 5681 §4.2 makes immediate (every second
// full-sized segment, a duplicate ACK for a hole or the ACK that fills
// one, RFC 1122 §4.2.3.2) and lets ACK-clocked data go out; the delayed
// ACK, the readiness handler (the reader's wake-up) and the application's
// output are the continuation's deferred work.
//
// Why a flag and not an atomic: the stack's cores are flow-affine (the
// input path hands every packet to its flow's owner core before the
// lookup, and a connection's socket lives on that core), so the input path
// and the socket's continuation run on one thread and never at the same
// time. The try-lock fails only if the input path ran inside a run of the
// engine; the segment then stays queued and the holder, which drains the
// queue until it is empty, takes it before it releases (Linux's
// sock_owned_by_user backlog, processed by release_sock). Such failures
// are counted (``StackStatistics/tcpTryLockFailures``), not assumed away.

extension TCPSocket {
    /// Stores the socket in its demux socket's stack word (tagged, see
    /// ``StackCore/tcpEngineTag``) so that the input path finds the engine
    /// after its lookup. Before the PCB entry is inserted: the insert
    /// releases, the input core's lookup acquires, so the engine it then
    /// reaches is the one stored here.
    func publishEngine() {
        let bits = UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())
        socket.stackWord.store(bits | StackCore.tcpEngineTag, ordering: .releasing)
    }

    /// Clears the stack word (the socket is finishing, on its core: the
    /// only core whose input path reads the word, so no later lookup there
    /// reaches a freed socket).
    func withdrawEngine() {
        socket.stackWord.store(0, ordering: .relaxed)
    }

    /// The input path's step for a segment it just queued: runs the queued
    /// segments through the engine now, unless the engine is in use.
    /// On core ``core``'s executor, in the input's read section.
    func inputFastPath(core c: StackCore) {
        guard !finished else { return }
        guard !isRunning else {
            c.stats.tcpTryLockFailures &+= 1
            return
        }
        isRunning = true
        defer { isRunning = false }
        let now = tcpNow()
        var sink = StackTCPSink(core: c)
        let acksBefore = connection.counters.pureAcksSent
        var segments = 0
        while let p = socket.tryReceive() {
            if let seg = ArrivedSegment(stack.buffers.bytes(p)) {
                connection.receive(seg.header, payload: seg.payload, now: now, sink: &sink)
            }
            c.release(p)
            segments &+= 1
        }
        c.stats.tcpInputPathRuns &+= 1
        c.stats.tcpInputPathSegments &+= segments
        c.stats.tcpImmediateAcks &+= connection.counters.pureAcksSent &- acksBefore
    }
}
