import SMPPrimitives
import Synchronization
import Testing
import TestSupport
@testable import FastDemux

/// The delivery step shared by the fast path and every organization, driven
/// directly (as an organization does, holding its own references).
@Suite("Socket delivery step")
struct SocketDeliveryTests {
    let key = packetKey(.tcp, from: "192.0.2.1", 4000, to: "10.0.0.1", 80)

    func connectedSocket(_ demux: Demux<Memb>, readySet: SocketReadySet) throws -> Socket {
        let s = demux.makeSocket(.tcp)
        readySet.add(s)
        try s.connect(to: InetEndpoint(v4("192.0.2.1"), 4000), from: InetEndpoint(v4("10.0.0.1"), 80),
                      initialReceiveSequence: 1000)
        return s
    }

    func packet(_ word: UInt, seq: UInt32, _ flags: TCPFlags = [.ack, .psh]) -> DemuxPacket {
        DemuxPacket(packet: PacketRef(word: word), key: key,
                    tcp: TCPSegmentInfo(sequenceNumber: seq, acknowledgmentNumber: 0, flags: flags, window: 1000),
                    payloadLength: 100)
    }

    @Test func callerSerializedDeliveryQueuesAcksAndPublishes() throws {
        let demux = Demux<Memb>()
        let readySet = SocketReadySet(capacity: 4)
        let s = try connectedSocket(demux, readySet: readySet)
        let acks = Mutex<[TCPAck]>([])
        var d = SocketDelivery(depthSampleInterval: 1, capacity: 8,
                               ackSink: { b in acks.withLock { $0.append(contentsOf: b) } })
        let ref = SocketReference(unretained: s)
        #expect(d.deliver(packet(1, seq: 1000), to: ref, tcp: .caller, counting: true) == .queued)
        #expect(d.deliver(packet(2, seq: 1100), to: ref, tcp: .caller, counting: true) == .queued)
        #expect(d.deliver(packet(3, seq: 5000), to: ref, tcp: .caller, counting: true) == .queued)  // out of sequence
        #expect(d.deliver(packet(4, seq: 1200), to: nil, tcp: .caller, counting: true) == .dropped(.noSocket))
        // Nothing published before the flush.
        #expect(acks.withLock { $0.isEmpty })
        #expect(readySet.takeReady { _ in } == 0)
        d.flush(counting: true)
        #expect(acks.withLock { $0 } == [
            TCPAck(key: key, ackNumber: 1100, duplicate: false),
            TCPAck(key: key, ackNumber: 1200, duplicate: false),
            TCPAck(key: key, ackNumber: 1200, duplicate: true),
        ])
        var ready: [Int] = []
        #expect(readySet.takeReady { ready.append($0) } == 1)
        let st = d.stats
        #expect(st.offered == 4 && st.enqueued == 3 && st.drops[.noSocket] == 1)
        #expect(st.immediateACKs == 3 && st.outOfSequence == 1)
        #expect(st.socketQueue.queueOps == 3 && st.socketQueue.batchSizes[Log2Histogram.bucket(for: 3)] == 1)
        #expect(st.socketQueue.depth.total == 3)
        // The caller serialized the connection: no TCP lock taken.
        #expect(st.sync.lockAcquisitions == 0 && st.sync.contendedAcquisitions == 0)
        #expect(s.counters.acksSent == 3 && s.counters.queued == 3)
        s.close()
    }

    /// The fast path's try-lock and an organization's own serialization run
    /// the same receive state: the same ACKs for the same segments.
    @Test func bothSerializationsDecideTheSameAcks() throws {
        let demux = Demux<Memb>()
        let readySet = SocketReadySet(capacity: 4)
        var decided: [[UInt32]] = []
        for serialization in [TCPSerialization.socketTryLock, .caller] {
            let s = try connectedSocket(demux, readySet: readySet)
            let acks = Mutex<[UInt32]>([])
            var d = SocketDelivery(depthSampleInterval: 0, capacity: 2,
                                   ackSink: { b in acks.withLock { $0.append(contentsOf: b.map(\.ackNumber)) } })
            let ref = SocketReference(unretained: s)
            for (i, seq) in [1000, 1100, 1200, 900, 1300].enumerated() {
                let flags: TCPFlags = i == 1 ? .ack : [.ack, .psh]
                d.deliver(packet(UInt(i + 1), seq: UInt32(seq), flags), to: ref, tcp: serialization, counting: false)
            }
            d.flush(counting: false)
            // Counting off: the outcome counters only.
            #expect(d.stats.enqueued == 5 && d.stats.sync.atomicRMWs == 0 && d.stats.socketQueue.queueOps == 0)
            decided.append(acks.withLock { $0 })
            s.close()
        }
        #expect(decided[0] == decided[1])
        #expect(decided[0] == [1100, 1300, 1300, 1400])
    }

    @Test func closedSocketsAreRefused() throws {
        let demux = Demux<Memb>()
        let readySet = SocketReadySet(capacity: 4)
        let s = try connectedSocket(demux, readySet: readySet)
        s.close()
        var d = SocketDelivery(depthSampleInterval: 0, capacity: 4)
        #expect(d.deliver(packet(1, seq: 1000), to: SocketReference(unretained: s), tcp: .caller, counting: true)
                    == .dropped(.socketClosed))
        d.flush(counting: true)
        #expect(d.stats.drops[.socketClosed] == 1 && s.counters.droppedClosed == 1)
        #expect(readySet.takeReady { _ in } == 0)
    }

    @Test func socketReferenceRoundTrips() {
        let demux = Demux<Memb>()
        let s = demux.makeSocket(.udp)
        let r = SocketReference(unretained: s)
        #expect(SocketReference(bits: r.bits) == r)
        #expect(r.withSocket { $0.id } == s.id)
        #expect(r.socket === s)
    }
}
