import FastDemux
import NetStack
import TestSupport

/// Hand-made fragments, written byte by byte (independently of the parser
/// and of the reassembly code), and a harness that feeds them through
/// parseNetwork into a ReassemblyTable.
enum Frag {
    /// A UDP datagram over IPv4 or IPv6 (bare IP, no link header) with a
    /// correct UDP checksum.
    static func udpDatagram(v6: Bool, payload: [UInt8], sport: UInt16 = 4000, dport: UInt16 = 5000) -> [UInt8] {
        let udp = TestPacket.udp(sport: sport, dport: dport, payload: payload)
        let ip = v6 ? TestPacket.ipv6(next: 17, payload: udp) : TestPacket.ipv4(proto: 17, fragment: 0, payload: udp)
        return TestPacket.withTransportChecksum(ip, l4: v6 ? 40 : 20, proto: 17)
    }

    /// One IPv4 fragment (Ethernet frame) carrying `data` at byte `offset`.
    static func v4(id: UInt16 = 0x4242, offset: Int, more: Bool, proto: UInt8 = 17, data: [UInt8],
                   src: [UInt8] = TestPacket.v4a, dst: [UInt8] = TestPacket.v4b) -> [UInt8] {
        precondition(offset % 8 == 0)
        var h: [UInt8] = [0x45, 0] + TestPacket.be16(UInt16(20 + data.count)) + TestPacket.be16(id)
            + TestPacket.be16(UInt16(offset / 8) | (more ? 0x2000 : 0)) + [64, proto, 0, 0] + src + dst
        let c = TestPacket.checksum(h)
        h[10] = UInt8(c >> 8)
        h[11] = UInt8(c & 0xff)
        return TestPacket.ethernet(type: 0x0800, payload: h + data)
    }

    /// One IPv6 fragment (Ethernet frame): IPv6 header, optional
    /// unfragmentable extension headers, Fragment header, data.
    static func v6(id: UInt32 = 0x0bad_cafe, offset: Int, more: Bool, next: UInt8 = 17, data: [UInt8],
                   unfragmentable: [UInt8] = [], firstNext: UInt8 = 44) -> [UInt8] {
        let fh: [UInt8] = [next, 0] + TestPacket.be16(UInt16(offset) | (more ? 1 : 0)) + TestPacket.be32(id)
        let ip = TestPacket.ipv6(next: unfragmentable.isEmpty ? 44 : firstNext, payload: unfragmentable + fh + data)
        return TestPacket.ethernet(type: 0x86DD, payload: ip)
    }

    /// Splits a bare IP datagram into fragments the way Linux's
    /// ip_fragment / ip6_fragment do at `mtu`: IPv4 (mtu - 20) & ~7 data
    /// bytes per fragment, IPv6 (mtu - 40 - 8) & ~7.
    static func split(_ datagram: [UInt8], mtu: Int, id: UInt32 = 0x4242) -> [[UInt8]] {
        let v6 = datagram[0] >> 4 == 6
        let header = v6 ? 40 : 20
        let body = Array(datagram[header...])
        let chunk = v6 ? (mtu - 48) & ~7 : (mtu - 20) & ~7
        var out: [[UInt8]] = []
        var o = 0
        while o < body.count {
            let n = min(chunk, body.count - o)
            let data = Array(body[o..<(o + n)])
            let more = o + n < body.count
            out.append(v6 ? Frag.v6(id: id, offset: o, more: more, next: datagram[6], data: data)
                          : Frag.v4(id: UInt16(truncatingIfNeeded: id), offset: o, more: more, proto: datagram[9],
                                    data: data))
            o += n
        }
        return out
    }

    static func bytes(_ n: Int, seed: UInt8 = 7) -> [UInt8] {
        (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
    }
}

/// Pools, a table and a parser; feeds frames in.
final class Harness {
    let pool: PacketPool
    let datagrams: PacketPool
    let table: ReassemblyTable
    let parser = PacketParser()
    let t0 = ContinuousClock.now

    init(configuration: ReassemblyConfiguration = ReassemblyConfiguration(maxQueues: 16, maxFragments: 128),
         poolBuffers: Int = 512, datagramBufferSize: Int = ReassemblyTable.recommendedDatagramBufferSize) {
        pool = PacketPool(bufferCount: poolBuffers, bufferSize: 2048, batchSize: 8)
        datagrams = PacketPool(bufferCount: 4, bufferSize: datagramBufferSize, batchSize: 1)
        table = ReassemblyTable(configuration: configuration, fragmentPool: pool, datagramPool: datagrams)
    }

    func at(_ seconds: Double) -> ContinuousClock.Instant { t0 + .milliseconds(Int(seconds * 1000)) }

    /// Parses `frame` from a pool buffer and inserts it.
    func insert(_ frame: [UInt8], at seconds: Double = 0) -> ReassemblyResult {
        let p = frame.withUnsafeBytes { pool.allocate(copying: $0) }!
        guard case .network(let info) = parser.parseNetwork(pool.bytes(p), linkType: .ethernet) else {
            preconditionFailure("not a fragment")
        }
        return table.insert(p, info, now: at(seconds))
    }

    /// Inserts every frame; returns the completed datagram's bytes, if one
    /// completed (the buffer is freed).
    func feed(_ frames: [[UInt8]], at seconds: Double = 0) -> [UInt8]? {
        var result: [UInt8]? = nil
        for f in frames {
            if case .complete(let d) = insert(f, at: seconds) {
                result = Array(datagrams.bytes(d.packet))
                datagrams.free(d.packet)
            }
        }
        return result
    }

    /// Buffers of the fragment pool not free (held by the table or lost);
    /// counts the table's cache as free.
    var buffersHeld: Int { table.statistics.fragmentsQueued }
}
