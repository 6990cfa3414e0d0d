import FastDemux
import Glibc
import PacketIO
import SMPPrimitives

// The entry points of the libFuzzer targets (Fuzz/, built by
// scripts/fuzz.sh) and of the tests that replay the committed regression
// inputs (Tests/Fixtures/fuzz-regressions/): one function per target, so a
// crash found by the fuzzer reproduces in `swift test` through the same
// code. Each entry traps (a failed `check`) when an invariant of the code
// under test breaks; the sanitizer catches out-of-bounds reads.

/// Traps with `message` unless `condition` holds: an invariant the fuzzer
/// broke. (Not `precondition`: that one is compiled out in `-Ounchecked`,
/// and the message must survive in every build.)
@inline(__always)
func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz invariant: \(message())") }
}

/// Checks what ``PacketParser`` promises about any frame (see its
/// documentation and ``ParsedPacket``): the offsets lie inside the
/// captured bytes and in header order, the captured payload is the
/// headers' payload unless the frame is snaplen-truncated (fragments
/// are dropped until reassembled), and checksum verification only ever adds drops (or drops
/// earlier). Reads every
/// captured payload byte, so that AddressSanitizer sees an offset past the
/// frame. Returns the result without checksum verification.
@discardableResult
package func checkParse(_ frame: UnsafeRawBufferPointer, linkType: LinkType, wireLength: Int?) -> ParseResult {
    let plain = PacketParser().parse(frame, linkType: linkType, wireLength: wireLength)
    let verified = PacketParser(options: ParserOptions(verifyChecksums: true))
        .parse(frame, linkType: linkType, wireLength: wireLength)
    switch (plain, verified) {
    case (.packet(let p), .packet(let v)):
        check(p.flow == v.flow && p.payloadOffset == v.payloadOffset && p.payloadLength == v.payloadLength
              && p.capturedPayloadLength == v.capturedPayloadLength && p.tcp == v.tcp
              && p.isTruncated == v.isTruncated,
              "verifying checksums changed the parsed packet: \(p) vs \(v)")
    case (.packet, .dropped(let r)):
        check(r == .checksum, "verifying checksums dropped a good packet as \(r), not checksum")
    case (.dropped(let r), .packet):
        check(false, "verifying checksums delivered a packet dropped (\(r)) without")
    case (.dropped(let r), .dropped(let v)):
        // Verification may stop earlier: at a bad checksum, or at a routing
        // header cut short (it names the pseudo-header's destination, so it
        // must be read whole; without verification only its first two bytes
        // are, and a frame cut that short has no transport header anyway).
        check(v == r || v == .checksum || v == .truncatedIPv6,
              "verifying checksums changed the drop reason \(r) into \(v)")
    }
    guard case .packet(let p) = plain else { return plain }
    let wire = max(wireLength ?? frame.count, frame.count)
    check(0 <= p.networkOffset && p.networkOffset < p.transportOffset
          && p.transportOffset < p.payloadOffset && p.payloadOffset <= frame.count,
          "offsets out of order or past the frame: \(p), \(frame.count) bytes")
    check(p.capturedPayloadLength >= 0 && p.payloadOffset + p.capturedPayloadLength <= frame.count,
          "captured payload past the frame: \(p), \(frame.count) bytes")
    check(p.payloadLength >= 0, "negative payload length: \(p)")
    check(!p.isTruncated || wire > frame.count, "truncated although nothing was cut: \(p)")
    check(p.isTruncated || p.capturedPayloadLength == p.payloadLength,
          "a whole datagram's captured payload differs from its headers' length: \(p)")
    check((p.flow.transport == .tcp) == (p.tcp != nil), "TCP fields and transport disagree: \(p)")
    var sum: UInt8 = 0
    for i in p.payloadOffset..<(p.payloadOffset + p.capturedPayloadLength) { sum &+= frame[i] }
    blackHole(sum)
    return plain
}

/// Keeps a value alive through the optimizer (the loads that produce it
/// must happen).
@inline(never)
func blackHole<T>(_ value: T) {
    withExtendedLifetime(value) {}
}

