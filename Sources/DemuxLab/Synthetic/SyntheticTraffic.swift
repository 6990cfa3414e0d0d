import FastDemux
import PacketIO
/// xoshiro256** seeded through splitmix64 (Blackman and Vigna): the
/// generator of the C peer harness, so the same seed gives the same frames.
public struct Xoshiro256StarStar: Sendable {
    @usableFromInline var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    public init(seed: UInt64) {
        var x = seed
        func splitmix(_ x: inout UInt64) -> UInt64 {
            x &+= 0x9e37_79b9_7f4a_7c15
            var z = x
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        s0 = splitmix(&x)
        s1 = splitmix(&x)
        s2 = splitmix(&x)
        s3 = splitmix(&x)
    }

    @inlinable
    static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    @inlinable
    public mutating func next() -> UInt64 {
        let result = Self.rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = Self.rotl(s3, 45)
        return result
    }

    /// Uniform in `0..<n` (Lemire's multiply-shift on the high 32 bits).
    @inlinable
    public mutating func below(_ n: UInt32) -> UInt32 {
        UInt32(truncatingIfNeeded: ((next() >> 32) &* UInt64(n)) >> 32)
    }

    /// Uniform in `[0, 1)`.
    public mutating func unit() -> Double {
        Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }
}

/// The frame set of the "demux" benchmark, built exactly as the C peer
/// harness builds it (its `build_frames`), from the same seed:
/// 4,096 flows (2,048 connected UDP, 2,048 established TCP whose local ports
/// are the listening ports), 16 TCP listening ports and 16 UDP wildcard
/// ports receiving the 1% of frames that match no flow, Zipf(s = 1.0) flow
/// popularity through a fixed shuffle, 64..128-byte frames at a 128-byte
/// stride in one slab, TCP sequence numbers advancing by the payload.
///
/// `flowCount` scales the set (`fastdemux bench demux --flows N`, the C
/// peer's `--flows N`): N flows, the first N/2 UDP, Zipf(s = 1.0) over N
/// ranks, everything else as above. With the default 4,096 the frames are
/// byte for byte those of the defined workload.
///
/// Socket numbering: flows are sockets `0..<flowCount`; listening TCP
/// socket j is `flowCount + j`, wildcard UDP socket j is
/// `flowCount + 16 + j`.
///
/// Immutable after `init`; any thread may read it.
public final class DemuxBenchmarkTraffic: @unchecked Sendable {
    // @unchecked Sendable: all storage is written in init and read-only after.
    /// The sizes of the defined workload (the default set); a set built
    /// with another flow count has its own ``flowCount``,
    /// ``udpFlowCount`` and ``socketCount``.
    public static let flowCount = 4096
    public static let udpFlowCount = flowCount / 2
    public static let listenCount = 16
    public static let wildcardCount = 16
    public static let socketCount = flowCount + listenCount + wildcardCount
    /// The largest flow count a set may have (sockets are numbered in 32 bits).
    public static let maxFlowCount = 1 << 24
    public static let stride = 128
    public static let defaultFrameCount = 1 << 20
    public static let seed: UInt64 = 0xdead_beef_0001

    /// A flow in host byte order.
    public struct Flow: Hashable, Sendable {
        public var saddr: UInt32, daddr: UInt32, sport: UInt16, dport: UInt16, proto: UInt8
        public var key: FlowKey {
            FlowKey(transport: proto == 6 ? .tcp : .udp, source: IPAddress(ipv4: saddr), sourcePort: sport,
                    destination: IPAddress(ipv4: daddr), destinationPort: dport)
        }
    }

    public let frameCount: Int
    /// Connected flows (one socket each): the first half UDP, the rest TCP.
    public let flowCount: Int
    public let udpFlowCount: Int
    /// Flows plus the listening and wildcard sockets.
    public let socketCount: Int
    /// `frameCount * stride` bytes; frame i at `i * stride`.
    public let frames: UnsafeMutableRawPointer
    public let lengths: UnsafeMutablePointer<UInt8>
    /// The socket each frame must reach.
    public let truth: UnsafeMutablePointer<UInt32>
    /// TCP: sequence space each socket's flow consumes per pass (for
    /// replaying the set as if re-stamped; 0 for non-TCP-flow sockets).
    public let sequenceAdvance: UnsafeMutablePointer<UInt32>
    /// Frames per socket in one pass.
    public let perSocketPerPass: [Int]
    public let flows: [Flow]
    public let listenPorts: [UInt16]
    public let wildcardPorts: [UInt16]
    /// Initial sequence number of each TCP flow (index = flow).
    public let initialSequence: [UInt32]
    public static let localAddresses: [UInt32] = [0x0a00_0001, 0x0a00_0002, 0x0a00_0003, 0x0a00_0004]

