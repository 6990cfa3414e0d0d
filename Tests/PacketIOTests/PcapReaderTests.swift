import Foundation
import Testing
@testable import PacketIO
import TestSupport
@testable import FastDemux

/// Builds pcapng files block by block, in either byte order.
struct PcapngBuilder {
    var bigEndian: Bool
    var bytes: [UInt8] = []

    func u16(_ v: UInt16) -> [UInt8] { bigEndian ? [UInt8(v >> 8), UInt8(v & 0xff)] : [UInt8(v & 0xff), UInt8(v >> 8)] }
    func u32(_ v: UInt32) -> [UInt8] { bigEndian ? TestPacket.be32(v) : TestPacket.le32(v) }

    mutating func block(_ type: UInt32, _ body: [UInt8], trailer: UInt32? = nil) {
        let padded = body + [UInt8](repeating: 0, count: (4 - body.count % 4) % 4)
        let total = UInt32(12 + padded.count)
        bytes += u32(type) + u32(total) + padded + u32(trailer ?? total)
    }

    mutating func section() {
        block(0x0A0D_0D0A, u32(0x1A2B_3C4D) + u16(1) + u16(0) + [UInt8](repeating: 0xff, count: 8))
    }

    mutating func interface(_ link: UInt16, snaplen: UInt32 = 0, tsresol: UInt8? = nil) {
        var options: [UInt8] = []
        if let tsresol { options += u16(9) + u16(1) + [tsresol, 0, 0, 0] }
        if !options.isEmpty { options += u16(0) + u16(0) }
        block(1, u16(link) + u16(0) + u32(snaplen) + options)
    }

    mutating func enhanced(interface: UInt32, ticks: UInt64, data: [UInt8], wireLength: Int? = nil, caplen: UInt32? = nil) {
        block(6, u32(interface) + u32(UInt32(ticks >> 32)) + u32(UInt32(ticks & 0xffff_ffff))
            + u32(caplen ?? UInt32(data.count)) + u32(UInt32(wireLength ?? data.count)) + data)
    }

    mutating func simple(data: [UInt8], wireLength: Int? = nil) {
        block(3, u32(UInt32(wireLength ?? data.count)) + data)
    }
}

