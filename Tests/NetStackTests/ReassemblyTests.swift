import Testing
import FastDemux
@testable import NetStack
import TestSupport

extension Harness {
    /// No buffer lost: free + cached + queued = all.
    var buffersConserved: Bool {
        let ok = pool.globalFreeCount + table.cachedBufferCount + table.statistics.fragmentsQueued == pool.bufferCount
        if !ok { print("buffers: free \(pool.globalFreeCount) cached \(table.cachedBufferCount) queued \(table.statistics.fragmentsQueued) of \(pool.bufferCount)") }
        return ok
    }
}

/// Parses a reassembled datagram (Ethernet) with checksum verification.
func deliver(_ datagram: [UInt8]) -> ParsedPacket? {
    TestPacket.parse(datagram, .ethernet, verify: true).packet
}

@Suite struct ReassemblyTests {
    static let payload = Frag.bytes(8192)

    // MARK: Whole datagrams

    @Test(arguments: [false, true])
    func linuxSplitAtMTU1500Reassembles(v6: Bool) throws {
        let datagram = Frag.udpDatagram(v6: v6, payload: Self.payload)
        let frames = Frag.split(datagram, mtu: 1500)
        // 8200 bytes of UDP: IPv4 1480-byte pieces (6), IPv6 1448 (6).
        #expect(frames.count == 6)
        // Full-sized fragments: IPv4 20 + 1480 = 1500, IPv6 40 + 8 + 1448 = 1496.
        #expect(frames.dropLast().allSatisfy { $0.count == 14 + (v6 ? 1496 : 1500) })
        let h = Harness()
        let out = try #require(h.feed(frames))
        let p = try #require(deliver(out))
        #expect(p.payloadLength == 8192)
        #expect(p.flow.sourcePort == 4000 && p.flow.destinationPort == 5000)
        #expect(Array(out[p.payloadOffset...]) == Self.payload)
        // The rebuilt IP header: the original datagram's, byte for byte
        // (IPv4: same id here since Frag.split uses 0x4242 and the original 0x1234 differs).
        let ip = Array(out[14...])
        if v6 {
            #expect(ip == datagram)
        } else {
            #expect(ip[2] == datagram[2] && ip[3] == datagram[3])  // total length
            #expect(ip[6] == 0 && ip[7] == 0)                      // MF 0, offset 0
            #expect(TestPacket.checksum(Array(ip[0..<20])) == 0)  // header checksum verifies
            #expect(Array(ip[20...]) == Array(datagram[20...]))
        }
        #expect(h.table.statistics.datagramsReassembled == 1)
        #expect(h.table.statistics.fragmentsReassembled == 6)
        #expect(h.table.statistics.isConserved)
        #expect(h.table.queueCount == 0)
        #expect(h.buffersConserved)
    }

    @Test(arguments: [false, true], ["reversed", "shuffled", "lastFirst"])
    func anyOrderReassembles(v6: Bool, order: String) throws {
        var frames = Frag.split(Frag.udpDatagram(v6: v6, payload: Self.payload), mtu: 1500)
        switch order {
        case "reversed": frames.reverse()
        case "shuffled":
            var g = SplitMix64(seed: 42)
            frames.shuffle(using: &g)
        default: frames.insert(frames.removeLast(), at: 0)
        }
        let h = Harness()
        let out = try #require(h.feed(frames))
        let p = try #require(deliver(out))
        #expect(Array(out[p.payloadOffset...]) == Self.payload)
        #expect(h.table.statistics.isConserved && h.buffersConserved)
    }

    @Test func ipv6UnfragmentablePartIsKeptAndNextHeaderRewritten() throws {
        // A destination options header before the Fragment header stays;
        // its Next Header (44) becomes the fragmented protocol (17).
        let udp = Array(Frag.udpDatagram(v6: true, payload: Frag.bytes(3000))[40...])
        let dest = TestPacket.ext(next: 44)
        var frames: [[UInt8]] = []
        var o = 0
        while o < udp.count {
            let n = min(1448, udp.count - o)
            frames.append(Frag.v6(offset: o, more: o + n < udp.count, next: 17, data: Array(udp[o..<(o + n)]),
                                  unfragmentable: dest, firstNext: 60))
            o += n
        }
        let h = Harness()
        let out = try #require(h.feed(frames))
        #expect(out[14 + 6] == 60)
        #expect(out[14 + 40] == 17)
        #expect(Int(out[14 + 4]) << 8 | Int(out[14 + 5]) == 8 + udp.count)
        let p = try #require(deliver(out))
        #expect(p.payloadLength == 3000)
    }

    // MARK: Duplicates and overlaps

