import Benchmark
import FastDemux
import NetStack

/// Frames every segment a TCP engine sends into a fixed set of preallocated
/// slots, so the benchmark measures the engine and its framing, not a
/// packet pool.
private struct SlotSink: TCPSegmentSink {
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

    mutating func send(_ header: TCPHeader, payload: TCPPayload, endpoints: TCPEndpoints) {
        precondition(count < capacity, "more segments in one exchange than the benchmark's slots")
        let buffer = UnsafeMutableRawBufferPointer(start: slots + count * Self.slotSize, count: Self.slotSize)
        lengths[count] = (try? header.write(payload: payload, into: buffer, source: endpoints.local,
                                            destination: endpoints.remote)) ?? 0
        count += 1
    }

    /// Parses and hands on every framed segment, then empties the sink.
    mutating func drain(_ body: (TCPHeader, UnsafeRawBufferPointer) -> Void) {
        let n = count
        count = 0
        for i in 0..<n {
            let raw = UnsafeRawBufferPointer(start: slots + i * Self.slotSize, count: lengths[i])
            guard let p = try? TCPHeader.parse(raw) else { continue }
            body(p.header, UnsafeRawBufferPointer(rebasing: raw[p.payloadOffset...]))
        }
    }
}

/// Two TCP engines with an established connection between them, made
/// once for all samples: the benchmark closure runs once per sample, and a
/// handshake per sample (listener, rings and queues allocated just before
/// the measured region) would measure set-up, not the steady state.
private final class EstablishedPair {
    var toB: SlotSink, toA: SlotSink
    var now: UInt64 = 1_000_000
    var client: TCPConnection
    var server: TCPConnection
    let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
    let sink = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)

    init() {
        let isn = TCPISNGenerator(key0: 1, key1: 2)
        let (a, b, now) = (IPAddress(ipv4: 0x0A00_0001), IPAddress(ipv4: 0x0A00_0002), UInt64(1_000_000))
        var toB = SlotSink(capacity: 64), toA = SlotSink(capacity: 64)
        var client = TCPConnection(connecting: TCPEndpoints(local: a, localPort: 40000, remote: b, remotePort: 80),
                                   isn: isn, now: now, sink: &toB)
        var listener = TCPListener(port: 80, isn: isn)
        var server: TCPConnection?
        for _ in 0..<3 {
            toB.drain { h, p in
                if server == nil {
                    _ = listener.receive(h, payload: p, source: a, destination: b, now: now, sink: &toA)
                    server = listener.accept()
                } else {
                    server!.receive(h, payload: p, now: now, sink: &toA)
                }
            }
            toA.drain { h, p in client.receive(h, payload: p, now: now, sink: &toB) }
        }
        // `take()`: the stored connection must hold the only reference to
        // the engine's rings (a copy left in `server` would make the first
        // write copy them, copy-on-write).
        guard let connection = server.take(), connection.state == .established, client.state == .established else {
            fatalError("TCP.segmentAndAck: the handshake did not complete")
        }
        self.client = client
        self.server = connection
        self.toB = toB
        self.toA = toA
        chunk.initializeMemory(as: UInt8.self, repeating: 0x5A)
    }

    deinit {
        toB.free()
        toA.free()
        chunk.deallocate()
        sink.deallocate()
    }

    /// One exchange: a full segment from the client, read by the server,
    /// the server's ACK (every second one) back. Returns the bytes read.
    func exchange() -> Int {
        let mss = client.negotiated.sendMSS
        _ = client.write(UnsafeRawBufferPointer(rebasing: chunk[0..<mss]))
        client.output(now: now, sink: &toB)
        toB.drain { h, p in server.receive(h, payload: p, now: now, sink: &toA) }
        var received = 0
        while case let r = server.read(into: sink), r > 0 { received &+= r }
        server.output(now: now, sink: &toA)
        toA.drain { h, p in client.receive(h, payload: p, now: now, sink: &toB) }
        now &+= 20
        return received
    }
}

/// The TCP engine's steady state: per iteration one full-sized segment
/// written, framed (header, options, checksum), parsed, received, read,
/// and its ACK (every second one, RFC 5681 §4.2) framed, parsed and
/// received by the sender. The whole path must allocate nothing.
func tcpBenchmarks() {
    Benchmark("TCP.segmentAndAck") { benchmark in
        // Made by the first sample (the warm-up iteration), kept by the
        // closure's context for the rest.
        let pair = EstablishedPair.shared
        var received = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { received &+= pair.exchange() }
        benchmark.stopMeasurement()
        blackHole(received)
    }
}

extension EstablishedPair {
    /// One pair for every sample (see the type's comment). The benchmark
    /// closures run on one thread, one at a time.
    nonisolated(unsafe) static let shared = EstablishedPair()
}
