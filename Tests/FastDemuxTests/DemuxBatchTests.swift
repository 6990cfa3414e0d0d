import SMPPrimitives
import Synchronization
import Testing
import TestSupport
@testable import FastDemux

/// The batch path groups a chunk's packets per socket (one batch put, one
/// readiness entry, one TCP try-lock per socket): the outcome per packet
/// and per socket must be the per-packet path's.
@Suite struct DemuxBatchTests {
    /// ACKs handed to a sink, by connection (the order between connections
    /// may differ between the paths; per connection it may not).
    final class ACKLog: Sendable {
        let acks = Mutex<[FlowKey: [TCPAck]]>([:])
        func append(_ b: UnsafeBufferPointer<TCPAck>) {
            acks.withLock { for a in b { $0[a.key, default: []].append(a) } }
        }
    }

    struct World {
        let demux: Demux<Memb>
        let sockets: [Socket]
        let log = ACKLog()
    }

    static let udpKeys = [
        packetKey(.udp, from: "192.0.2.1", 9, to: "10.0.0.1", 1),
        packetKey(.udp, from: "192.0.2.1", 9, to: "10.0.0.1", 2),
        packetKey(.udp, from: "192.0.2.1", 9, to: "10.0.0.7", 3),   // wildcard-bound
    ]
    static let tcpKeys = [
        packetKey(.tcp, from: "192.0.2.5", 4000, to: "10.0.0.1", 80),
        packetKey(.tcp, from: "192.0.2.6", 4001, to: "10.0.0.1", 80),
    ]
    static let noSocketKey = packetKey(.udp, from: "192.0.2.1", 9, to: "10.0.0.1", 99)

    func makeWorld() throws -> World {
        let demux = Demux<Memb>(configuration: .init(queueCapacity: 64, ackPolicy: .delayed(mss: 8)))
        let a = demux.makeSocket(.udp, queueCapacity: 3)   // fills: a partial batch put
        try a.bind(InetEndpoint(v4("10.0.0.1"), 1))
        let b = demux.makeSocket(.udp)
        try b.bind(InetEndpoint(v4("10.0.0.1"), 2))
        let w = demux.makeSocket(.udp, queueCapacity: 5)
        try w.bind(InetEndpoint(.wildcard(.ipv4), 3))
        var sockets = [a, b, w]
        for (i, k) in Self.tcpKeys.enumerated() {
            let t = demux.makeSocket(.tcp, queueCapacity: i == 0 ? 64 : 6)
            try t.connect(to: InetEndpoint(k.source, k.sourcePort), from: InetEndpoint(k.destination, k.destinationPort),
                          initialReceiveSequence: 1000)
            sockets.append(t)
        }
        return World(demux: demux, sockets: sockets)
    }

    /// A deterministic mix: every socket interleaved with the others, TCP
    /// segments in sequence (one out of sequence, some with PSH), one
    /// packet for no socket.
    func traffic() -> [DemuxPacket] {
        var rng = SplitMix64(seed: 7)
        var tcpSeq: [UInt32] = [1000, 1000]
        var tcpCount = 0
        var out: [DemuxPacket] = []
        for i in 0..<60 {
            let word = PacketRef(word: UInt(i + 1))
            let r = Int(rng.next() % 6)
            switch r {
            case 0, 1, 2:
                out.append(DemuxPacket(packet: word, key: Self.udpKeys[r], payloadLength: 10))
            case 3, 4:
                let c = r - 3
                var seq = tcpSeq[c]
                tcpCount += 1
                if tcpCount == 5 { seq &+= 500 }   // out of sequence: a duplicate ACK
                else { tcpSeq[c] &+= 8 }
                let flags: TCPFlags = rng.next() % 4 == 0 ? [.ack, .psh] : .ack
                let seg = TCPSegmentInfo(sequenceNumber: seq, acknowledgmentNumber: 0, flags: flags, window: 100)
                out.append(DemuxPacket(packet: word, key: Self.tcpKeys[c], tcp: seg, payloadLength: 8))
            default:
                out.append(DemuxPacket(packet: word, key: Self.noSocketKey))
            }
        }
        return out
    }