    @Test(arguments: [false, true])
    func duplicateIsDroppedAloneAndDatagramCompletes(v6: Bool) throws {
        let frames = Frag.split(Frag.udpDatagram(v6: v6, payload: Self.payload), mtu: 1500)
        let h = Harness()
        #expect(h.feed([frames[0], frames[1], frames[1], frames[0]]) == nil)
        #expect(h.table.statistics.dropped(.duplicate) == 2)
        let out = try #require(h.feed(Array(frames[2...])))
        #expect(deliver(out)?.payloadLength == 8192)
        #expect(h.table.statistics.isConserved && h.buffersConserved)
    }

    @Test(arguments: [false, true])
    func overlapDropsTheDatagram(v6: Bool) {
        let data = Frag.bytes(2000)
        let a = v6 ? Frag.v6(offset: 0, more: true, data: Array(data[0..<1000]))
                   : Frag.v4(offset: 0, more: true, data: Array(data[0..<1000]))
        // Starts inside the first (at 992) and runs past it: an overlap.
        let b = v6 ? Frag.v6(offset: 992, more: false, data: Array(data[992...]))
                   : Frag.v4(offset: 992, more: false, data: Array(data[992...]))
        let h = Harness()
        guard case .queued = h.insert(a) else { Issue.record("first not queued"); return }
        guard case .dropped(.overlap) = h.insert(b) else { Issue.record("overlap not dropped"); return }
        #expect(h.table.statistics.dropped(.overlap) == 2)
        #expect(h.table.statistics.datagramsDropped == 1)
        #expect(h.table.queueCount == 0)
        // The rest of the datagram no longer completes it: a new queue.
        guard case .queued = h.insert(a) else { Issue.record("not a new queue"); return }
        #expect(h.table.statistics.isConserved && h.buffersConserved)
    }

    @Test func fragmentCoveringTwoWithAGapIsAnOverlap() {
        let h = Harness()
        _ = h.insert(Frag.v4(offset: 0, more: true, data: Frag.bytes(16)))
        _ = h.insert(Frag.v4(offset: 32, more: true, data: Frag.bytes(16)))
        guard case .dropped(.overlap) = h.insert(Frag.v4(offset: 8, more: true, data: Frag.bytes(40))) else {
            Issue.record("expected overlap"); return
        }
        #expect(h.table.statistics.dropped(.overlap) == 3)
    }

    // MARK: Lengths

    @Test(arguments: [false, true])
    func inconsistentLastFragmentDropsTheDatagram(v6: Bool) {
        func f(_ o: Int, _ more: Bool, _ n: Int) -> [UInt8] {
            v6 ? Frag.v6(offset: o, more: more, data: Frag.bytes(n)) : Frag.v4(offset: o, more: more, data: Frag.bytes(n))
        }
        let h = Harness()
        _ = h.insert(f(80, true, 720))
        _ = h.insert(f(800, false, 100))  // last: the datagram is 900 bytes (0..<80 missing)
        guard case .dropped(.inconsistentLength) = h.insert(f(1600, true, 80)) else {  // data past the end
            Issue.record("expected inconsistent length"); return
        }
        #expect(h.table.statistics.dropped(.inconsistentLength) == 3)
        _ = h.insert(f(800, false, 200))
        guard case .dropped(.inconsistentLength) = h.insert(f(800, false, 104)) else {  // a second, different end
            Issue.record("expected inconsistent length"); return
        }
        _ = h.insert(f(0, true, 1600))
        guard case .dropped(.inconsistentLength) = h.insert(f(800, false, 8)) else {  // ends before received data
            Issue.record("expected inconsistent length"); return
        }
        #expect(h.table.statistics.dropped(.inconsistentLength) == 7)
        #expect(h.table.statistics.isConserved && h.buffersConserved)
    }

    @Test func ipv6NonLastFragmentNotAMultipleOf8IsDroppedAlone() {
        let h = Harness()
        _ = h.insert(Frag.v6(offset: 0, more: true, data: Frag.bytes(800)))
        guard case .dropped(.inconsistentLength) = h.insert(Frag.v6(offset: 800, more: true, data: Frag.bytes(13))) else {
            Issue.record("expected inconsistent length"); return
        }
        #expect(h.table.queueCount == 1)
        #expect(h.table.statistics.fragmentsQueued == 1)
    }