/// A scratch file removed when the value goes away.
final class TemporaryFile {
    let path: String
    init(_ bytes: [UInt8], suffix: String = ".pcapng") {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("fastdemux-\(UUID().uuidString)\(suffix)").path
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

private func readAll(_ path: String) throws -> [(index: Int, link: LinkType, ns: Int64, wire: Int, bytes: [UInt8])] {
    let reader = try PcapReader(path: path)
    var frames: [(index: Int, link: LinkType, ns: Int64, wire: Int, bytes: [UInt8])] = []
    while let f = try reader.next() {
        frames.append((f.index, f.linkType, f.timestampNanoseconds, f.wireLength, Array(f.bytes)))
    }
    return frames
}

/// Reads a scratch file, keeping it alive until the reader has opened it.
private func readAll(_ file: TemporaryFile) throws -> [(index: Int, link: LinkType, ns: Int64, wire: Int, bytes: [UInt8])] {
    try withExtendedLifetime(file) { try readAll(file.path) }
}

@Suite struct PcapReaderTests {
    static let root = OracleAgreementTests.packageRoot
    static let udp4 = TestPacket.ethernet(type: 0x0800, payload: TestPacket.ipv4(proto: 17, payload: TestPacket.udp(payload: [1, 2])))
    static let raw6 = TestPacket.ipv6(next: 6, payload: TestPacket.tcp())

    @Test func loopbackSample() throws {
        let reader = try PcapReader(path: loopbackSamplePath)
        #expect(reader.format == .pcap)
        #expect(reader.linkType == .ethernet)
        let parser = PacketParser()
        var flows: [FlowKey: Int] = [:]
        var lastTime: Int64 = 0
        var expectedIndex = 1
        while let f = try reader.next() {
            #expect(f.index == expectedIndex)
            expectedIndex += 1
            #expect(f.timestampNanoseconds >= lastTime)
            lastTime = f.timestampNanoseconds
            if let p = parser.parse(f.bytes, linkType: f.linkType, wireLength: f.wireLength).packet {
                flows[p.flow.canonical, default: 0] += 1
            }
        }
        // Sources/fastdemux/Resources/README.md: 6 TCP connections of 12
        // packets, 4 UDP flows of 10.
        #expect(reader.framesRead == 112)
        #expect(flows.count == 10)
        #expect(flows.filter { $0.key.transport == .tcp }.values.sorted() == [12, 12, 12, 12, 12, 12])
        #expect(flows.filter { $0.key.transport == .udp }.values.sorted() == [10, 10, 10, 10])
        #expect(lastTime > 1_700_000_000 * 1_000_000_000)
    }

    @Test func pcapngWithSeveralLinkTypes() throws {
        // mergecap of 8 frames each of Ethernet, SLL2, raw, NULL, LOOP, SLL and raw IPv6 captures
        // (libpcap 1.10 refuses this file: "an interface has a type 276 different from the type of the first interface").
        let frames = try readAll(Self.root.appendingPathComponent("Tests/Fixtures/captures/multi-link.pcapng").path)
        let links = frames.map(\.link.rawValue)
        #expect(links == [1, 276, 101, 0, 108, 113, 229].flatMap { [UInt32](repeating: $0, count: 8) })
        let parser = PacketParser()
        for f in frames {
            let r = f.bytes.withUnsafeBytes { parser.parse($0, linkType: f.link, wireLength: f.wire) }
            if f.link == .raw || f.link == .ipv6 {
                // Loopback traffic relinked to raw IP: a raw-IP device (tun)
                // is not a loopback device, so 127.0.0.1 and ::1 are martian
                // there, as in Linux (docs/ParsingRules.md).
                #expect(r.dropReason == .martianDestination || r.dropReason == .martianSource,
                        "frame \(f.index) \(f.link): \(r.dropReason?.name ?? "deliver")")
            } else {
                #expect(r.packet != nil, "frame \(f.index) \(f.link): \(r.dropReason?.name ?? "")")
            }
        }
    }

    @Test(arguments: [false, true])
    func handBuiltPcapng(bigEndian: Bool) throws {
        var b = PcapngBuilder(bigEndian: bigEndian)
        b.section()
        b.interface(1)                    // microseconds
        b.interface(101, tsresol: 9)      // nanoseconds
        b.block(0x0000_0BAD, [1, 2, 3, 4])  // custom block: not a packet
        b.enhanced(interface: 0, ticks: 1_500_000_123_456, data: Self.udp4, wireLength: 100)
        b.enhanced(interface: 1, ticks: 1_500_000_123_456_789, data: Self.raw6)
        b.block(5, [UInt8](repeating: 0, count: 8))  // interface statistics
        b.simple(data: Self.udp4)
        // A second section resets the interfaces.
        b.section()
        b.interface(0, tsresol: 0x80 | 10)  // 2^-10 s
        b.enhanced(interface: 0, ticks: 3 * 1024 + 512, data: TestPacket.le32(2) + TestPacket.ipv4(proto: 6, payload: TestPacket.tcp()))
        let file = TemporaryFile(b.bytes)
        let frames = try readAll(file)
        #expect(frames.map(\.index) == [1, 2, 3, 4])
        #expect(frames.map(\.link) == [.ethernet, .raw, .ethernet, .null])
        #expect(frames[0].ns == 1_500_000_123_456_000)
        #expect(frames[0].wire == 100 && frames[0].bytes == Self.udp4)
        #expect(frames[1].ns == 1_500_000_123_456_789)
        #expect(frames[1].bytes == Self.raw6)
        #expect(frames[2].bytes == Self.udp4)
        #expect(frames[3].ns == 3_500_000_000)
        let reader = try withExtendedLifetime(file) { try PcapReader(path: file.path) }
        #expect(reader.format == .pcapng && reader.linkType == .ethernet)
    }

    @Test func simplePacketBlockHonoursSnaplen() throws {
        var b = PcapngBuilder(bigEndian: false)
        b.section()
        b.interface(1, snaplen: 20)
        b.simple(data: Self.udp4)
        let file = TemporaryFile(b.bytes)
        let frames = try readAll(file)
        #expect(frames.count == 1 && frames[0].bytes.count == 20 && frames[0].wire == Self.udp4.count)
    }

    /// A block longer than what is left of the file, yet under
    /// `maxBlockLength`: an error before the reader grows its buffer for it
    /// (not an allocation of the declared length, then a failed read).
    @Test func blockLengthPastTheEndOfTheFile() throws {
        var b = PcapngBuilder(bigEndian: false)
        b.section()
        b.interface(1)
        b.enhanced(interface: 0, ticks: 1, data: Self.udp4)
        b.bytes += b.u32(6) + b.u32(UInt32(PcapngReader.maxBlockLength - 4)) + [UInt8](repeating: 0, count: 16)
        let file = TemporaryFile(b.bytes)
        let readers = try withExtendedLifetime(file) {
            [try PcapReader(path: file.path), try PcapReader(bytes: b.bytes, name: "in-memory")]
        }
        for reader in readers {
            #expect(try reader.next()?.index == 1)
            #expect {
                _ = try reader.next()
            } throws: { error in
                guard case .malformed(_, 1, let reason) = error as? PcapError else { return false }
                return reason == "block length \(PcapngReader.maxBlockLength - 4) runs past the end of the file (16 bytes left)"
            }
        }
    }

