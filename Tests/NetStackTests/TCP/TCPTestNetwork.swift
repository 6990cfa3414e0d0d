import FastDemux
@testable import NetStack
import TestSupport

// An in-memory network for the TCP engine tests: hosts holding
// connections and listeners, a channel that delays, drops, duplicates and
// reorders segments with a fixed-seed RNG, and a simulated clock. Every
// segment goes through the real wire format (TCPHeader.write, checksum,
// TCPHeader.parse), so the codec is exercised by every test. Nothing here
// sleeps: time jumps to the next event.

extension SplitMix64 {
    /// True with probability `p`.
    mutating func chance(_ p: Double) -> Bool { p > 0 && Double(next() >> 11) / Double(UInt64(1) << 53) < p }
}

/// A segment on the wire.
struct WireSegment {
    var header: TCPHeader
    var endpoints: TCPEndpoints  // local = sender
    var bytes: [UInt8]
    var payloadLength: Int { bytes.count - header.encodedLength }
}

/// One super-segment call the engine made (its header, payload length
/// and segment size).
struct SuperSegmentCall {
    var header: TCPHeader
    var length: Int
    var segmentSize: Int
}

/// Serialises every segment the engine emits; a super-segment is cut into
/// `segmentSize` pieces as Linux's tcp_gso_segment cuts a GSO packet
/// (sequence numbers advanced, PSH and FIN on the last piece only), and
/// recorded in `superSegments`.
struct CaptureSink: TCPSegmentSink {
    var segments: [WireSegment] = []
    var superSegments: [SuperSegmentCall] = []

    mutating func send(_ header: TCPHeader, payload: TCPPayload, endpoints: TCPEndpoints, segmentSize: Int) {
        superSegments.append(SuperSegmentCall(header: header, length: payload.count, segmentSize: segmentSize))
        var offset = 0
        while offset < payload.count {
            let n = min(segmentSize, payload.count - offset)
            var piece = header
            piece.sequenceNumber = header.sequenceNumber &+ UInt32(offset)
            if offset + n < payload.count { piece.flags.subtract([.fin, .psh]) }
            send(piece, payload: payload.slice(offset: offset, count: n), endpoints: endpoints)
            offset += n
        }
    }
    mutating func send(_ header: TCPHeader, payload: TCPPayload, endpoints: TCPEndpoints) {
        var bytes = [UInt8](repeating: 0, count: header.encodedLength + payload.count)
        let n = bytes.withUnsafeMutableBytes { buf in
            (try? header.write(payload: payload, into: buf, source: endpoints.local, destination: endpoints.remote)) ?? -1
        }
        precondition(n == bytes.count)
        segments.append(WireSegment(header: header, endpoints: endpoints, bytes: bytes))
    }
}

struct TestHost {
    var address: IPAddress
    var connections: [TCPConnection] = []
    var listener: TCPListener?
    /// Input drops before any connection (parse, checksum, no connection).
    var inputDrops = TCPCounters()
    /// Take accepted connections from the listener automatically.
    var autoAccept = true
}

/// Test-side bytes: position `i` of stream `seed`.
@inline(__always)
func patternByte(_ i: Int, seed: UInt64) -> UInt8 {
    UInt8(truncatingIfNeeded: (UInt64(i) &* 0x9E37_79B9 &+ seed &+ UInt64(i >> 12)) >> 7)
}

final class TCPTestNetwork {
    struct InFlight {
        var at: UInt64
        var order: Int
        var segment: WireSegment
    }

    var now: UInt64 = 1_000_000
    var rng: SplitMix64
    var loss = 0.0
    var duplicate = 0.0
    var reorder = 0.0
    /// One-way delay (µs).
    var latency: UInt64 = 2_000
    var hosts: [TestHost]
    var queue: [InFlight] = []
    var order = 0
    /// Every segment sent, if recording.
    var recording = true
    var log: [WireSegment] = []
    /// Segments the channel lost.
    var lost = 0
    /// Return false to drop a segment deliberately.
    var filter: ((WireSegment) -> Bool)?
    /// Called before every step (the applications).
    var application: ((TCPTestNetwork) -> Void)?
    let isn = TCPISNGenerator(key0: 0x0123_4567_89ab_cdef, key1: 0xfedc_ba98_7654_3210)

    init(family: AddressFamily = .ipv4, seed: UInt64 = 1) {
        rng = SplitMix64(seed: seed)
        switch family {
        case .ipv4:
            hosts = [TestHost(address: IPAddress(ipv4: 0x0a00_0001)), TestHost(address: IPAddress(ipv4: 0x0a00_0002))]
        case .ipv6:
            hosts = [TestHost(address: IPAddress(ipv6High: 0xfd00_0000_0000_0000, low: 1)),
                     TestHost(address: IPAddress(ipv6High: 0xfd00_0000_0000_0000, low: 2))]
        }
    }

    static func testConfiguration() -> TCPConfiguration {
        var c = TCPConfiguration()
        // Above the 200 ms delayed ACK plus the RTT, so that a delayed ACK
        // never races a timeout (see TCPConfiguration.minimumRetransmissionTimeout).
        c.minimumRetransmissionTimeout = 300_000
        c.maximumSegmentLifetime = 1_000_000
        return c
    }

