import Glibc
import SMPPrimitives
import Synchronization
import Testing
import TestSupport
@testable import FastDemux

/// Shared words of one stress round.
private final class StressControl: Sendable {
    let inputsDone = Atomic<Int>(0)
    let stopChurn = Atomic<Bool>(false)
    let offered = Atomic<Int>(0)
    let inputDrops = Atomic<Int>(0)
    let delivered = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
    let churnCloses = Atomic<Int>(0)
    let backlogOverflows = Atomic<Int>(0)
    /// Final TCP sequence number each input sent on its TCP flow, by flow
    /// index (-1 = none). Atomics, not a Mutex: the thread sanitizer cannot
    /// see the contended path of Synchronization.Mutex.
    let tcpFinal: [FinalSlot] = (0..<64).map { _ in FinalSlot() }
    final class FinalSlot: Sendable { let value = Atomic<Int>(-1) }
    let acksEmitted = Atomic<Int>(0)
    let barrier: SpinBarrier
    init(parties: Int) { barrier = SpinBarrier(parties: parties) }
}

/// A stable flow: one input thread sends on it, one socket receives it.
private struct StressFlow: Sendable {
    let key: FlowKey
    let input: Int
    let index: Int
    let tcp: Bool
}

/// Payload written into each packet buffer: which flow and which sequence.
private func writePayload(_ pool: PacketPool, _ p: PacketRef, tag: UInt32, seq: UInt64) {
    let b = pool.buffer(p)
    b.storeBytes(of: seq, toByteOffset: 0, as: UInt64.self)
    b.storeBytes(of: tag, toByteOffset: 8, as: UInt32.self)
    pool.setLength(12, of: p)
}

@Suite("Demux stress", .serialized)
struct DemuxStressTests {
    static let localAddress = IPAddress(ipv4: 0x0a00_0001)
    static let churnPorts: [UInt16] = [7000, 7001, 7002, 7003]

    /// Several input threads (QSBR) deliver into stable sockets and into
    /// ports whose sockets are bound and closed all the time; a reader
    /// drains the stable sockets. Checks conservation (offered = delivered +
    /// dropped by reason + drained at close), per-flow order, payload
    /// integrity, and that every pool buffer comes back. A closed socket
    /// freed too early would be a use-after-free (run under ASan/TSan).
    @Test func inputsWithChurningSockets() throws {
        for (round, inputs) in [2, 3, 4, 2, 3, 4].enumerated() {
            try runRound(round: round, inputs: inputs, packetsPerInput: 6_000)
        }
    }

