import FastDemux
import Glibc
import Testing
@testable import NetStack

/// Steady-state allocations of the TCP engine per segment. The gate that
/// always runs is the Benchmarks package's `TCP.segmentAndAck` (a
/// `mallocCountTotal` threshold of 0, in CI). Here they are counted only
/// when the test binary runs with an LD_PRELOAD shim exporting
/// `test_malloc_count()` (as ReassemblyAllocationTests); without it the
/// transfer runs uncounted (and still checks the bytes). The counted window
/// covers write, output, parse, receive, read, timers and the sink's
/// framing into preallocated slots.
@Suite struct TCPAllocationTests {
    typealias Counter = @convention(c) () -> UInt64

    static var counter: Counter? {
        guard let symbol = dlsym(nil, "test_malloc_count") else { return nil }
        return unsafeBitCast(symbol, to: Counter.self)
    }

    /// Frames segments into a fixed set of preallocated slots.
    struct SlotSink: TCPSegmentSink {
        static let slotSize = 2048
        let slots: UnsafeMutableRawPointer
        let lengths: UnsafeMutablePointer<Int>
        let capacity: Int
        var count = 0

        init(capacity: Int) {
            self.capacity = capacity
            slots = .allocate(byteCount: capacity * Self.slotSize, alignment: 16)
            lengths = .allocate(capacity: capacity)
        }

        func free() {
            slots.deallocate()
            lengths.deallocate()
        }

        func slot(_ i: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(start: slots + i * Self.slotSize, count: lengths[i])
        }

        mutating func send(_ header: TCPHeader, payload: TCPPayload, endpoints: TCPEndpoints) {
            precondition(count < capacity)
            let buf = UnsafeMutableRawBufferPointer(start: slots + count * Self.slotSize, count: Self.slotSize)
            lengths[count] = (try? header.write(payload: payload, into: buf, source: endpoints.local,
                                                destination: endpoints.remote)) ?? 0
            count += 1
        }
    }

    @Test func noAllocationPerSegmentInSteadyState() {
        let a = IPAddress(ipv4: 0x0a00_0001), b = IPAddress(ipv4: 0x0a00_0002)
        let isn = TCPISNGenerator(key0: 5, key1: 6)
        var config = TCPConfiguration()
        config.sendBufferSize = 64 * 1024
        config.receiveBufferSize = 64 * 1024
        var toB = SlotSink(capacity: 256), toA = SlotSink(capacity: 256)
        defer { toB.free(); toA.free() }
        var now: UInt64 = 1_000_000
        var client = TCPConnection(connecting: TCPEndpoints(local: a, localPort: 1234, remote: b, remotePort: 80),
                                   configuration: config, isn: isn, now: now, sink: &toB)
        var listener = TCPListener(port: 80, configuration: config, isn: isn)
        var server: TCPConnection?
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 16)
        let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 16)
        defer { scratch.deallocate(); readBuffer.deallocate() }
        for i in 0..<scratch.count { scratch[i] = UInt8(truncatingIfNeeded: i &* 7) }
        var received = 0, mismatches = 0

        // Parses every segment in `sink` (and empties it) for `body`.
        func drain(_ sink: inout SlotSink, _ body: (TCPHeader, UnsafeRawBufferPointer) -> Void) {
            let n = sink.count
            sink.count = 0
            for i in 0..<n {
                let raw = sink.slot(i)
                guard let p = try? TCPHeader.parse(raw) else { continue }
                body(p.header, UnsafeRawBufferPointer(rebasing: raw[p.payloadOffset...]))
            }
        }
        // Delivers segments both ways until neither side has more to send.
        func exchange() {
            var rounds = 0
            while toB.count > 0 || toA.count > 0 {
                rounds += 1
                precondition(rounds < 1000)
                if toB.count > 0 {
                    // Replies of B go into toA; nothing is written into toB meanwhile.
                    drain(&toB) { h, payload in
                        if server != nil {
                            server!.receive(h, payload: payload, now: now, sink: &toA)
                        } else {
                            listener.receive(h, payload: payload, source: a, destination: b, now: now, sink: &toA)
                            server = listener.accept()
                        }
                    }
                    if server != nil {
                        while true {
                            let r = server!.read(into: readBuffer)
                            if r == 0 { break }
                            for k in 0..<r where readBuffer[k] != UInt8(truncatingIfNeeded: (received + k) % 4096 &* 7) {
                                mismatches += 1
                            }
                            received += r
                        }
                        server!.output(now: now, sink: &toA)
                    }
                }
                if toA.count > 0 {
                    drain(&toA) { h, payload in client.receive(h, payload: payload, now: now, sink: &toB) }
                }
            }
        }
        // Bytes 0..<4096 of the scratch repeat with period 4096 in the stream.
        var written = 0
        func round() {
            while client.writableBytes >= 4096 {
                let off = written % 4096
                written += client.write(UnsafeRawBufferPointer(rebasing: scratch[off..<off + 4096 - off]))
            }
            client.output(now: now, sink: &toB)
            exchange()
            now += 1000
            client.handleTimers(now: now, sink: &toB)
            if server != nil { server!.handleTimers(now: now, sink: &toA) }
            exchange()
        }
        exchange()
        #expect(server?.state == .established)
        for _ in 0..<20 { round() }  // warm up
        let count = Self.counter ?? { 0 }
        // Uncounted, a short run checks the bytes (the transfer tests move
        // far more): 500 rounds take 98 s under ThreadSanitizer.
        let rounds = Self.counter == nil ? 40 : 500
        let before = count()
        let segmentsBefore = client.counters.segmentsSent
        for _ in 0..<rounds { round() }
        let allocations = count() - before
        let segments = client.counters.segmentsSent - segmentsBefore
        #expect(mismatches == 0)
        #expect(received > rounds * 20_000)
        #expect(segments > rounds * 10)
        if Self.counter != nil {
            print("TCP engine allocations: \(allocations) for \(segments) segments")
            #expect(allocations == 0)
        }
    }
}