    @Test func ipv4NonLastFragmentIsTrimmedTo8ByteUnits() throws {
        // ip_frag_queue trims an MF fragment to a multiple of 8; the last
        // fragment then fills the datagram from the trimmed end.
        let udp = Array(Frag.udpDatagram(v6: false, payload: Frag.bytes(100))[20...])  // 108 bytes
        let h = Harness()
        let out = try #require(h.feed([Frag.v4(offset: 0, more: true, data: Array(udp[0..<61])),
                                       Frag.v4(offset: 56, more: false, data: Array(udp[56...]))]))
        #expect(deliver(out)?.payloadLength == 100)
    }

    @Test func oversizeDatagrams() {
        let h = Harness()
        // IPv4: data reaching past 65535 - 20.
        guard case .dropped(.oversizeDatagram) = h.insert(Frag.v4(offset: 65_512, more: true, data: Frag.bytes(8))) else {
            Issue.record("v4 oversize"); return
        }
        // IPv6: a fragment ending past 65535 (RFC 8200 §4.5).
        guard case .dropped(.oversizeDatagram) = h.insert(Frag.v6(offset: 65_528, more: false, data: Frag.bytes(16))) else {
            Issue.record("v6 oversize"); return
        }
        #expect(h.table.statistics.dropped(.oversizeDatagram) == 2)
        #expect(h.table.statistics.isConserved && h.buffersConserved)
    }

    @Test func datagramLargerThanTheDatagramBufferFailsCleanly() {
        let h = Harness(datagramBufferSize: 4096)
        let frames = Frag.split(Frag.udpDatagram(v6: false, payload: Self.payload), mtu: 1500)
        #expect(h.feed(frames) == nil)
        #expect(h.table.statistics.dropped(.bufferTooSmall) == 6)
        #expect(h.table.statistics.isConserved && h.buffersConserved)
    }

    @Test func emptyFragmentDropsTheQueue() {
        let h = Harness()
        _ = h.insert(Frag.v4(offset: 0, more: true, data: Frag.bytes(8)))
        guard case .dropped(.emptyFragment) = h.insert(Frag.v4(offset: 8, more: true, data: Frag.bytes(5))) else {
            Issue.record("expected empty fragment (5 bytes trimmed to 0)"); return
        }
        #expect(h.table.statistics.dropped(.emptyFragment) == 2)
    }

    @Test func ipv6FirstFragmentWithoutTheUpperLayerHeaderIsDropped() {
        // RFC 8200 §4.5 / RFC 7112: the first fragment must hold the UDP header.
        let h = Harness()
        guard case .dropped(.incompleteHeaderChain) = h.insert(Frag.v6(offset: 0, more: true, next: 60,
                                                                        data: TestPacket.ext(next: 17))) else {
            Issue.record("expected incomplete header chain"); return
        }
        #expect(h.table.queueCount == 0)
    }

    // MARK: Timeout, caps

    @Test(arguments: [false, true])
    func missingMiddleTimesOutAndDropsAll(v6: Bool) {
        var frames = Frag.split(Frag.udpDatagram(v6: v6, payload: Self.payload), mtu: 1500)
        frames.remove(at: 2)
        let h = Harness()
        #expect(h.feed(frames, at: 1) == nil)
        #expect(h.table.statistics.fragmentsQueued == 5)
        let timeout: Double = v6 ? 60 : 30
        #expect(h.table.nextDeadline == h.at(1 + timeout))
        var owed: [Int] = []
        #expect(h.table.expire(now: h.at(timeout)) { _, o in owed.append(o) } == 0)  // not yet
        var versions: [UInt8] = []
        let expired = h.table.expire(now: h.at(1 + timeout)) { p, o in
            // The first fragment is handed over for the ICMP Time Exceeded.
            versions.append(h.pool.bytes(p)[o] >> 4)
            owed.append(o)
        }
        #expect(expired == 1)
        #expect(owed == [14] && versions == [v6 ? 6 : 4])
        #expect(h.table.statistics.dropped(.timeout) == 5)
        #expect(h.table.statistics.timeExceededOwed == 1)
        #expect(h.table.nextDeadline == nil)
        #expect(h.table.statistics.isConserved && h.buffersConserved)
    }

    @Test func firstFragmentMissingTimesOutWithoutTimeExceeded() {
        let frames = Frag.split(Frag.udpDatagram(v6: false, payload: Self.payload), mtu: 1500)
        let h = Harness()
        #expect(h.feed(Array(frames[1...])) == nil)
        var calls = 0
        #expect(h.table.expire(now: h.at(31)) { _, _ in calls += 1 } == 1)
        #expect(calls == 0)
        #expect(h.table.statistics.timeExceededOwed == 0)
        #expect(h.table.statistics.dropped(.timeout) == 5)
    }

    @Test func memoryCapRefusesNewFragmentsAndKeepsQueues() {
        let h = Harness(configuration: ReassemblyConfiguration(maxQueues: 16, maxFragments: 4))
        for id in 0..<4 { _ = h.insert(Frag.v4(id: UInt16(id), offset: 0, more: true, data: Frag.bytes(8))) }
        guard case .dropped(.memoryCap) = h.insert(Frag.v4(id: 9, offset: 0, more: true, data: Frag.bytes(8))) else {
            Issue.record("expected memory cap"); return
        }
        #expect(h.table.queueCount == 4)
        // Queue slots are capped too.
        let q = Harness(configuration: ReassemblyConfiguration(maxQueues: 2, maxFragments: 64))
        for id in 0..<2 { _ = q.insert(Frag.v4(id: UInt16(id), offset: 0, more: true, data: Frag.bytes(8))) }
        guard case .dropped(.memoryCap) = q.insert(Frag.v4(id: 9, offset: 0, more: true, data: Frag.bytes(8))) else {
            Issue.record("expected memory cap (queues)"); return
        }
        #expect(h.table.statistics.isConserved && h.buffersConserved)
        #expect(q.table.statistics.isConserved && q.buffersConserved)
    }

    @Test func tooManyFragmentsDropsTheDatagram() {
        let h = Harness(configuration: ReassemblyConfiguration(maxFragmentsPerDatagram: 4))
        for i in 0..<4 { _ = h.insert(Frag.v4(offset: 8 * i, more: true, data: Frag.bytes(8))) }
        guard case .dropped(.tooManyFragments) = h.insert(Frag.v4(offset: 32, more: true, data: Frag.bytes(8))) else {
            Issue.record("expected too many fragments"); return
        }
        #expect(h.table.statistics.dropped(.tooManyFragments) == 5)
        #expect(h.table.queueCount == 0)
    }

    @Test func keysSeparateDatagrams() throws {
        // Same id, different protocol (IPv4 keys on it) or source: separate.
        let h = Harness()
        let udp = Frag.split(Frag.udpDatagram(v6: false, payload: Frag.bytes(2000)), mtu: 1500)
        _ = h.insert(udp[0])
        _ = h.insert(Frag.v4(offset: 0, more: true, proto: 6, data: Frag.bytes(16)))
        _ = h.insert(Frag.v4(offset: 0, more: true, data: Frag.bytes(16), src: [10, 0, 0, 9]))
        #expect(h.table.queueCount == 3)
        let out = try #require(h.feed([udp[1]]))
        #expect(deliver(out)?.payloadLength == 2000)
    }

    // MARK: Conservation

    @Test func conservationAfterARandomizedRunWithDrops() {
        var g = SplitMix64(seed: 0x5eed)
        let h = Harness(configuration: ReassemblyConfiguration(maxQueues: 24, maxFragments: 100,
                                                                maxFragmentsPerDatagram: 14),
                        poolBuffers: 256)
        var pending: [[UInt8]] = []
        var now = 0.0
        var completed = 0
        for round in 0..<300 {
            let v6 = g.next() & 1 == 0
            let size = Int(g.next() % 6000) + 1600  // always fragmented
            var frames = Frag.split(Frag.udpDatagram(v6: v6, payload: Frag.bytes(size, seed: UInt8(round & 0xff))),
                                    mtu: [576, 1280, 1500][Int(g.next() % 3)], id: UInt32(round))
            frames.shuffle(using: &g)
            switch g.next() % 8 {
            case 0: frames.removeLast()                             // a hole: times out
            case 1: frames.append(frames[0])                        // a duplicate
            case 2:                                                 // an overlap
                let v4 = !v6
                frames.append(v4 ? Frag.v4(id: UInt16(truncatingIfNeeded: round), offset: 8, more: true, data: Frag.bytes(64))
                                 : Frag.v6(id: UInt32(round), offset: 8, more: true, data: Frag.bytes(64)))
            default: break
            }
            pending += frames
            // Interleave datagrams.
            while pending.count > 20 {
                let f = pending.remove(at: Int(g.next() % UInt64(pending.count)))
                if case .complete(let d) = h.insert(f, at: now) {
                    completed += 1
                    #expect(deliver(Array(h.datagrams.bytes(d.packet))) != nil)
                    h.datagrams.free(d.packet)
                }
                #expect(h.table.statistics.isConserved)
            }
            now += 0.5
            h.table.expire(now: h.at(now))
        }
        let s = h.table.statistics
        print("randomized run: \(s.fragmentsIn) fragments, \(completed) datagrams, dropped",
              ReassemblyDropReason.allCases.map { "\($0)=\(s.dropped($0))" }.joined(separator: " "))
        #expect(s.isConserved)
        #expect(h.buffersConserved)
        #expect(completed == s.datagramsReassembled && completed > 50)
        #expect(s.dropped(.timeout) > 0 && s.dropped(.duplicate) > 0 && s.dropped(.overlap) > 0)
        #expect(s.dropped(.memoryCap) > 0)
        h.table.expire(now: h.at(now + 61))
        #expect(h.table.statistics.fragmentsQueued == 0 && h.table.statistics.isConserved && h.buffersConserved)
    }
}