    func runRound(round: Int, inputs: Int, packetsPerInput: Int) throws {
        let pool = PacketPool(bufferCount: 4096, bufferSize: 64, batchSize: 32)
        let demux = Demux<QSBR>(configuration: .init(queueCapacity: 64, ackPolicy: .delayed(mss: 8), pool: pool))
        let flowsPerInput = 4
        var flows: [StressFlow] = []
        var sockets: [Socket] = []
        for i in 0..<inputs {
            for f in 0..<flowsPerInput {
                let isTCP = f == 0
                let remote = InetEndpoint(IPAddress(ipv4: 0xc000_0200 | UInt32(i + 1)), UInt16(5000 + f))
                let local = InetEndpoint(Self.localAddress, UInt16(1000 + i * 16 + f))
                let s = demux.makeSocket(isTCP ? .tcp : .udp)
                try s.connect(to: remote, from: local, initialReceiveSequence: isTCP ? 0 : nil)
                sockets.append(s)
                flows.append(StressFlow(key: .connected(isTCP ? .tcp : .udp, local: local, remote: remote),
                                        input: i, index: flows.count, tcp: isTCP))
            }
        }
        let control = StressControl(parties: inputs + 2)
        let stableFlows = flows
        let stableSockets = sockets

        // Reader: drains the stable sockets, checks tag and order, frees buffers;
        // also takes the TCP state now and then so the fast path's try-lock fails.
        let reader = PinnedThread(name: "stress-reader") {
            var cache = PacketPool.Cache(pool: pool)
            var last = [UInt64](repeating: 0, count: stableFlows.count)
            control.barrier.wait()
            var spins = 0
            while true {
                let finished = control.inputsDone.load(ordering: .acquiring) == inputs
                var got = 0
                for f in stableFlows {
                    let s = stableSockets[f.index]
                    got += s.receive(upTo: 32) { p in
                        let b = pool.bytes(p)
                        let seq = b.load(fromByteOffset: 0, as: UInt64.self)
                        let tag = b.load(fromByteOffset: 8, as: UInt32.self)
                        if tag != UInt32(f.index) || seq <= last[f.index] { control.errors.add(1, ordering: .relaxed) }
                        last[f.index] = seq
                        cache.free(p)
                    }
                    if f.tcp && (spins & 7) == 0 {
                        s.withTCPState { st in _ = st.nextExpected }
                        s.sendOwedACK(key: f.key) { _ in control.acksEmitted.add(1, ordering: .relaxed) }
                    }
                }
                control.delivered.add(got, ordering: .relaxed)
                if got == 0 {
                    if finished { break }
                    spins &+= 1
                    if spins & 63 == 0 { sched_yield() }
                }
            }
        }

        // Churn: binds and closes sockets on the churn ports while traffic flows.
        let churn = PinnedThread(name: "stress-churn") {
            control.barrier.wait()
            var k = 0
            while !control.stopChurn.load(ordering: .relaxed) {
                let port = Self.churnPorts[k % Self.churnPorts.count]
                let s = demux.makeSocket(.udp, queueCapacity: 16)
                // Alternate specific and wildcard bindings.
                let addr = k & 1 == 0 ? Self.localAddress : .wildcard(.ipv4)
                if (try? s.bind(InetEndpoint(addr, port))) != nil {
                    for _ in 0..<4 { sched_yield() }
                }
                // Blocking and deferred (call_rcu) closes.
                if k % 3 == 2 { s.closeDeferred() } else { s.close() }
                control.churnCloses.add(1, ordering: .relaxed)
                k += 1
            }
        }

        let inputThreads = (0..<inputs).map { i in
            PinnedThread(name: "stress-input") {
                QSBR.registerThread()
                let input = demux.makeInput(ackSink: { acks in control.acksEmitted.add(acks.count, ordering: .relaxed) })
                var cache = PacketPool.Cache(pool: pool)
                let mine = stableFlows.filter { $0.input == i }
                var seqs = [UInt64](repeating: 0, count: mine.count)
                var tcpSeq: UInt32 = 0
                var sent = 0
                var drops = 0
                control.barrier.wait()
                // At least `packetsPerInput`, and on until the churn thread has
                // closed a few sockets under traffic (bounded at 20x).
                func more() -> Bool {
                    sent < packetsPerInput
                        || (control.churnCloses.load(ordering: .relaxed) < 8 && sent < 20 * packetsPerInput)
                }
                while more() {
                    input.burst { b in
                        for _ in 0..<16 {
                            guard let p = cache.allocate() else { return }
                            sent += 1
                            let verdict: DemuxVerdict
                            if sent % 8 == 0 {
                                let port = Self.churnPorts[sent % Self.churnPorts.count]
                                let key = FlowKey(transport: .udp, source: IPAddress(ipv4: 0xc633_6401), sourcePort: 9,
                                                  destination: Self.localAddress, destinationPort: port)
                                writePayload(pool, p, tag: .max, seq: 0)
                                verdict = b.deliver(p, key: key)
                            } else {
                                let j = sent % mine.count
                                let f = mine[j]
                                seqs[j] += 1
                                writePayload(pool, p, tag: UInt32(f.index), seq: seqs[j])
                                if f.tcp {
                                    let seg = TCPSegmentInfo(sequenceNumber: tcpSeq, acknowledgmentNumber: 0,
                                                             flags: sent % 3 == 0 ? [.ack, .psh] : .ack, window: 100)
                                    verdict = b.deliver(p, key: f.key, tcp: seg, payloadLength: 8)
                                    if verdict == .queued { tcpSeq &+= 8 }
                                } else {
                                    verdict = b.deliver(p, key: f.key)
                                }
                            }
                            if verdict != .queued {
                                drops += 1
                                cache.free(p)
                            }
                        }
                    }
                    input.quiescent()
                    if sent % 128 == 0 { sched_yield() }
                }
                let st = input.stats
                if st.offered != sent || st.drops.total != drops || st.enqueued + drops != sent {
                    control.errors.add(1, ordering: .relaxed)
                }
                control.offered.add(sent, ordering: .relaxed)
                control.backlogOverflows.add(st.tcpBacklogOverflows, ordering: .relaxed)
                if let f = mine.first(where: { $0.tcp }) {
                    control.tcpFinal[f.index].value.store(Int(tcpSeq), ordering: .relaxed)
                }
                control.inputDrops.add(drops, ordering: .relaxed)
                QSBR.unregisterThread()
                _ = consume cache
                control.inputsDone.add(1, ordering: .releasing)
            }
        }
        for t in inputThreads { t.join() }
        control.stopChurn.store(true, ordering: .relaxed)
        churn.join()
        reader.join()
        // Every queued TCP segment went through the receive state, directly
        // or via the backlog, in order: the state is exactly at the end.
        if control.backlogOverflows.load(ordering: .relaxed) == 0 {
            for (index, slot) in control.tcpFinal.enumerated() where slot.value.load(ordering: .relaxed) >= 0 {
                let final = UInt32(slot.value.load(ordering: .relaxed))
                let st = sockets[index].withTCPState { ($0.nextExpected, $0.outOfSequence) }
                #expect(st.0 == final && st.1 == 0, "round \(round): TCP flow \(index)")
            }
        }
        demux.table.close(sockets)
        demux.barrier()   // deferred closes have finished their teardown

        let offered = control.offered.load(ordering: .relaxed)
        let delivered = control.delivered.load(ordering: .relaxed)
        let drops = control.inputDrops.load(ordering: .relaxed)
        let drained = demux.table.packetsDrainedAtTeardown
        #expect(control.errors.load(ordering: .relaxed) == 0, "round \(round)")
        #expect(offered >= inputs * packetsPerInput)
        #expect(offered == delivered + drops + drained, "round \(round): \(offered) != \(delivered) + \(drops) + \(drained)")
        #expect(pool.globalFreeCount == pool.bufferCount, "round \(round): buffers lost")
        #expect(control.churnCloses.load(ordering: .relaxed) > 0)
        #expect(demux.table.connectedCount == 0 && demux.table.boundCount == 0)
    }
}