    /// if_tsresol finer than 1.8 * 10^10 units/s (here picoseconds): the
    /// sub-second part times 10^9 does not fit 64 bits.
    @Test func picosecondTimestamps() throws {
        var b = PcapngBuilder(bigEndian: false)
        b.section()
        b.interface(1, tsresol: 12)
        b.enhanced(interface: 0, ticks: 5_000_000_000_000 + 987_654_321_012, data: Self.udp4)
        let frames = try readAll(TemporaryFile(b.bytes))
        #expect(frames.map(\.ns) == [5_987_654_321])
    }

    /// Classic pcap with a 4 GiB snaplen and a record claiming 4 GiB:
    /// libpcap refuses the record (it never allocates the declared size).
    @Test func pcapWithHugeDeclaredLengths() throws {
        var w = PcapWriter(linkType: 1, snaplen: 0xffff_ffff)
        w.append32(1); w.append32(0)
        w.append32(0xffff_ffff); w.append32(0xffff_ffff)
        w.bytes += [UInt8](repeating: 0, count: 64)
        let reader = try PcapReader(bytes: w.bytes, name: "huge")
        #expect {
            _ = try reader.next()
        } throws: { error in
            guard case .malformed(_, 0, _) = error as? PcapError else { return false }
            return true
        }
    }

    /// Broken pcapng files: the good packets before the damage are
    /// returned, then a `malformed` error names how many there were.
    @Test(arguments: ["truncated", "undeclared", "caplen", "trailer", "length", "huge"])
    func brokenPcapng(_ damage: String) throws {
        var b = PcapngBuilder(bigEndian: false)
        b.section()
        b.interface(1)
        b.enhanced(interface: 0, ticks: 1, data: Self.udp4)
        switch damage {
        case "truncated":
            b.enhanced(interface: 0, ticks: 2, data: Self.udp4)
            b.bytes.removeLast(10)
        case "undeclared": b.enhanced(interface: 3, ticks: 2, data: Self.udp4)
        case "caplen": b.enhanced(interface: 0, ticks: 2, data: Self.udp4, caplen: 1000)
        case "trailer": b.block(6, [UInt8](repeating: 0, count: 20), trailer: 99)
        case "length": b.bytes += b.u32(6) + b.u32(13) + [UInt8](repeating: 0, count: 16)
        default: b.bytes += b.u32(6) + b.u32(0x7fff_fff0) + [UInt8](repeating: 0, count: 16)
        }
        let file = TemporaryFile(b.bytes)
        let reader = try withExtendedLifetime(file) { try PcapReader(path: file.path) }
        #expect(try reader.next()?.index == 1)
        #expect {
            _ = try reader.next()
        } throws: { error in
            guard case .malformed(let path, let n, _) = error as? PcapError else { return false }
            return path == file.path && n == 1
        }
    }

    @Test func classicPcapVariants() throws {
        func header(magic: UInt32, bigEndian: Bool, link: UInt32) -> [UInt8] {
            let u32 = bigEndian ? TestPacket.be32 : TestPacket.le32
            let u16: (UInt16) -> [UInt8] = { bigEndian ? TestPacket.be16($0) : TestPacket.be16($0).reversed() }
            return u32(magic) + u16(2) + u16(4) + u32(0) + u32(0) + u32(65535) + u32(link)
        }
        func record(bigEndian: Bool, sec: UInt32, frac: UInt32, data: [UInt8], wire: Int? = nil) -> [UInt8] {
            let u32 = bigEndian ? TestPacket.be32 : TestPacket.le32
            return u32(sec) + u32(frac) + u32(UInt32(data.count)) + u32(UInt32(wire ?? data.count)) + data
        }
        for bigEndian in [false, true] {
            // Microsecond pcap, raw IP (LINKTYPE_RAW 101, which libpcap reports as DLT_RAW 12).
            let micro = header(magic: 0xa1b2_c3d4, bigEndian: bigEndian, link: 101)
                + record(bigEndian: bigEndian, sec: 1_700_000_000, frac: 250_000, data: Self.raw6, wire: 1000)
            let microFile = TemporaryFile(micro, suffix: ".pcap")
            let f = try readAll(microFile)
            #expect(f.count == 1)
            #expect(f[0].link == .raw && f[0].wire == 1000 && f[0].bytes == Self.raw6)
            #expect(f[0].ns == 1_700_000_000_250_000_000)
            // Nanosecond pcap.
            let nano = header(magic: 0xa1b2_3c4d, bigEndian: bigEndian, link: 1)
                + record(bigEndian: bigEndian, sec: 1_700_000_000, frac: 123_456_789, data: Self.udp4)
            let nanoFile = TemporaryFile(nano, suffix: ".pcap")
            let g = try readAll(nanoFile)
            #expect(g.count == 1 && g[0].link == .ethernet && g[0].ns == 1_700_000_000_123_456_789)
        }
        // Cut inside the second record header.
        let cut = header(magic: 0xa1b2_c3d4, bigEndian: false, link: 1)
            + record(bigEndian: false, sec: 1, frac: 0, data: Self.udp4) + [1, 2, 3, 4, 5, 6, 7, 8]
        let file = TemporaryFile(cut, suffix: ".pcap")
        let reader = try withExtendedLifetime(file) { try PcapReader(path: file.path) }
        #expect(try reader.next() != nil)
        #expect(throws: PcapError.self) { _ = try reader.next() }
        #expect(reader.framesRead == 1)
    }

    @Test func unreadableFilesGiveClearErrors() throws {
        #expect {
            _ = try PcapReader(path: "/nonexistent/capture.pcap")
        } throws: { error in
            guard case .cannotOpen(_, let reason) = error as? PcapError else { return false }
            return reason.contains("No such file")
        }
        #expect { _ = try PcapReader(path: NSTemporaryDirectory()) } throws: { error in
            if case .cannotOpen = error as? PcapError { return true }
            return false
        }
        let notCaptures: [[UInt8]] = [
            [],                                    // empty
            Array("hello, world\n".utf8),          // text
            [0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x99, 0x99, 0x99, 0x99],  // pcapng magic, bad byte-order magic
            [0x0a, 0x0d, 0x0d, 0x0a],              // pcapng magic only
        ]
        for bytes in notCaptures {
            let f = TemporaryFile(bytes)
            #expect {
                _ = try withExtendedLifetime(f) { try PcapReader(path: f.path) }
            } throws: { error in
                guard case .notACapture(let path, _) = error as? PcapError else { return false }
                return path == f.path
            }
        }
        let description = PcapError.cannotOpen(path: "x.pcap", reason: "No such file or directory").description
        #expect(description == "x.pcap: cannot open: No such file or directory")
    }
}

