import Glibc
import Synchronization
import Testing
@testable import DemuxLab
import PacketIO
import SMPPrimitives
@testable import FastDemux

/// Runs `body` on a thread of its own and waits for it at most `seconds`:
/// nil (and a recorded issue) if it did not finish in time, so a hang fails
/// the test instead of blocking the run. (A late body keeps its thread,
/// which is deliberately leaked rather than joined.)
func withDeadline<T: Sendable>(_ what: String, seconds: Double = 60,
                               _ body: @escaping @Sendable () throws -> T) -> T? {
    let box = DeadlineBox<T>()
    let thread = PinnedThread(name: "deadline") { box.value.withLock { $0 = Result { try body() } } }
    let deadline = monotonicSeconds() + seconds
    while box.value.withLock({ $0 == nil }) {
        if monotonicSeconds() > deadline {
            Issue.record("\(what) did not finish within \(seconds) s")
            _ = Unmanaged.passRetained(thread)   // never joined
            return nil
        }
        usleep(1000)
    }
    thread.join()
    switch box.value.withLock({ $0! }) {
    case .success(let v): return v
    case .failure(let e):
        Issue.record("\(what) threw \(e)")
        return nil
    }
}

final class DeadlineBox<T: Sendable>: Sendable {
    let value = Mutex<Result<T, any Error>?>(nil)
}

/// One UDP frame per flow `i` (distinct source ports, one destination), in
/// `phases` groups; before each group after the first the source sleeps
/// `pause` seconds (inside `nextFrame`, as a quiet link would).
struct DistinctFlowsSource: PacketSource {
    let flowsPerPhase: Int
    let phases: Int
    let pause: Double
    private var next = 0
    private final class Buffer {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        deinit { bytes.deallocate() }
    }
    private let buffer = Buffer()

    init(flowsPerPhase: Int, phases: Int = 1, pause: Double = 0) {
        self.flowsPerPhase = flowsPerPhase
        self.phases = phases
        self.pause = pause
    }

    static func key(_ i: Int) -> FlowKey {
        FlowKey(transport: .udp, source: IPAddress(ipv4: 0xc633_6400 | UInt32(i / 60000)),
                sourcePort: UInt16(1024 + i % 60000), destination: IPAddress(ipv4: 0x0a00_0001),
                destinationPort: 53)
    }

    mutating func nextFrame() throws -> CapturedFrame? {
        guard next < flowsPerPhase * phases else { return nil }
        if next > 0 && next % flowsPerPhase == 0 { usleep(UInt32(pause * 1e6)) }
        let n = SyntheticFrame.write(into: buffer.bytes, flow: Self.key(next), payloadLength: 16)
        next += 1
        return CapturedFrame(index: next, linkType: .ethernet, timestampNanoseconds: 0, wireLength: n,
                             bytes: UnsafeRawBufferPointer(start: buffer.bytes.baseAddress, count: n))
    }
}

@Suite struct FlowSocketTests {
    static func key(_ i: Int) -> FlowKey {
        FlowKey(transport: i % 2 == 0 ? .udp : .tcp, source: IPAddress(ipv4: 0xc633_6400 | UInt32(i >> 12)),
                sourcePort: UInt16(1024 + i % 4096), destination: IPAddress(ipv4: 0x0a00_0001),
                destinationPort: i % 2 == 0 ? 53 : 80)
    }

    @Test func floodPastTheCapOpensExactlyCapSocketsAndCountsTheRest() {
        let cap = 100, flows = 350
        let done: Void? = withDeadline("flood") {
            QSBR.withRegisteredThread {
                let demux = Demux<QSBR>()
                let ready = SocketReadySet(capacity: 1024)
                let table = FlowSocketTable(demux: demux, readySet: ready,
                                            limits: FlowSocketLimits(maxSockets: cap, idleTimeout: nil))
                var admitted = 0
                for i in 0..<flows where table.admit(Self.key(i), now: 0) { admitted += 1 }
                // The admitted flows stay admitted (no second open, no refusal).
                for i in 0..<cap where !table.admit(Self.key(i), now: 1) { admitted = -1 }
                #expect(admitted == cap)
                #expect(table.counters.opened == cap)
                #expect(table.counters.open == cap && table.counters.peakOpen == cap)
                #expect(table.counters.refusedCap == flows - cap)
                #expect(table.counters.refusedConnect == 0)
                #expect(demux.table.connectedCount == cap)
                #expect(ready.memberCount == cap)
                table.closeAll()
                table.reap()
                #expect(demux.table.connectedCount == 0)
                #expect(ready.memberCount == 0)
            }
        }
        #expect(done != nil)
    }