    func endpoints(from a: Int, port: UInt16, to b: Int, port bPort: UInt16) -> TCPEndpoints {
        TCPEndpoints(local: hosts[a].address, localPort: port, remote: hosts[b].address, remotePort: bPort)
    }

    /// Host 1 listens on `port`.
    func listen(port: UInt16, on host: Int = 1, configuration: TCPConfiguration = testConfiguration(),
                synQueue: Int = 128, acceptQueue: Int = 128) {
        hosts[host].listener = TCPListener(port: port, configuration: configuration, synQueueLimit: synQueue,
                                        acceptQueueLimit: acceptQueue, isn: isn)
    }

    /// Host 0 connects from `port` to host 1's `serverPort`; returns the
    /// connection's index on host 0.
    @discardableResult
    func connect(from host: Int = 0, port: UInt16 = 40000, serverPort: UInt16 = 80,
                 configuration: TCPConfiguration = testConfiguration()) -> Int {
        var sink = CaptureSink()
        let c = TCPConnection(connecting: endpoints(from: host, port: port, to: 1 - host, port: serverPort),
                              configuration: configuration, isn: isn, now: now, sink: &sink)
        hosts[host].connections.append(c)
        transmit(sink)
        return hosts[host].connections.count - 1
    }

    /// Runs `body` on a connection and sends what it emits.
    func with<R>(_ host: Int, _ index: Int, _ body: (inout TCPConnection, UInt64, inout CaptureSink) -> R) -> R {
        var sink = CaptureSink()
        let r = body(&hosts[host].connections[index], now, &sink)
        transmit(sink)
        return r
    }

    /// Host `host`'s connection `index` writes `bytes` (as far as they fit) and sends.
    func write(host: Int, index: Int = 0, _ bytes: [UInt8]) {
        with(host, index) { c, now, sink in
            _ = bytes.withUnsafeBytes { c.write($0) }
            c.output(now: now, sink: &sink)
        }
    }

    /// Host `host`'s connection `index` half-closes and sends its FIN.
    func shutdown(host: Int, index: Int = 0) {
        with(host, index) { c, now, sink in
            c.shutdownWrite()
            c.output(now: now, sink: &sink)
        }
    }

    /// Every super-segment call the connections made (recorded always:
    /// a few hundred per 16 MiB).
    var superSegmentLog: [SuperSegmentCall] = []

    func transmit(_ sink: CaptureSink) {
        superSegmentLog += sink.superSegments
        for s in sink.segments { enqueue(s) }
    }

    func enqueue(_ s: WireSegment) {
        if recording { log.append(s) }
        if let f = filter, !f(s) { lost += 1; return }
        if rng.chance(loss) { lost += 1; return }
        var copies = 1
        if rng.chance(duplicate) { copies = 2 }
        for _ in 0..<copies {
            var at = now + latency
            if rng.chance(reorder) { at += 1 + rng.next() % (3 * latency) }
            order += 1
            let item = InFlight(at: at, order: order, segment: s)
            // Insert keeping (at, order) sorted; most go at the end.
            var i = queue.count
            while i > 0 && queue[i - 1].at > at { i -= 1 }
            queue.insert(item, at: i)
        }
    }

    /// Injects raw bytes as if `from` sent them to `to`.
    func inject(_ bytes: [UInt8], from: Int, to: Int) {
        deliver(bytes: bytes, source: hosts[from].address, destination: hosts[to].address)
    }

    func deliver(bytes: [UInt8], source: IPAddress, destination: IPAddress) {
        guard let d = hosts.firstIndex(where: { $0.address == destination }) else { return }
        var sink = CaptureSink()
        bytes.withUnsafeBytes { raw in
            guard TCPHeader.verifyChecksum(raw, source: source, destination: destination) else {
                hosts[d].inputDrops.drop(.badChecksum)
                return
            }
            let parsed: (header: TCPHeader, payloadOffset: Int)
            do throws(TCPDropReason) {
                parsed = try TCPHeader.parse(raw)
            } catch {
                hosts[d].inputDrops.drop(error)
                return
            }
            let h = parsed.header
            let payload = UnsafeRawBufferPointer(rebasing: raw[parsed.payloadOffset...])
            let ends = TCPEndpoints(replyTo: h, source: source, destination: destination)
            if let j = hosts[d].connections.firstIndex(where: { $0.endpoints == ends && $0.state != .closed }) {
                hosts[d].connections[j].receive(h, payload: payload, now: now, sink: &sink)
            } else if hosts[d].listener?.port == h.destinationPort {
                hosts[d].listener!.receive(h, payload: payload, source: source, destination: destination, now: now, sink: &sink)
                if hosts[d].autoAccept {
                    while let c = hosts[d].listener!.accept() { hosts[d].connections.append(c) }
                }
            } else {
                hosts[d].inputDrops.drop(.noConnection)
                if let r = h.resetReply(payloadLength: payload.count) { sink.send(r, payload: .empty, endpoints: ends) }
            }
        }
        transmit(sink)
    }

