import FastDemux

/// The soak's synthetic traffic, written frame by frame into pool buffers
/// (no allocation per frame), from a seeded ``Xoshiro256StarStar``:
///
/// - 80% steady flows: ``SoakConfiguration/steadyFlows`` UDP and TCP flows
///   to 10.0.0.1 (ports 53 and 80), TCP with advancing sequence numbers;
///   their per-flow sockets stay open.
/// - 10% short-lived flows to 10.0.0.2:443/udp: a window of 64 source
///   endpoints that slides by one every 4,096 frames, so flows keep
///   starting, go idle and expire.
/// - 1% flood: every frame a new source endpoint (to 10.0.0.3:9/udp), the
///   "many distinct flows" attack: it fills the flow socket cap, and the
///   refusals are counted.
/// - 9% hostile: truncated IPv4 headers, fragments, a bad IP
///   version, ICMP, a bad UDP length (all dropped by the parser under their
///   reasons), and UDP/TCP to ports on 10.0.0.9 that the churn thread binds
///   and closes all the time (`no_socket` unless bound at that moment).
///
/// Owned by the input thread.
struct SoakTraffic {
    enum Kind { case steady, shortLived, flood, hostile }

    private var rng: Xoshiro256StarStar
    private let steady: [FlowKey]
    private var steadySequence: [UInt32]
    private var frames = 0
    private var windowBase = 0
    private var floodNext = 0

    /// Ports on 10.0.0.9 the churn thread binds: UDP 20000 + j, TCP 30000 + j.
    static let churnUDPBase: UInt16 = 20000
    static let churnTCPBase: UInt16 = 30000

    init(steadyFlows: Int, seed: UInt64) {
        rng = Xoshiro256StarStar(seed: seed)
        var keys: [FlowKey] = []
        for i in 0..<steadyFlows {
            let tcp = i % 2 == 1
            keys.append(FlowKey(transport: tcp ? .tcp : .udp,
                                source: IPAddress(ipv4: 0x6440_0000 | UInt32(i >> 8) << 8 | UInt32(i & 0xff)),
                                sourcePort: UInt16(1024 + i % 60000),
                                destination: IPAddress(ipv4: 0x0a00_0001), destinationPort: tcp ? 80 : 53))
        }
        steady = keys
        steadySequence = (0..<steadyFlows).map { UInt32(truncatingIfNeeded: $0 &* 7919) }
    }

    /// Writes the next frame into `buffer` (at least 256 bytes); returns
    /// its length and whether its flow gets a per-flow socket.
    mutating func next(into buffer: UnsafeMutableRawBufferPointer) -> (length: Int, admit: Bool) {
        frames += 1
        if frames & 4095 == 0 { windowBase += 1 }
        let r = rng.below(100)
        let payload = 18 + Int(rng.below(64))
        if r < 80 {
            let i = Int(rng.below(UInt32(steady.count)))
            let key = steady[i]
            var tcp: TCPSegmentInfo?
            if key.transport == .tcp {
                tcp = TCPSegmentInfo(sequenceNumber: steadySequence[i], acknowledgmentNumber: 1,
                                     flags: [.psh, .ack], window: 0xffff)
                steadySequence[i] &+= UInt32(payload)
            }
            return (SyntheticFrame.write(into: buffer, flow: key, tcp: tcp, payloadLength: payload), true)
        }
        if r < 90 {
            let id = windowBase + Int(rng.below(64))
            let key = FlowKey(transport: .udp, source: IPAddress(ipv4: 0xc633_6400 | UInt32(1 + id % 250)),
                              sourcePort: UInt16(10000 + (id / 250) % 50000),
                              destination: IPAddress(ipv4: 0x0a00_0002), destinationPort: 443)
            return (SyntheticFrame.write(into: buffer, flow: key, payloadLength: payload), true)
        }
        if r < 91 {
            floodNext = (floodNext + 1) & 0xff_ffff
            let key = FlowKey(transport: .udp, source: IPAddress(ipv4: 0xcb00_7100 | UInt32(floodNext >> 16)),
                              sourcePort: UInt16(truncatingIfNeeded: floodNext) | 1,
                              destination: IPAddress(ipv4: 0x0a00_0003), destinationPort: 9)
            return (SyntheticFrame.write(into: buffer, flow: key, payloadLength: payload), true)
        }
        return (hostile(into: buffer, payload: payload), false)
    }

    private mutating func hostile(into buffer: UnsafeMutableRawBufferPointer, payload: Int) -> Int {
        let kind = rng.below(7)
        let tcp = kind == 6
        let key = FlowKey(transport: tcp ? .tcp : .udp, source: IPAddress(ipv4: 0xc000_0200 | rng.below(256)),
                          sourcePort: UInt16(1024 + rng.below(60000)),
                          destination: IPAddress(ipv4: 0x0a00_0009),
                          destinationPort: tcp ? Self.churnTCPBase + UInt16(rng.below(64))
                                               : Self.churnUDPBase + UInt16(rng.below(128)))
        let n = SyntheticFrame.write(into: buffer, flow: key, payloadLength: payload)
        let ip = buffer.baseAddress! + 14
        switch kind {
        case 0: return 14 + 10                                         // truncated_ipv4
        case 1: ip.storeBytes(of: UInt16(0x0005).bigEndian, toByteOffset: 6, as: UInt16.self)  // ipv4_fragment
        case 2: ip.storeBytes(of: UInt8(0x65), as: UInt8.self)         // bad_ipv4_version
        case 3: ip.storeBytes(of: UInt8(1), toByteOffset: 9, as: UInt8.self)  // ICMP: not_tcp_udp
        case 4: ip.storeBytes(of: UInt16(4).bigEndian, toByteOffset: 24, as: UInt16.self)  // bad_udp_length
        default: break                                                 // a churn port (UDP or TCP)
        }
        if kind == 1 || kind == 3 {
            // The parser checks the IPv4 header checksum before the fields
            // changed above (as ip_rcv_core does): make it right again, so
            // that the frame reaches the rule it is meant for.
            ip.storeBytes(of: UInt16(0), toByteOffset: 10, as: UInt16.self)
            let sum = SyntheticFrame.ipv4HeaderChecksum(UnsafeRawBufferPointer(start: ip, count: 20))
            ip.storeBytes(of: sum.bigEndian, toByteOffset: 10, as: UInt16.self)
        }
        return n
    }
}
