import Glibc
import SMPPrimitives
import Synchronization
import Testing
import TestSupport
@testable import FastDemux

@Suite("TCP immediate ACK policy")
struct TCPAckPolicyTests {
    func seg(_ seq: UInt32, _ flags: TCPFlags = .ack) -> TCPSegmentInfo {
        TCPSegmentInfo(sequenceNumber: seq, acknowledgmentNumber: 0, flags: flags, window: 1000)
    }

    @Test func delayedPolicy() {
        var st = TCPReceiveState()
        let policy = TCPAckPolicy.delayed(mss: 1000)
        // First segment synchronizes; small, no PSH: delayed.
        var r = st.receive(seg(100), payloadLength: 10, policy: policy)
        #expect(r == (false, true) && st.nextExpected == 110)
        // PSH: at once.
        r = st.receive(seg(110, [.ack, .psh]), payloadLength: 10, policy: policy)
        #expect(r == (true, true) && st.nextExpected == 120)
        st.didSendAck()
        // Full-sized segments: every second one.
        r = st.receive(seg(120), payloadLength: 1000, policy: policy)
        #expect(r == (false, true))
        r = st.receive(seg(1120), payloadLength: 1000, policy: policy)
        #expect(r == (true, true) && st.nextExpected == 2120)
        st.didSendAck()
        // Out of sequence: duplicate ACK at once, state unchanged.
        r = st.receive(seg(5000), payloadLength: 10, policy: policy)
        #expect(r == (true, false) && st.nextExpected == 2120 && st.outOfSequence == 1)
        // A pure ACK needs no ACK.
        r = st.receive(seg(2120), payloadLength: 0, policy: policy)
        #expect(r == (false, true))
        // FIN occupies one sequence number and is ACKed at once.
        r = st.receive(seg(2120, [.ack, .fin]), payloadLength: 0, policy: policy)
        #expect(r == (true, true) && st.nextExpected == 2121)
    }

    @Test func everySegmentAndNever() {
        var a = TCPReceiveState()
        #expect(a.receive(seg(1), payloadLength: 5, policy: .everySegment).ackNow)
        var n = TCPReceiveState()
        #expect(!n.receive(seg(1, [.ack, .psh]), payloadLength: 5, policy: .never).ackNow)
        #expect(!n.receive(seg(99), payloadLength: 5, policy: .never).ackNow)
    }

    @Test func fastPathEmitsAckOrLeavesItToTheWorker() throws {
        let acks = Mutex<[TCPAck]>([])
        let demux = Demux<Memb>()
        let s = demux.makeSocket(.tcp)
        try s.connect(to: InetEndpoint(v4("192.0.2.1"), 4000), from: InetEndpoint(v4("10.0.0.1"), 80),
                      initialReceiveSequence: 1000)
        let key = packetKey(.tcp, from: "192.0.2.1", 4000, to: "10.0.0.1", 80)
        let input = demux.makeInput(ackSink: { b in acks.withLock { $0.append(contentsOf: b) } })
        Memb.withRegisteredThread {
            input.burst { b in
                b.deliver(PacketRef(word: 1), key: key, tcp: seg(1000, [.ack, .psh]), payloadLength: 100)
                b.deliver(PacketRef(word: 2), key: key, tcp: seg(1100), payloadLength: 50)   // no PSH: delayed
            }
        }
        #expect(acks.withLock { $0 } == [TCPAck(key: key, ackNumber: 1100, duplicate: false)])
        #expect(input.stats.immediateACKs == 1 && input.stats.sync.lockAcquisitions == 2)

        // The worker holds the TCP state: the fast path must not wait.
        s.withTCPState { _ in
            Memb.withRegisteredThread {
                input.burst { b in
                    b.deliver(PacketRef(word: 3), key: key, tcp: seg(1150, [.ack, .psh]), payloadLength: 10)
                }
            }
        }
        // The try-lock failed: the segment went to the backlog, announced in
        // the lock word; the holder (the closure above) processed it before
        // it could release, and left the ACK it needs to the worker.
        #expect(input.stats.deferredACKs == 1 && input.stats.sync.contendedAcquisitions == 1)
        #expect(s.owesACK)
        #expect(acks.withLock { $0.count } == 1)
        var owed: [TCPAck] = []
        #expect(s.sendOwedACK(key: key) { owed.append($0) })
        #expect(!s.owesACK)
        #expect(owed == [TCPAck(key: key, ackNumber: 1160, duplicate: false)])
        #expect(s.counters.acksSent == 2)
        #expect(s.receive(upTo: 10) { _ in } == 3)
        s.close()
    }
}