    public init(frameCount: Int = DemuxBenchmarkTraffic.defaultFrameCount,
                flowCount: Int = DemuxBenchmarkTraffic.flowCount) {
        precondition(frameCount >= 1 && frameCount <= 1 << 20)
        precondition(flowCount >= 2 && flowCount <= Self.maxFlowCount)
        self.frameCount = frameCount
        // `flowCount` here is the parameter; these locals shadow the
        // properties of the same names for the rest of init.
        let udpFlowCount = flowCount / 2
        let socketCount = flowCount + Self.listenCount + Self.wildcardCount
        self.flowCount = flowCount
        self.udpFlowCount = udpFlowCount
        self.socketCount = socketCount
        var r = Xoshiro256StarStar(seed: Self.seed)
        let local = Self.localAddresses
        var lports: [UInt16] = []
        for _ in 0..<Self.listenCount {
            var p: UInt16
            repeat { p = UInt16(1 + r.below(1023)) } while lports.contains(p)
            lports.append(p)
        }
        var wports: [UInt16] = []
        for i in 0..<Self.wildcardCount { wports.append(UInt16(5000 + 61 * UInt32(i) + r.below(61))) }
        var flows: [Flow] = []
        flows.reserveCapacity(flowCount)
        var flowSet = Set<Flow>(minimumCapacity: flowCount)
        for i in 0..<flowCount {
            var t: Flow
            repeat {
                let saddr = 0x6440_0000 | r.below(1 << 22)
                let daddr = local[Int(r.below(4))]
                let sport = UInt16(1024 + r.below(64512))
                if i < udpFlowCount {
                    t = Flow(saddr: saddr, daddr: daddr, sport: sport, dport: UInt16(20000 + r.below(40000)), proto: 17)
                } else {
                    t = Flow(saddr: saddr, daddr: daddr, sport: sport, dport: lports[Int(r.below(16))], proto: 6)
                }
            } while flowSet.contains(t)
            flows.append(t)
            flowSet.insert(t)
        }
        // Zipf(s = 1) over ranks; rank -> flow through a fixed shuffle.
        var cdf = [Double](repeating: 0, count: flowCount)
        var sum = 0.0
        for k in 0..<flowCount {
            sum += 1.0 / Double(k + 1)
            cdf[k] = sum
        }
        for k in 0..<flowCount { cdf[k] /= sum }
        var perm = Array(0..<flowCount)
        for k in Swift.stride(from: flowCount - 1, to: 0, by: -1) {
            let j = Int(r.below(UInt32(k + 1)))
            perm.swapAt(k, j)
        }
        var seq = [UInt32](repeating: 0, count: flowCount)
        var ackn = [UInt32](repeating: 0, count: flowCount)
        for k in 0..<flowCount {
            seq[k] = UInt32(truncatingIfNeeded: r.next())
            ackn[k] = UInt32(truncatingIfNeeded: r.next())
        }
        initialSequence = seq

        frames = .allocate(byteCount: frameCount * Self.stride, alignment: 1 << 21)
        frames.initializeMemory(as: UInt8.self, repeating: 0, count: frameCount * Self.stride)
        lengths = .allocate(capacity: frameCount)
        truth = .allocate(capacity: frameCount)
        sequenceAdvance = .allocate(capacity: socketCount)
        sequenceAdvance.initialize(repeating: 0, count: socketCount)
        var perSocket = [Int](repeating: 0, count: socketCount)
        for i in 0..<frameCount {
            let len = 64 + Int(r.below(65))
            var t: Flow
            var sock: Int
            var flow = flowCount
            var syn = false
            if r.unit() < 0.01 {
                let j = Int(r.below(UInt32(Self.listenCount + Self.wildcardCount)))
                repeat {
                    let saddr = 0xc612_0000 | r.below(1 << 17)
                    let daddr = local[Int(r.below(4))]
                    let sport = UInt16(1024 + r.below(64512))
                    t = j < Self.listenCount
                        ? Flow(saddr: saddr, daddr: daddr, sport: sport, dport: lports[j], proto: 6)
                        : Flow(saddr: saddr, daddr: daddr, sport: sport, dport: wports[j - Self.listenCount], proto: 17)
                } while flowSet.contains(t)
                sock = flowCount + j
                syn = t.proto == 6
            } else {
                let u = r.unit()
                var lo = 0, hi = flowCount - 1
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if cdf[mid] < u { lo = mid + 1 } else { hi = mid }
                }
                flow = perm[lo]
                t = flows[flow]
                sock = flow
            }
            let l4len = t.proto == 6 ? 20 : 8
            let payload = len - 14 - 20 - l4len
            var tcp: TCPSegmentInfo?
            if t.proto == 6 {
                if flow < flowCount {
                    tcp = TCPSegmentInfo(sequenceNumber: seq[flow], acknowledgmentNumber: ackn[flow],
                                         flags: [.psh, .ack], window: 0xffff)
                    seq[flow] &+= UInt32(payload)
                    sequenceAdvance[flow] &+= UInt32(payload)
                } else {
                    tcp = TCPSegmentInfo(sequenceNumber: UInt32(truncatingIfNeeded: r.next()), acknowledgmentNumber: 0,
                                         flags: syn ? .syn : [.psh, .ack], window: 0xffff)
                }
            }
            let buf = UnsafeMutableRawBufferPointer(start: frames + i * Self.stride, count: Self.stride)
            SyntheticFrame.write(into: buf, flow: t.key, tcp: tcp, payloadLength: payload,
                                 ipID: UInt16(truncatingIfNeeded: i)) { b in UInt8(truncatingIfNeeded: i + b) }
            lengths[i] = UInt8(len - 64)
            truth[i] = UInt32(sock)
            perSocket[sock] += 1
        }
        self.flows = flows
        listenPorts = lports
        wildcardPorts = wports
        perSocketPerPass = perSocket
    }

    deinit {
        frames.deallocate()
        lengths.deallocate()
        truth.deallocate()
        sequenceAdvance.deallocate()
    }

    /// Frame `i`'s bytes.
    @inlinable
    public func frame(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: frames + i * Self.stride, count: 64 + Int(lengths[i]))
    }

    /// The packet word of frame `i` in pass `pass` (< 16): `(i << 4 | pass) + 1`.
    @inlinable
    public static func packetWord(frame i: Int, pass: Int) -> UInt { UInt(i << 4 | pass) &+ 1 }

    /// Decodes a packet word: (frame index, pass).
    @inlinable
    public static func decode(_ word: UInt) -> (frame: Int, pass: Int) {
        let w = Int(word &- 1)
        return (w >> 4, w & 15)
    }
}
