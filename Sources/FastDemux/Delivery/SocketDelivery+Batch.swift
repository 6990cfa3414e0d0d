import Synchronization
import SMPPrimitives

// The grouped delivery step: the packets of one burst that go to the same
// socket are handed over together, with one reservation on the socket's
// queue, one closed check, one hand-off classification, one readiness run
// and (TCP) one try-lock, instead of one of each per packet. Robert
// Watson's argument in "Network Stack Locking" (2004): amortize the
// hand-offs between threads over batches of work.
extension SocketDelivery {
    /// Why each packet of a grouped delivery was not queued: 0 queued,
    /// otherwise the `DemuxDropReason` raw value plus one.
    @inlinable
    static func verdictCode(_ reason: DemuxDropReason) -> UInt8 { UInt8(truncatingIfNeeded: reason.rawValue &+ 1) }

    /// Delivers the `count` packets `batch[order[0]], batch[order[1]], ...`
    /// (in arrival order), all of which the lookup resolved to `ref`, as
    /// one group. Counts them as offered. Writes the verdict code of every
    /// packet of the group into `verdicts[order[j]]` (see ``verdictCode(_:)``).
    /// `words` is scratch space for `count` packet words.
    ///
    /// The same outcome per packet as ``deliver(_:to:tcp:counting:)`` for
    /// each in order, except where one socket's packets are interleaved
    /// with other sockets' (only the order between sockets changes, never
    /// a socket's own order), and with the costs amortized: one relaxed
    /// state load, one `PCQ.put(contentsOf:)` (one ticket CAS), on a
    /// nearly full queue one drop-counter add for the rest, one hand-off
    /// classification and depth sample, one readiness entry, and for TCP
    /// one try-lock and release for the group's segments. No allocation,
    /// no retain.
    ///
    /// Statistics: `socketQueue.queueOps` and the cross-core hand-off count
    /// gain one per group (a group is one publication to the socket's
    /// reader, whatever its length); enqueued, offered and drops count
    /// packets.
    @inlinable
    package mutating func deliverGroup(_ batch: UnsafeBufferPointer<DemuxPacket>, order: UnsafePointer<Int32>,
                                       count k: Int, to ref: SocketReference,
                                       words: UnsafeMutablePointer<PacketRef>,
                                       verdicts: UnsafeMutablePointer<UInt8>, counting: Bool) {
        stats.offered &+= k
        ref.withSocket { s in
            // As `enqueue`: the state word is read relaxed, a racing close is
            // caught by the teardown drain.
            if s.stateWord.load(ordering: .relaxed) == SocketState.closed.rawValue {
                stats.drops.record(.socketClosed, count: k)
                s.droppedClosedCount.add(k, ordering: .relaxed)
                if counting { stats.sync.atomicRMWs &+= 1 }
                for j in 0..<k { verdicts[Int(order[j])] = Self.verdictCode(.socketClosed) }
                return
            }
            for j in 0..<k {
                words[j] = batch[Int(order[j])].packet
                verdicts[Int(order[j])] = 0
            }
            let run = UnsafeBufferPointer(start: words, count: k)
            let accepted: Int
            if counting {
                stats.socketQueue.queueOps &+= 1
                var puts = PCQPutCounts()
                accepted = s.queue.put(contentsOf: run, counting: &puts)
                stats.sync.add(puts)
            } else {
                accepted = s.queue.put(contentsOf: run)
            }
            if accepted < k {
                // The queue took a prefix: the rest is dropped, in one add.
                stats.drops.record(.queueFull, count: k &- accepted)
                s.droppedQueueFullCount.add(k &- accepted, ordering: .relaxed)
                if counting { stats.sync.atomicRMWs &+= 1 }
                for j in accepted..<k { verdicts[Int(order[j])] = Self.verdictCode(.queueFull) }
                if accepted == 0 { return }
            }
            stats.enqueued &+= accepted
            if counting {
                if touchedCount == 0 { handoffCPU.sample() }
                handoffCPU.classify(consumerCPU: s.observedReaderCPU.cpu, into: &stats.sync)
                if depthSampler.isDue() { stats.socketQueue.recordDepth(s.queue.approximateCount) }
            }
            remember(ref, runLength: accepted, counting: counting)
            if s.proto == .tcp {
                tcpInputGroup(s, batch, order: order, count: accepted, counting: counting)
            }
        }
    }

    /// The TCP step for the `count` segments of a group just queued on `s`:
    /// one try-lock for all of them, each segment through the receive state
    /// in order, each due ACK recorded as the per-packet path would, one
    /// release (which first processes segments other inputs backlogged
    /// meanwhile). If the lock is held elsewhere, each segment takes the
    /// per-packet path (backlog and announcement).
    @inlinable
    mutating func tcpInputGroup(_ s: Socket, _ batch: UnsafeBufferPointer<DemuxPacket>, order: UnsafePointer<Int32>,
                                count k: Int, counting: Bool) {
        guard s.stateWord.load(ordering: .relaxed) == SocketState.connected.rawValue else { return }
        // The per-packet path takes the lock only for a packet with a TCP
        // header; so does the group.
        var firstSegment = 0
        while firstSegment < k && batch[Int(order[firstSegment])].tcp == nil { firstSegment &+= 1 }
        if firstSegment == k { return }
        var rmws = 0
        guard s.tcpLock.tryLock(countingRMWs: &rmws) else {
            if counting { stats.sync.atomicRMWs &+= rmws }
            for j in firstSegment..<k {
                let p = batch[Int(order[j])]
                if let seg = p.tcp {
                    tcpInput(s, key: p.key, segment: seg, payloadLength: p.payloadLength,
                             serialization: .socketTryLock, counting: counting)
                }
            }
            return
        }
        if counting { stats.sync.lockAcquisitions &+= 1 }
        var lastKey = batch[Int(order[firstSegment])].key
        for j in firstSegment..<k {
            let p = batch[Int(order[j])]
            guard let seg = p.tcp else { continue }
            lastKey = p.key
            let r = s.tcpState.receive(seg, payloadLength: p.payloadLength, policy: s.ackPolicy)
            if !r.inSequence { stats.outOfSequence &+= 1 }
            if r.ackNow {
                s.tcpState.didSendAck()
                recordACK(key: p.key, ackNumber: s.tcpState.nextExpected, duplicate: !r.inSequence)
            }
        }
        // Segments backlogged by other inputs while we held the lock are
        // processed by the release; an ACK they make due is sent from here.
        if let ack = s.releaseTCPLock(ackDue: false, sendNow: true, countingRMWs: &rmws) {
            recordACK(key: lastKey, ackNumber: ack, duplicate: false)
        }
        if counting { stats.sync.atomicRMWs &+= rmws }
    }
}
