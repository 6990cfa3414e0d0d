import Glibc
import SMPPrimitives
import Synchronization
import Testing
import TestSupport
@testable import FastDemux

/// A flag shared by the two threads of a hand-off test.
private final class ReadyFlag: Sendable {
    let value = Atomic<Bool>(false)
}

/// Spins (sleeping briefly) until `condition` holds or `seconds` passed;
/// returns whether it held. Tests fail by `#expect`, never by hanging.
private func waitUntil(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicNanoseconds() + Int(seconds * 1e9)
    while !condition() {
        if monotonicNanoseconds() > deadline { return false }
        usleep(100)
    }
    return true
}

/// The hand-off statistics are counted at the event (docs/Statistics.md):
/// these tests pin the threads themselves and check the counts against
/// what really happened.
@Suite("Hand-off statistics")
struct StatisticsTests {
    let key = packetKey(.udp, from: "192.0.2.1", 4000, to: "10.0.0.1", 53)

    func boundSocket(_ demux: Demux<Memb>, capacity: Int) throws -> Socket {
        let s = demux.makeSocket(.udp, queueCapacity: capacity)
        try s.bind(InetEndpoint(v4("10.0.0.1"), 53))
        return s
    }

    /// Delivers `total` packets from an input thread on `inputCPU` to a
    /// socket whose reader thread runs on `readerCPU`, the input created
    /// without any CPU number (as with `--no-pin`: the configuration says
    /// nothing about where threads run). Returns the input's statistics and
    /// the packets the reader got.
    func handOff(total: Int, inputCPU: Int, readerCPU: Int) throws -> (stats: DemuxStats, received: Int) {
        let demux = Demux<Memb>()
        let s = try boundSocket(demux, capacity: 1024)
        defer { s.close() }
        let readerStarted = ReadyFlag()
        let key = self.key
        let reader = PinnedThread(cpu: readerCPU, name: "stats-reader") { () -> Int in
            var got = s.receive(upTo: 64) { _ in }   // the first call: the reader has run
            readerStarted.value.store(true, ordering: .releasing)
            _ = waitUntil {
                got += s.receive(upTo: 64) { _ in }
                return got >= total
            }
            return got
        }
        let input = PinnedThread(cpu: inputCPU, name: "stats-input") { () -> DemuxStats? in
            guard waitUntil({ readerStarted.value.load(ordering: .acquiring) }) else { return nil }
            let ctx = demux.makeInput()
            Memb.withRegisteredThread {
                for b in 0..<(total / 32) {
                    ctx.burst { x in
                        for i in 0..<32 { x.deliver(PacketRef(word: UInt(b * 32 + i + 1)), key: key) }
                    }
                }
            }
            return ctx.stats
        }
        let stats = try #require(input.join())
        return (stats, reader.join())
    }

    /// Unpinned by configuration, but the test pins the threads itself: on
    /// two CPUs every hand-off is cross-core (counting from configured CPU
    /// numbers found 0 there), on one CPU none is.
    @Test(.enabled(if: onlineCPUCount >= 2), arguments: [1, 0])
    func crossCoreHandoffsComeFromWhereTheThreadsRan(readerCPU: Int) throws {
        let r = try handOff(total: 512, inputCPU: 0, readerCPU: readerCPU)
        #expect(r.received == 512)
        #expect(r.stats.enqueued == 512)
        #expect(r.stats.sync.crossCoreHandoffs == (readerCPU == 0 ? 0 : 512))
        #expect(r.stats.sync.unclassifiedHandoffs == 0)
    }

    /// No reader has run yet: the hand-offs are unclassified, not counted as
    /// same-core or cross-core.
    @Test func handoffsBeforeTheReaderRanAreUnclassified() throws {
        let demux = Demux<Memb>()
        let s = try boundSocket(demux, capacity: 16)
        let r = deliverBurst(demux, key: key, words: Array(1...5))
        #expect(r.stats.enqueued == 5)
        #expect(r.stats.sync.crossCoreHandoffs == 0 && r.stats.sync.unclassifiedHandoffs == 5)
        s.close()
    }

    /// A queue that fills: the drops, the queue's own failed-put count and
    /// the counted RMWs agree exactly. Per put that fits one ticket CAS; per
    /// failed put the queue's failed-put add and the socket's drop-counter
    /// add; and one high-water CAS, the first time the queue looked full.
    /// (Counting one RMW per put "as documented" gave 8 here.)
    @Test func failedPutsAreCountedWhereTheyFail() throws {
        let demux = Demux<Memb>()
        let s = try boundSocket(demux, capacity: 4)
        let r = deliverBurst(demux, key: key, words: Array(1...6))
        #expect(r.stats.enqueued == 4 && r.stats.drops[.queueFull] == 2)
        let q = s.queue.statistics
        #expect(q.puts == 4 && q.failedPuts == 2)
        #expect(r.stats.drops[.queueFull] == q.failedPuts)
        #expect(r.stats.socketQueue.queueOps == q.puts + q.failedPuts)
        #expect(r.stats.sync.atomicRMWs == 4 + 2 * 2 + 1)
        #expect(r.stats.sync.modelledAtomicRMWs == 0)
        s.close()
    }

    /// The reader parked: the input's ring is counted as it happened (its
    /// exchange, the parker's mutex, the signal, the socket's wake-up
    /// counter) and the glibc internals as modelled.
    @Test func aParkedReaderRungIsCountedOnce() throws {
        let demux = Demux<Memb>()
        let s = try boundSocket(demux, capacity: 16)
        s.readerWakeup.prepareToPark()   // as a blocking reader that found the queue empty
        let r = deliverBurst(demux, key: key, words: [1])
        let y = r.stats.sync
        #expect(y.threadWakeups == 1 && y.wakeups == 1 && y.lockAcquisitions == 1)
        #expect(s.counters.wakeups == 1)
        // The put's CAS, the ring's exchange, the wake-up counter's add.
        #expect(y.atomicRMWs == 3)
        #expect(y.modelledAtomicRMWs == ModelledRMWs.mutexLock + ModelledRMWs.conditionSignal + ModelledRMWs.mutexUnlock)
        s.close()
    }
}
