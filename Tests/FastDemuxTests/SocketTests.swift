import Glibc
import SMPPrimitives
import Synchronization
import Testing
import TestSupport
@testable import FastDemux

/// Delivers `words` to `key` through a fresh input context (one burst) on a
/// Memb-registered thread; returns the verdicts and the input's stats.
@discardableResult
func deliverBurst(_ demux: Demux<Memb>, key: FlowKey, words: [UInt], tcp: TCPSegmentInfo? = nil,
                  payloadLength: Int = 0) -> (verdicts: [DemuxVerdict], stats: DemuxStats) {
    let input = demux.makeInput()
    let verdicts = Memb.withRegisteredThread {
        input.burst { b in words.map { b.deliver(PacketRef(word: $0), key: key, tcp: tcp, payloadLength: payloadLength) } }
    }
    return (verdicts, input.stats)
}

@Suite("Socket API")
struct SocketTests {
    let key = packetKey(.udp, from: "192.0.2.1", 4000, to: "10.0.0.1", 53)

    func boundSocket(_ demux: Demux<Memb>, capacity: Int? = nil) throws -> Socket {
        let s = demux.makeSocket(.udp, queueCapacity: capacity)
        try s.bind(InetEndpoint(v4("10.0.0.1"), 53))
        return s
    }

    @Test func nonBlockingAndBatchReceive() throws {
        let demux = Demux<Memb>()
        let s = try boundSocket(demux)
        #expect(s.tryReceive() == nil)
        let r = deliverBurst(demux, key: key, words: Array(1...10))
        #expect(r.verdicts.allSatisfy { $0 == .queued })
        #expect(r.stats.enqueued == 10 && r.stats.offered == 10)
        #expect(s.tryReceive()?.word == 1)
        var got: [UInt] = []
        #expect(s.receive(upTo: 4) { got.append($0.word) } == 4)
        #expect(got == [2, 3, 4, 5])
        #expect(s.receive(upTo: 100) { got.append($0.word) } == 5)
        #expect(got == Array(2...10))
        #expect(s.counters.delivered == 10)
        #expect(s.counters.queued == 0)
        s.close()
    }

    @Test func fullQueueDropsAndCounts() throws {
        let demux = Demux<Memb>()
        let s = try boundSocket(demux, capacity: 4)
        #expect(s.queueCapacity == 4)
        let r = deliverBurst(demux, key: key, words: Array(1...6))
        #expect(r.verdicts.filter { $0 == .dropped(.queueFull) }.count == 2)
        #expect(r.stats.drops[.queueFull] == 2 && r.stats.enqueued == 4)
        let c = s.counters
        #expect(c.droppedQueueFull == 2 && c.queued == 4 && c.enqueued == 4)
        // No socket: counted as no_socket.
        let miss = deliverBurst(demux, key: packetKey(.udp, from: "192.0.2.1", 1, to: "10.0.0.1", 54), words: [1])
        #expect(miss.verdicts == [.dropped(.noSocket)])
        s.close()
    }

    @Test func defaultCapacityIs256() {
        let demux = Demux<Memb>()
        #expect(demux.makeSocket(.udp).queueCapacity == 256)
    }

    @Test func blockingReceiveIsWokenAndCounted() throws {
        let demux = Demux<Memb>()
        let s = try boundSocket(demux)
        let received = Mutex<[UInt]>([])
        let reader = PinnedThread(name: "reader") {
            for _ in 0..<3 {
                if let p = s.receive() { received.withLock { $0.append(p.word) } }
            }
        }
        var wakeups = 0
        for w: UInt in 1...3 {
            // Wait until the reader is parked, so each delivery must wake it.
            var spins = 0
            while !s.readerWakeup.isArmed && spins < 2_000_000 { spins += 1; sched_yield() }
            wakeups += deliverBurst(demux, key: key, words: [w]).stats.sync.threadWakeups
        }
        reader.join()
        #expect(received.withLock { $0 } == [1, 2, 3])
        #expect(wakeups >= 1)
        #expect(s.counters.wakeups == wakeups)
        s.close()
    }

    @Test func blockingReceiveReturnsNilOnClose() throws {
        let demux = Demux<Memb>()
        let s = try boundSocket(demux)
        let result = Mutex<PacketRef??>(.none)
        let reader = PinnedThread(name: "reader") { let p = s.receive(); result.withLock { $0 = .some(p) } }
        var spins = 0
        while !s.readerWakeup.isArmed && spins < 2_000_000 { spins += 1; sched_yield() }
        s.close()
        reader.join()
        #expect(result.withLock { $0 } == .some(nil))
    }