    /// The next event time, if any.
    var nextEvent: UInt64? {
        var t = queue.first?.at
        func consider(_ d: UInt64?) { if let d, t == nil || d < t! { t = d } }
        for h in hosts {
            for c in h.connections { consider(c.nextDeadline) }
            consider(h.listener?.nextDeadline)
        }
        return t
    }

    /// Advances to the next event and processes it; false if there is none.
    func step() -> Bool {
        guard let t = nextEvent else { return false }
        now = max(now, t)
        while let f = queue.first, f.at <= now {
            queue.removeFirst()
            deliver(bytes: f.segment.bytes, source: f.segment.endpoints.local, destination: f.segment.endpoints.remote)
        }
        for h in hosts.indices {
            for j in hosts[h].connections.indices {
                if let d = hosts[h].connections[j].nextDeadline, d <= now {
                    var sink = CaptureSink()
                    hosts[h].connections[j].handleTimers(now: now, sink: &sink)
                    transmit(sink)
                }
            }
            if let d = hosts[h].listener?.nextDeadline, d <= now {
                var sink = CaptureSink()
                hosts[h].listener!.handleTimers(now: now, sink: &sink)
                transmit(sink)
            }
        }
        return true
    }

    /// Runs until `done` holds, nothing is left to happen, or a limit is
    /// reached (simulated time `for` µs from now, or `steps` events).
    /// Returns whether `done` held.
    @discardableResult
    func run(for duration: UInt64 = 60_000_000, steps: Int = 5_000_000, until done: () -> Bool = { false }) -> Bool {
        let end = now + duration
        var n = 0
        while !done() {
            application?(self)
            if done() { return true }
            guard n < steps, let t = nextEvent, t <= end else {
                if nextEvent == nil || (nextEvent ?? 0) > end { now = max(now, min(end, nextEvent ?? end)) }
                return done()
            }
            _ = step()
            n += 1
        }
        return true
    }

    /// Runs for exactly `duration` of simulated time (events inside it).
    func advance(by duration: UInt64) {
        let end = now + duration
        run(for: duration) { false }
        now = max(now, end)
    }

    /// Host 0's connection `i` and host 1's first connection.
    var client: TCPConnection { hosts[0].connections[0] }
    var server: TCPConnection { hosts[1].connections[0] }

    /// Opens a connection (host 0 → host 1:80) and runs the handshake.
    func establish(client cc: TCPConfiguration = testConfiguration(), server sc: TCPConfiguration = testConfiguration()) -> Bool {
        listen(port: 80, configuration: sc)
        connect(configuration: cc)
        return run(for: 10_000_000) {
            hosts[0].connections.first?.state == .established && hosts[1].connections.first?.state == .established
        }
    }
}

/// Builds a raw TCP segment with arbitrary fields (for hostile input),
/// checksummed for `source` → `destination` unless `badChecksum`.
func rawSegment(sourcePort: UInt16 = 40000, destinationPort: UInt16 = 80, seq: UInt32, ack: UInt32, flags: TCPFlags,
                window: UInt16 = 65535, dataOffsetWords: Int? = nil, options: [UInt8] = [], payload: [UInt8] = [],
                source: IPAddress, destination: IPAddress, badChecksum: Bool = false) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 20)
    b[0] = UInt8(sourcePort >> 8); b[1] = UInt8(truncatingIfNeeded: sourcePort)
    b[2] = UInt8(destinationPort >> 8); b[3] = UInt8(truncatingIfNeeded: destinationPort)
    for k in 0..<4 { b[4 + k] = UInt8(truncatingIfNeeded: seq >> (24 - 8 * UInt32(k))) }
    for k in 0..<4 { b[8 + k] = UInt8(truncatingIfNeeded: ack >> (24 - 8 * UInt32(k))) }
    let words = dataOffsetWords ?? (20 + options.count + 3) / 4
    b[12] = UInt8(truncatingIfNeeded: words << 4)
    b[13] = UInt8(truncatingIfNeeded: flags.rawValue)
    b[14] = UInt8(window >> 8); b[15] = UInt8(truncatingIfNeeded: window)
    var opts = options
    while (20 + opts.count) % 4 != 0 { opts.append(0) }
    b += opts
    b += payload
    // Checksum over the pseudo-header (independent of the engine's writer).
    var sum = UInt32(onesComplementSum(b))
    let addr: [UInt8] = source.family == .ipv4
        ? withUnsafeBytes(of: source.ipv4Value.bigEndian, Array.init) + withUnsafeBytes(of: destination.ipv4Value.bigEndian, Array.init)
        : withUnsafeBytes(of: source.high.bigEndian, Array.init) + withUnsafeBytes(of: source.low.bigEndian, Array.init)
            + withUnsafeBytes(of: destination.high.bigEndian, Array.init) + withUnsafeBytes(of: destination.low.bigEndian, Array.init)
    sum += UInt32(onesComplementSum(addr)) + 6 + UInt32(b.count)
    while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
    var c = ~UInt16(sum)
    if badChecksum { c ^= 0x5555 }
    b[16] = UInt8(c >> 8); b[17] = UInt8(truncatingIfNeeded: c)
    return b
}