    @Test func groupedBatchMatchesPerPacketDelivery() throws {
        let packets = traffic()
        let single = try makeWorld(), grouped = try makeWorld()

        let singleInput = single.demux.makeInput(ackSink: { single.log.append($0) })
        var singleDrops: [(Int, DemuxDropReason)] = []
        Memb.withRegisteredThread {
            // Two bursts of 30, as the batch's chunks are at most 64.
            for half in [0..<30, 30..<60] {
                singleInput.burst { b in
                    for i in half {
                        let p = packets[i]
                        if case .dropped(let r) = b.deliver(p.packet, key: p.key, tcp: p.tcp, payloadLength: p.payloadLength) {
                            singleDrops.append((i, r))
                        }
                    }
                }
            }
        }
        let groupedInput = grouped.demux.makeInput(ackSink: { grouped.log.append($0) })
        var groupedDrops: [(Int, DemuxDropReason)] = []
        Memb.withRegisteredThread {
            for half in [0..<30, 30..<60] {
                groupedInput.burst { b in
                    packets.withUnsafeBufferPointer { all in
                        b.deliver(batch: UnsafeBufferPointer(rebasing: all[half])) { groupedDrops.append((half.lowerBound + $0, $1)) }
                    }
                }
            }
        }

        // The same drops, reported in arrival order, for the same reasons.
        #expect(groupedDrops.map(\.0) == singleDrops.map(\.0))
        #expect(groupedDrops.map(\.1) == singleDrops.map(\.1))
        #expect(singleDrops.contains { $0.1 == .queueFull } && singleDrops.contains { $0.1 == .noSocket })
        // The same packets on every socket, in the same order.
        for (s, g) in zip(single.sockets, grouped.sockets) {
            var a: [UInt] = [], b: [UInt] = []
            s.receive(upTo: 100) { a.append($0.word) }
            g.receive(upTo: 100) { b.append($0.word) }
            #expect(a == b)
            #expect(s.counters.droppedQueueFull == g.counters.droppedQueueFull)
        }
        for (s, g) in zip(single.sockets[3...], grouped.sockets[3...]) {
            #expect(s.withTCPState { $0.nextExpected } == g.withTCPState { $0.nextExpected })
        }
        // The same ACKs per connection.
        #expect(single.log.acks.withLock { $0 } == grouped.log.acks.withLock { $0 })
        let ss = singleInput.stats, gs = groupedInput.stats
        #expect(ss.offered == 60 && gs.offered == 60)
        #expect(ss.enqueued == gs.enqueued && ss.drops == gs.drops)
        #expect(ss.immediateACKs == gs.immediateACKs && ss.immediateACKs > 0)
        #expect(ss.outOfSequence == gs.outOfSequence && ss.outOfSequence >= 1)
        // The amortization: one queue reservation per socket per burst, one
        // TCP try-lock per connection per burst.
        #expect(gs.socketQueue.queueOps <= 2 * 5 && ss.socketQueue.queueOps == ss.offered - ss.drops[.noSocket])
        #expect(gs.sync.lockAcquisitions <= 2 * 2 && ss.sync.lockAcquisitions > 4)
        #expect(gs.sync.atomicRMWs < ss.sync.atomicRMWs)
        single.demux.table.close(single.sockets)
        grouped.demux.table.close(grouped.sockets)
    }

    /// One socket, a run that overflows its queue inside one group: the
    /// batch put takes exactly the free slots; the rest is counted dropped
    /// (queue_full) once, per packet, and reported per packet.
    @Test func groupOverflowingTheQueueTakesExactlyTheFreeSlots() throws {
        let demux = Demux<Memb>()
        let s = demux.makeSocket(.udp, queueCapacity: 5)
        try s.bind(InetEndpoint(v4("10.0.0.1"), 1))
        let key = Self.udpKeys[0]
        #expect(deliverBurst(demux, key: key, words: [1, 2]).stats.enqueued == 2)
        let batch = (10..<20).map { DemuxPacket(packet: PacketRef(word: UInt($0)), key: key) }
        let input = demux.makeInput()
        var dropped: [Int] = []
        Memb.withRegisteredThread {
            input.burst { b in batch.withUnsafeBufferPointer { b.deliver(batch: $0) { i, r in
                #expect(r == .queueFull)
                dropped.append(i)
            } } }
        }
        #expect(dropped == Array(3..<10))
        #expect(input.stats.enqueued == 3 && input.stats.drops[.queueFull] == 7)
        #expect(input.stats.socketQueue.queueOps == 1)
        #expect(input.stats.socketQueue.batchSizes.total == 1)
        #expect(s.counters.droppedQueueFull == 7 && s.queue.statistics.failedPuts == 7)
        var got: [UInt] = []
        s.receive(upTo: 10) { got.append($0.word) }
        #expect(got == [1, 2, 10, 11, 12])
        s.close()
    }
}