@Suite("Demux fast path")
struct DemuxTests {
    @Test func syntheticFramesParseBackToTheirFlow() {
        let parser = PacketParser()
        let flows = [
            packetKey(.udp, from: "192.0.2.1", 4000, to: "10.0.0.1", 53),
            packetKey(.tcp, from: "2001:db8::1", 4000, to: "2001:db8::2", 80),
        ]
        var buffer = [UInt8](repeating: 0, count: 256)
        for f in flows {
            let tcp = TCPSegmentInfo(sequenceNumber: 77, acknowledgmentNumber: 5, flags: [.ack, .psh], window: 9)
            let n = buffer.withUnsafeMutableBytes {
                SyntheticFrame.write(into: $0, flow: f, tcp: tcp, payloadLength: 20)
            }
            let r = buffer.withUnsafeBytes { parser.parse(UnsafeRawBufferPointer(rebasing: $0[0..<n]), linkType: .ethernet) }
            #expect(r.packet?.flow == f)
            #expect(r.packet?.payloadLength == 20)
            if f.transport == .tcp { #expect(r.packet?.tcp?.sequenceNumber == 77) }
        }
    }

    @Test func framesThroughTheParserIntoPoolBuffers() throws {
        let pool = PacketPool(bufferCount: 16)
        let demux = Demux<Memb>(configuration: .init(pool: pool))
        let s6 = demux.makeSocket(.tcp)
        let remote = InetEndpoint(IPAddress("2001:db8::7")!, 40000)
        let local = InetEndpoint(IPAddress("2001:db8::1")!, 443)
        try s6.connect(to: remote, from: local, initialReceiveSequence: 500)
        let u4 = demux.makeSocket(.udp)
        try u4.bind(InetEndpoint(.wildcard(.ipv4), 53))
        let parser = PacketParser()
        let input = demux.makeInput()
        func frame(_ write: (UnsafeMutableRawBufferPointer) -> Int) -> PacketRef {
            let p = pool.allocate()!
            pool.setLength(write(pool.buffer(p)), of: p)
            return p
        }
        let k6 = FlowKey.connected(.tcp, local: local, remote: remote)
        let seg = TCPSegmentInfo(sequenceNumber: 500, acknowledgmentNumber: 1, flags: [.ack, .psh], window: 100)
        let frames = [
            frame { SyntheticFrame.write(into: $0, flow: k6, tcp: seg, payloadLength: 100) },
            frame { SyntheticFrame.write(into: $0, flow: packetKey(.udp, from: "192.0.2.9", 5, to: "10.1.2.3", 53),
                                         payloadLength: 10) },
            frame { b in   // IPv4 ethertype, truncated IPv4 header
                for i in 0..<20 { b[i] = 0 }
                b[12] = 0x08; b[14] = 0x45
                return 20
            },
            frame { b in   // ARP ethertype
                for i in 0..<60 { b[i] = 0 }
                b[12] = 0x08; b[13] = 0x06
                return 60
            },
        ]
        var verdicts: [DemuxVerdict] = []
        Memb.withRegisteredThread {
            input.burst { b in
                for p in frames { verdicts.append(b.input(p, frame: pool.bytes(p), parser: parser)) }
            }
        }
        #expect(verdicts == [.queued, .queued, .dropped(.malformed), .dropped(.unsupported)])
        #expect(input.stats.offered == 4 && input.stats.enqueued == 2)
        #expect(input.stats.parseDropsByReason.count == 2)
        for (p, v) in zip(frames, verdicts) where v != .queued { pool.free(p) }
        #expect(s6.withTCPState { $0.nextExpected } == 600)
        var got: [PacketRef] = []
        s6.receive(upTo: 4) { got.append($0) }
        u4.receive(upTo: 4) { got.append($0) }
        #expect(got == [frames[0], frames[1]])
        #expect(pool.bytes(got[0]).count == SyntheticFrame.length(for: k6, payloadLength: 100))
        for p in got { pool.free(p) }
        #expect(pool.globalFreeCount == 16)
        demux.table.close([s6, u4])
    }

    @Test func batchDeliveryMatchesSingleDelivery() throws {
        let demux = Demux<Memb>()
        let a = demux.makeSocket(.udp, queueCapacity: 3)
        try a.bind(InetEndpoint(v4("10.0.0.1"), 1))
        let b = demux.makeSocket(.udp)
        try b.bind(InetEndpoint(.wildcard(.ipv4), 2))
        let ka = packetKey(.udp, from: "192.0.2.1", 9, to: "10.0.0.1", 1)
        let kb = packetKey(.udp, from: "192.0.2.1", 9, to: "10.0.0.7", 2)
        let kx = packetKey(.udp, from: "192.0.2.1", 9, to: "10.0.0.1", 3)
        let keys = [ka, kb, kx, ka, ka, kb, ka]   // a holds 3: the 4th a is dropped
        let batch = keys.enumerated().map { DemuxPacket(packet: PacketRef(word: UInt($0.offset + 1)), key: $0.element) }
        var drops: [(Int, DemuxDropReason)] = []
        let input = demux.makeInput()
        Memb.withRegisteredThread {
            input.burst { bi in
                batch.withUnsafeBufferPointer { bi.deliver(batch: $0) { drops.append(($0, $1)) } }
            }
        }
        #expect(drops.map(\.0) == [2, 6] && drops.map(\.1) == [.noSocket, .queueFull])
        var got: [UInt] = []
        a.receive(upTo: 10) { got.append($0.word) }
        #expect(got == [1, 4, 5])
        got = []
        b.receive(upTo: 10) { got.append($0.word) }
        #expect(got == [2, 6])
        #expect(input.stats.offered == 7 && input.stats.enqueued == 5 && input.stats.drops.total == 2)

        // Longer than a chunk: every packet is accounted for, in order.
        let many = (0..<150).map { DemuxPacket(packet: PacketRef(word: UInt($0 + 100)), key: $0 % 2 == 0 ? kb : kx) }
        var dropped = 0
        Memb.withRegisteredThread {
            input.burst { bi in many.withUnsafeBufferPointer { bi.deliver(batch: $0) { i, _ in
                #expect(i % 2 == 1 || i >= 2 * 256)
                dropped += 1
            } } }
        }
        #expect(dropped == 75 && input.stats.offered == 157)
        got = []
        b.receive(upTo: 1000) { got.append($0.word) }
        #expect(got == stride(from: 100, to: 250, by: 2).map { UInt($0) })
        demux.table.close([a, b])
    }

    @Test func readySetMarksOnceAndWakesTheReader() throws {
        let demux = Demux<Memb>()
        let set = SocketReadySet(capacity: 4)
        let s = demux.makeSocket(.udp)
        try s.bind(InetEndpoint(v4("10.0.0.1"), 9))
        #expect(set.add(s) == 0)
        let key = packetKey(.udp, from: "192.0.2.1", 1, to: "10.0.0.1", 9)
        let st = deliverBurst(demux, key: key, words: [1, 2, 3]).stats
        #expect(st.sync.wakeups == 1)                          // one 0->1 transition per burst
        #expect(st.socketQueue.batchSizes.total == 1)          // one run of 3 puts
        #expect(deliverBurst(demux, key: key, words: [4]).stats.sync.wakeups == 0)   // still ready
        var slots: [Int] = []
        #expect(set.takeReady { slots.append($0) } == 1 && slots == [0])
        #expect(s.receive(upTo: 10) { _ in } == 4)
        s.close()
    }

    /// Removing a socket clears its slot's pending readiness bit: the next
    /// occupant of the slot is not handed a readiness it never had (the
    /// reader's read of the member would otherwise race with the add that
    /// writes it on another thread).
    @Test func removeClearsTheSlotsPendingReadiness() throws {
        let demux = Demux<Memb>()
        let set = SocketReadySet(capacity: 2)
        let s = demux.makeSocket(.udp)
        try s.bind(InetEndpoint(v4("10.0.0.1"), 9))
        #expect(set.add(s) == 0)
        let key = packetKey(.udp, from: "192.0.2.1", 1, to: "10.0.0.1", 9)
        #expect(deliverBurst(demux, key: key, words: [1]).stats.sync.wakeups == 1)
        #expect(set.hasReadyBits)
        s.close()
        #expect(set.remove(slot: 0) == s.id)
        #expect(!set.hasReadyBits)
        #expect(set.takeReady { _ in } == 0)
        let t = demux.makeSocket(.udp)
        #expect(set.add(t) == 0)
        #expect(set.takeReady { _ in } == 0)
        t.close()
    }

    @Test func workerContinuationIsCoalescedAndSendsOwedACK() throws {
        var config = CoreExecutorGroup.Configuration()
        config.pinned = false
        let group = CoreExecutorGroup(count: 1, configuration: config)
        defer { group.shutdown() }
        let demux = Demux<Memb>()
        func waitFor(_ cond: () -> Bool) {
            let deadline = monotonicNanoseconds() + 5_000_000_000
            while !cond() && monotonicNanoseconds() < deadline { sched_yield() }
        }

        // UDP: bursts within the delay coalesce into one schedule.
        let u = demux.makeSocket(.udp)
        try u.bind(InetEndpoint(v4("10.0.0.1"), 9))
        let runs = Atomic<Int>(0)
        u.attachWorker(on: group.executor(for: 0), delay: .milliseconds(300)) { sock in
            _ = sock.receive(upTo: 100) { _ in }
            // Counted after the receive: the test reads the socket's
            // counters as soon as it sees the run.
            runs.add(1, ordering: .releasing)
        }
        let ukey = packetKey(.udp, from: "192.0.2.1", 1, to: "10.0.0.1", 9)
        let input = demux.makeInput()
        Memb.withRegisteredThread {
            for i: UInt in 1...3 { input.burst { b in _ = b.deliver(PacketRef(word: i), key: ukey) } }
        }
        #expect(input.stats.workerSchedules == 1)
        waitFor { runs.load(ordering: .acquiring) == 1 }
        #expect(runs.load(ordering: .acquiring) == 1)
        #expect(u.counters.delivered == 3)

        // TCP: the fast path cannot take the state, the worker sends the ACK.
        let t = demux.makeSocket(.tcp)
        try t.connect(to: InetEndpoint(v4("192.0.2.1"), 4000), from: InetEndpoint(v4("10.0.0.1"), 80),
                      initialReceiveSequence: 0)
        let tkey = packetKey(.tcp, from: "192.0.2.1", 4000, to: "10.0.0.1", 80)
        // Atomics, not a Mutex: the thread sanitizer cannot see the
        // contended path of Synchronization.Mutex and would report a race.
        let owedCount = Atomic<Int>(0)
        let owedAck = Atomic<UInt32>(0)
        t.attachWorker(on: group.executor(for: 0), delay: .milliseconds(300),
                       emitACK: { a in
                           #expect(a.key == tkey && !a.duplicate)
                           owedAck.store(a.ackNumber, ordering: .relaxed)
                           owedCount.add(1, ordering: .releasing)
                       }) { _ in }
        let seg = TCPSegmentInfo(sequenceNumber: 0, acknowledgmentNumber: 0, flags: [.ack, .psh], window: 1)
        t.withTCPState { _ in
            Memb.withRegisteredThread {
                input.burst { b in _ = b.deliver(PacketRef(word: 9), key: tkey, tcp: seg, payloadLength: 10) }
            }
        }
        #expect(input.stats.deferredACKs == 1)
        waitFor { owedCount.load(ordering: .acquiring) == 1 }
        #expect(owedCount.load(ordering: .acquiring) == 1)
        #expect(owedAck.load(ordering: .relaxed) == 10)
        #expect(!t.owesACK)
        demux.table.close([u, t])
    }
}