    @Test func asyncSequenceReceivesUntilClosed() async throws {
        let demux = Demux<Memb>()
        let s = try boundSocket(demux)
        let consumer = Task { () -> [UInt] in
            var out: [UInt] = []
            for await p in s.packets { out.append(p.word) }
            return out
        }
        deliverBurst(demux, key: key, words: [1, 2])
        try await Task.sleep(for: .milliseconds(20))
        deliverBurst(demux, key: key, words: [3])
        // Wait until the consumer has taken everything, then close: the
        // sequence ends.
        while s.counters.delivered < 3 { try await Task.sleep(for: .milliseconds(1)) }
        s.close()
        #expect(await consumer.value == [1, 2, 3])
    }

    @Test func closeReturnsQueuedPacketsToThePool() throws {
        let pool = PacketPool(bufferCount: 8)
        let demux = Demux<Memb>(configuration: .init(pool: pool))
        let s = try boundSocket(demux)
        var cache = PacketPool.Cache(pool: pool)
        var words: [UInt] = []
        for _ in 0..<3 { words.append(cache.allocate()!.word) }
        _ = consume cache   // return the rest to the global stack
        #expect(pool.globalFreeCount == 5)
        #expect(deliverBurst(demux, key: key, words: words).stats.enqueued == 3)
        s.close()
        #expect(pool.globalFreeCount == 8)
        #expect(s.counters.droppedClosed == 3 && s.counters.drainedAtClose == 3)
        #expect(demux.table.packetsDrainedAtTeardown == 3)
        #expect(s.tryReceive() == nil)
        // Closed and removed: new packets find no socket.
        #expect(deliverBurst(demux, key: key, words: [1]).verdicts == [.dropped(.noSocket)])
    }

    @Test func deferredCloseDrainsAfterTheGracePeriod() throws {
        let pool = PacketPool(bufferCount: 4)
        let demux = Demux<Memb>(configuration: .init(pool: pool))
        let s = try boundSocket(demux)
        let words = (0..<2).map { _ in pool.allocate()!.word }
        #expect(deliverBurst(demux, key: key, words: words).stats.enqueued == 2)
        s.closeDeferred()
        #expect(s.state == .closed)
        #expect(demux.table.boundCount == 0)
        demux.barrier()
        #expect(pool.globalFreeCount == 4)
        #expect(s.counters.drainedAtClose == 2)
        #expect(demux.table.packetsDrainedAtTeardown == 2)
    }

    @Test func closedSocketSeenByAnInputDropsAsSocketClosed() throws {
        let demux = Demux<Memb>()
        let s = try boundSocket(demux)
        let input = demux.makeInput()
        // The input looked the socket up before close removed it: it sees
        // the closed state and drops (the teardown waits for this section).
        let verdict = Memb.withRegisteredThread {
            input.burst { b -> DemuxVerdict in
                s.setState(.closed)
                return b.deliver(PacketRef(word: 1), key: key)
            }
        }
        #expect(verdict == .dropped(.socketClosed))
        #expect(input.stats.drops[.socketClosed] == 1)
        s.setState(.bound)
        s.close()
        #expect(s.counters.droppedClosed == 1)
    }
}

@Suite("Packet pool")
struct PacketPoolTests {
    @Test func cacheMovesBatchesAndConserves() {
        let pool = PacketPool(bufferCount: 256, bufferSize: 128, batchSize: 16)
        do {
            var cache = PacketPool.Cache(pool: pool)
            var held: [PacketRef] = []
            for _ in 0..<100 { held.append(cache.allocate()!) }
            #expect(Set(held).count == 100)
            #expect(pool.globalFreeCount + cache.cachedCount == 156)
            let transfersAfterAlloc = cache.transfers
            #expect(transfersAfterAlloc <= 100 / 16 + 1)
            for p in held { cache.free(p) }
            #expect(cache.cachedCount <= 32)
            // Steady state: allocate/free pairs never touch the global stack.
            let t = cache.transfers
            for _ in 0..<1000 { let p = cache.allocate()!; cache.free(p) }
            #expect(cache.transfers == t)
        }
        #expect(pool.globalFreeCount == 256)
    }

    @Test func bytesAndExhaustion() {
        let pool = PacketPool(bufferCount: 2, bufferSize: 64)
        let bytes: [UInt8] = [1, 2, 3]
        let p = bytes.withUnsafeBytes { pool.allocate(copying: $0) }!
        #expect(Array(pool.bytes(p)) == bytes)
        #expect(pool.length(of: p) == 3)
        let q = pool.allocate()!
        #expect(pool.allocate() == nil)
        pool.free(p)
        pool.free(q)
        #expect(pool.globalFreeCount == 2)
    }
}