    @Test func idleSocketsExpireAndAreFreed() {
        let done: Void? = withDeadline("expiry") {
            QSBR.withRegisteredThread {
                let demux = Demux<QSBR>()
                let ready = SocketReadySet(capacity: 256)
                let table = FlowSocketTable(demux: demux, readySet: ready,
                                            limits: FlowSocketLimits(maxSockets: 256, idleTimeout: 0.5))
                for i in 0..<40 { _ = table.admit(Self.key(i), now: 10) }
                // Weak references: the sockets must be freed once expired and reaped.
                final class Weak { weak var socket: Socket? }
                var weak: [Weak] = []
                for i in 0..<40 {
                    let w = Weak()
                    w.socket = demux.table.socket(for: Self.key(i))
                    weak.append(w)
                }
                #expect(weak.allSatisfy { $0.socket != nil })
                // Flows 0..<20 stay active; 20..<40 go quiet.
                for i in 0..<20 { _ = table.admit(Self.key(i), now: 10.4) }
                #expect(table.expireIdle(now: 10.45) == 0, "nothing idle for 0.5 s yet")
                #expect(table.expireIdle(now: 10.6) == 20)
                #expect(table.counters.expired == 20 && table.counters.open == 20)
                #expect(demux.table.connectedCount == 20)
                #expect(table.reap() == 20)
                #expect(ready.memberCount == 20)
                #expect(weak[20...].allSatisfy { $0.socket == nil }, "expired sockets freed")
                #expect(weak[..<20].allSatisfy { $0.socket != nil })
                #expect(table.expireIdle(now: 11) == 20)
                #expect(table.reap() == 20)
                #expect(demux.table.connectedCount == 0, "PCB count back to 0")
                #expect(ready.memberCount == 0)
                #expect(weak.allSatisfy { $0.socket == nil })
                // An expired flow that comes back gets a new socket.
                #expect(table.admit(Self.key(3), now: 12))
                #expect(table.counters.opened == 41)
                table.closeAll()
                table.reap()
            }
        }
        #expect(done != nil)
    }

    @Test func sessionFloodCountsCapRefusalsAndConserves() throws {
        let r = withDeadline("session flood") {
            var config = DemuxSessionConfiguration()
            config.maxSockets = 64
            config.pin = false
            var source = DistinctFlowsSource(flowsPerPhase: 500)
            return try DemuxSession(config).run(&source)
        }
        guard let r else { return }
        #expect(r.framesIn == 500)
        #expect(r.socketsOpened == 64)
        #expect(r.flowSockets.refusedCap == 500 - 64)
        #expect(r.socketLimitHits == 500 - 64)
        #expect(r.delivered == 64)
        #expect(r.input.drops[.noSocket] == 500 - 64)
        #expect(r.isConserved)
    }

    @Test func sessionExpiresIdleFlowSockets() throws {
        let r = withDeadline("session expiry") {
            var config = DemuxSessionConfiguration()
            config.flowIdleTimeout = 0.1
            config.pin = false
            // Three groups of 30 one-packet flows, 0.4 s apart: each group's
            // sockets expire during the next pause.
            var source = DistinctFlowsSource(flowsPerPhase: 30, phases: 3, pause: 0.4)
            return try DemuxSession(config).run(&source)
        }
        guard let r else { return }
        #expect(r.framesIn == 90)
        // A packet still queued when its socket expired is drained at close
        // (the consumer usually took it long before).
        #expect(r.delivered + r.packetsDrainedAtClose == 90)
        #expect(r.flowSockets.opened == 90)
        #expect(r.flowSockets.expired >= 60, "the first two groups expired (got \(r.flowSockets.expired))")
        #expect(r.flowSockets.peakOpen <= 60)
        #expect(r.isConserved)
    }
}