/// The `parser` fuzz target: one frame through ``PacketParser`` (both
/// option sets, see ``checkParse(_:linkType:wireLength:)``) and, if it
/// parses, through a ``Demux``'s lookup and delivery into sockets, their
/// TCP receive state and immediate ACKs, and a ``SocketReadySet``.
///
/// Input: 4 header bytes, then the frame.
///
/// | byte | meaning |
/// |---|---|
/// | 0 | link type: an index into ``linkTypes``, else the raw `LINKTYPE_` value (mostly unsupported) |
/// | 1 | delivery flags, see below |
/// | 2–3 | big-endian bytes on the wire beyond the frame (snaplen truncation); 0: none |
///
/// Flags: bit 0 delivers under the key of the harness's own connected TCP
/// socket or bound UDP socket of the packet's transport and family instead
/// of the packet's key (so that the fuzzed sequence numbers, flags and
/// lengths reach the TCP receive state without guessing a bound 5-tuple);
/// bits 1–2 deliver the packet 1 to 4 times (the second time a segment is
/// out of sequence, the third fills a receive queue of 2); bit 3 uses the
/// batch path (``DemuxInput/deliver(batch:onDrop:)``).
///
/// Every input starts from the same state: after the burst the harness
/// drains every queue, takes the ready bits and resets the TCP receive
/// states, so a crash reproduces from its input alone.
///
/// Concurrency: one thread at a time (the input belongs to its thread);
/// that thread must be registered with `Memb`.
package final class ParserFuzzer {
    /// The link types byte 0 indexes: every type ``PacketParser`` decodes
    /// (``LinkType/isSupported``). scripts/fuzz-corpus.py maps capture
    /// files to the same indices.
    package static let linkTypes: [LinkType] = [
        .null, .ethernet, .rawBSD, .rawOpenBSD, .raw, .loop, .linuxSLL, .ipv4, .ipv6, .linuxSLL2,
    ]

    let demux = Demux<Memb>(configuration: .init(queueCapacity: 2, ackPolicy: .default, depthSampleInterval: 1,
                                                  expectedConnections: 64))
    let input: DemuxInput<Memb>
    let ready = SocketReadySet(capacity: 16)
    var sockets: [Socket] = []
    /// Where bit 0 of the flags sends a packet: [tcp v4, tcp v6, udp v4, udp v6].
    var redirect: [FlowKey] = []

    /// Sets up the demultiplexer: per family a connected TCP socket, a
    /// listening TCP socket on port 80, a bound UDP socket on port 53 and a
    /// wildcard UDP socket on port 5353. Allocates; registers the calling
    /// thread with `Memb` for the set-up if it is not.
    package init() {
        // The sink reads every ACK it is handed (the buffer must be valid).
        input = demux.makeInput(ackSink: { acks in
            var sum: UInt32 = 0
            for a in acks { sum &+= a.ackNumber }
            blackHole(sum)
        })
        let families: [(local: IPAddress, remote: IPAddress)] = [
            (IPAddress(ipv4: 0x7f00_0001), IPAddress(ipv4: 0xc000_0207)),
            (IPAddress("::1")!, IPAddress("2001:db8::7")!),
        ]
        var tcpKeys: [FlowKey] = [], udpKeys: [FlowKey] = []
        do {
            for (local, remote) in families {
                let conn = demux.makeSocket(.tcp)
                try conn.connect(to: InetEndpoint(remote, 40000), from: InetEndpoint(local, 8000))
                tcpKeys.append(FlowKey(transport: .tcp, source: remote, sourcePort: 40000,
                                       destination: local, destinationPort: 8000))
                let listener = demux.makeSocket(.tcp)
                try listener.bind(InetEndpoint(local, 80))
                try listener.listen()
                let dns = demux.makeSocket(.udp)
                try dns.bind(InetEndpoint(local, 53))
                udpKeys.append(FlowKey(transport: .udp, source: remote, sourcePort: 40000,
                                       destination: local, destinationPort: 53))
                let any = demux.makeSocket(.udp)
                try any.bind(InetEndpoint(.wildcard(local.family), 5353))
                sockets += [conn, listener, dns, any]
            }
        } catch {
            fatalError("ParserFuzzer: socket set-up failed: \(error)")
        }
        redirect = tcpKeys + udpKeys
        for s in sockets { ready.add(s) }
        reset()
    }

    deinit {
        Memb.withRegisteredThread { for s in sockets { s.close() } }
    }

    /// Runs one fuzz input (see the type's documentation for its layout).
    package func run(_ data: UnsafeRawBufferPointer) {
        let header = data.count >= 4 ? 4 : data.count
        func byte(_ i: Int) -> UInt8 { i < header ? data[i] : 0 }
        let selector = Int(byte(0)), flags = byte(1)
        let extra = Int(byte(2)) << 8 | Int(byte(3))
        let frame = UnsafeRawBufferPointer(rebasing: data[header...])
        let linkType = selector < Self.linkTypes.count ? Self.linkTypes[selector] : LinkType(rawValue: UInt32(selector))
        let wireLength = extra == 0 ? nil : frame.count + extra
        let p: ParsedPacket
        switch checkParse(frame, linkType: linkType, wireLength: wireLength) {
        case .packet(let parsed):
            p = parsed
        case .dropped(let reason):
            Memb.withRegisteredThread { input.burst { b in b.drop(parseReason: reason) } }
            return
        }
        var key = p.flow
        if flags & 1 != 0 {
            let index = (p.flow.transport == .tcp ? 0 : 2) + (p.flow.family == .ipv4 ? 0 : 1)
            key = redirect[index]
        }
        let repeats = Int((flags >> 1) & 3) + 1
        let packet = DemuxPacket(packet: PacketRef(word: 1), key: key, tcp: p.tcp, payloadLength: p.payloadLength)
        Memb.withRegisteredThread {
            input.burst { b in
                if flags & 8 != 0 {
                    withUnsafeTemporaryAllocation(of: DemuxPacket.self, capacity: repeats) { batch in
                        batch.initialize(repeating: packet)
                        b.deliver(batch: UnsafeBufferPointer(batch)) { _, _ in }
                    }
                } else {
                    for _ in 0..<repeats {
                        b.deliver(packet.packet, key: packet.key, tcp: packet.tcp, payloadLength: packet.payloadLength)
                    }
                }
            }
            let stats = input.stats
            check(stats.offered == stats.enqueued + stats.drops.total,
                  "offered \(stats.offered) != enqueued \(stats.enqueued) + dropped \(stats.drops.total)")
            reset()
        }
    }

    /// Back to the state after `init`: queues empty, no ready bits, TCP
    /// receive states not synchronized (the next segment sets them).
    func reset() {
        for s in sockets {
            while s.tryReceive() != nil {}
            if s.proto == .tcp {
                s.withTCPState { $0 = TCPReceiveState() }
            }
        }
        _ = ready.takeReady { _ in }
    }
}