@Suite struct PcapTraceTests {
    @Test func traceHoldsEveryFrame() throws {
        let path = OracleAgreementTests.packageRoot.appendingPathComponent("Tests/Fixtures/captures/multi-link.pcapng").path
        let expected = try readAll(path)
        let trace = try PcapTrace(path: path)
        #expect(trace.count == expected.count)
        #expect(trace.byteCount == expected.reduce(0) { $0 + $1.bytes.count })
        for i in 0..<trace.count {
            let f = trace[i]
            #expect(f.index == i + 1 && f.linkType == expected[i].link && f.wireLength == expected[i].wire)
            #expect(Array(f.bytes) == expected[i].bytes)
        }
        #expect(try PcapTrace(path: path, limit: 5).count == 5)
    }

    @Test func captureInMemoryReadsLikeTheFile() throws {
        let bytes = try #require(readFile(loopbackSamplePath))
        let fromFile = try PcapReader(path: loopbackSamplePath)
        let fromMemory = try PcapReader(bytes: bytes, name: "sample")
        #expect(fromMemory.format == .pcap && fromMemory.linkType == fromFile.linkType)
        var frames = 0
        while let a = try fromFile.next() {
            let b = try #require(try fromMemory.next(), "memory reader ended early at \(frames)")
            #expect(a.index == b.index && a.wireLength == b.wireLength
                    && a.timestampNanoseconds == b.timestampNanoseconds && Array(a.bytes) == Array(b.bytes))
            frames += 1
        }
        #expect(try fromMemory.next() == nil)
        #expect(frames == 112)
    }

    @Test func bytesThatAreNoCaptureAreRejected() throws {
        #expect(throws: PcapError.self) { try PcapReader(bytes: Array("not a capture".utf8), name: "junk") }
        #expect(throws: PcapError.self) { try PcapReader(bytes: [], name: "empty") }
        // pcapng in memory goes through the project's own reader.
        let ng = try #require(readFile(packageRoot + "/Tests/Fixtures/captures/multi-link.pcapng"))
        let r = try PcapReader(bytes: ng, name: "multi-link")
        #expect(r.format == .pcapng)
        var n = 0
        while try r.next() != nil { n += 1 }
        #expect(n > 0)
    }
}