/// The `pcap` and `pcapng` fuzz targets: a capture file held in memory
/// through ``PcapReader`` (libpcap for pcap, ``PcapngReader`` for pcapng)
/// to its end or its first error, every frame through
/// ``checkParse(_:linkType:wireLength:)``.
///
/// Checks that the frames are numbered 1, 2, 3... and that an error counts
/// exactly the frames returned before it. Inputs of the other target's
/// format are ignored (each target keeps to its own format), so are inputs
/// shorter than a magic number.
///
/// Concurrency: any thread; nothing is shared between calls.
package enum CaptureFuzzer {
    /// Runs one fuzz input for `format`'s target.
    package static func run(_ data: UnsafeRawBufferPointer, format: PcapReader.Format) {
        guard data.count >= 4 else { return }
        let isPcapng = data.loadUnaligned(as: UInt32.self) == 0x0A0D_0D0A
        guard isPcapng == (format == .pcapng) else { return }
        let reader: PcapReader
        do {
            reader = try PcapReader(bytes: Array(data), name: "fuzz-input")
        } catch {
            return
        }
        check(reader.format == format, "read as \(reader.format), magic says \(format)")
        var frames = 0
        do {
            while let frame = try reader.next() {
                frames += 1
                check(frame.index == frames, "frame \(frames) numbered \(frame.index)")
                check(frame.wireLength >= 0, "negative wire length \(frame.wireLength)")
                var sum: UInt8 = 0
                for b in frame.bytes { sum &+= b }   // every captured byte is readable
                blackHole(sum)
                checkParse(frame.bytes, linkType: frame.linkType, wireLength: frame.wireLength)
            }
        } catch {
            guard case .malformed(_, let packetsRead, _) = error else {
                check(false, "unexpected error after \(frames) frames: \(error)")
                return
            }
            check(packetsRead == frames, "error counts \(packetsRead) packets, \(frames) were read")
        }
        check(reader.framesRead == frames, "framesRead \(reader.framesRead), \(frames) were read")
    }
}

// MARK: Inputs for the replay tests

/// The committed regression inputs of a fuzz target
/// (Tests/Fixtures/fuzz-regressions/TARGET/: inputs the fuzzer crashed on,
/// and hand-made hostile ones), as file names (sorted; READMEs left out).
package func fuzzRegressionInputs(_ target: String) -> [String] {
    directoryEntries(fuzzRegressionDirectory(target)).filter { !$0.hasSuffix(".md") }
}

/// The folder of a target's regression inputs.
package func fuzzRegressionDirectory(_ target: String) -> String {
    packageRoot + "/Tests/Fixtures/fuzz-regressions/" + target
}

/// The committed captures the seed corpora come from (scripts/fuzz-corpus.py):
/// Tests/Fixtures/captures/ and the `fastdemux` demo capture.
package func fuzzSeedCaptures() -> [String] {
    let dir = packageRoot + "/Tests/Fixtures/captures"
    return directoryEntries(dir).map { dir + "/" + $0 } + [loopbackSamplePath]
}

/// `parser` target inputs for every frame of a capture, as the seed corpus
/// has them: under the frame's own key (flags 0) and redirected, twice, in
/// a batch (flags 0x0B). Frames of link types the parser does not decode
/// are left out.
package func parserFuzzInputs(fromCapture path: String) throws -> [[UInt8]] {
    let reader = try PcapReader(path: path)
    var inputs: [[UInt8]] = []
    while let frame = try reader.next() {
        guard let index = ParserFuzzer.linkTypes.firstIndex(of: frame.linkType) else { continue }
        let extra = min(max(frame.wireLength - frame.bytes.count, 0), 0xffff)
        for flags: UInt8 in [0x00, 0x0B] {
            inputs.append([UInt8(index), flags, UInt8(extra >> 8), UInt8(extra & 0xff)] + Array(frame.bytes))
        }
    }
    return inputs
}

private func directoryEntries(_ path: String) -> [String] {
    guard let dir = opendir(path) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        if !name.hasPrefix(".") { names.append(name) }
    }
    return names.sorted()
}

/// A seeded generator (SplitMix64, Steele, Lea and Flood), so that
/// randomized tests are repeatable.
package struct SplitMix64: RandomNumberGenerator {
    package var state: UInt64
    package init(seed: UInt64) { state = seed }
    package mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
