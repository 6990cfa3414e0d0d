import FastDemux
import Synchronization

/// The comparison's packets: flow keys and per-input packet words.
/// Immutable after init (any thread reads it).
final class OrganizationTraffic: @unchecked Sendable {
    // @unchecked Sendable: written in init only.
    static let payload = 64
    static let local = InetEndpoint(IPAddress(ipv4: 0x0a00_0001), 80)
    let flowCount: Int
    let keys: UnsafeMutablePointer<FlowKey>
    /// Per input thread: its packet words.
    let words: [UnsafeMutablePointer<PacketRef>]
    let counts: [Int]
    /// Segments generated per flow.
    let sent: [Int]

    init(flows: Int, inputs: Int, packets: Int, seed: UInt64) {
        flowCount = flows
        keys = .allocate(capacity: flows)
        for i in 0..<flows { (keys + i).initialize(to: Self.key(i)) }
        var r = Xoshiro256StarStar(seed: seed)
        var sent = [Int](repeating: 0, count: flows)
        var words: [UnsafeMutablePointer<PacketRef>] = []
        var counts: [Int] = []
        for t in 0..<inputs {
            let mine = Array(stride(from: t, to: flows, by: inputs))
            let n = mine.isEmpty ? 0 : packets / inputs
            let w = UnsafeMutablePointer<PacketRef>.allocate(capacity: max(1, n))
            for j in 0..<n {
                let f = mine[Int(r.below(UInt32(mine.count)))]
                w[j] = PacketRef(word: (UInt(f) << 32 | UInt(sent[f])) &+ 1)
                sent[f] += 1
            }
            words.append(w)
            counts.append(n)
        }
        self.words = words
        self.counts = counts
        self.sent = sent
    }

    deinit {
        keys.deallocate()
        for w in words { w.deallocate() }
    }

    static func remote(_ i: Int) -> InetEndpoint {
        InetEndpoint(IPAddress(ipv4: 0x6440_0000 &+ UInt32(i)), UInt16(1024 + i % 60_000))
    }

    static func key(_ i: Int) -> FlowKey { .connected(.tcp, local: local, remote: remote(i)) }

    @inline(__always)
    static func decode(_ w: PacketRef) -> (flow: Int, n: UInt32) {
        let v = w.word &- 1
        return (Int(v >> 32), UInt32(truncatingIfNeeded: v))
    }

    var decoder: PacketDecoder {
        return { [self] w in
            let (f, n) = Self.decode(w)
            return DemuxPacket(packet: w, key: self.keys[f],
                               tcp: TCPSegmentInfo(sequenceNumber: n &* UInt32(Self.payload), acknowledgmentNumber: 0,
                                                   flags: [.psh, .ack], window: 0xffff),
                               payloadLength: Self.payload)
        }
    }
}

/// The flow-control state: per flow, the number of segments the reader
/// has taken.
final class FlowWindow: @unchecked Sendable {
    // @unchecked Sendable: raw memory of atomics (each flow's count is
    // stored by the reader only, loaded by the sources).
    let taken: UnsafeMutablePointer<Atomic<Int>>
    let count: Int

    init(flows: Int) {
        count = flows
        taken = .allocate(capacity: flows)
        for i in 0..<flows { (taken + i).initialize(to: Atomic(0)) }
    }

    deinit {
        taken.deinitialize(count: count)
        taken.deallocate()
    }

    /// Source side: whether segment `segment` of `flow` fits in the window.
    @inline(__always)
    func hasRoom(flow: Int, segment: Int, window: Int) -> Bool {
        // Relaxed: only a pacing decision; no data is read on its strength.
        segment - taken[flow].load(ordering: .relaxed) < window
    }

    /// Source side: waits (spinning, then yielding) until it fits.
    func waitForRoom(flow: Int, segment: Int, window: Int) {
        retryUntilSuccess { hasRoom(flow: flow, segment: segment, window: window) }
    }

    /// Reader side: the reader has taken segments up to `segment` of `flow`.
    @inline(__always)
    func didTake(flow: Int, upTo segment: Int) {
        // Relaxed: a pacing hint (see `hasRoom`).
        taken[flow].store(segment + 1, ordering: .relaxed)
    }
}


/// An input thread of the comparison: offers its packet words in bursts of
/// 32 through `input`, holding back a controlled flow's segment while it
/// does not fit in the flow's window (handing over the partial burst first:
/// the reader may be waiting for it). Returns the statistics of `input`.
func offerTraffic(_ traffic: OrganizationTraffic, thread t: Int, through input: any OrganizationInput,
                  window: FlowWindow, limit: Int, controlledFlows: Int) -> OrganizationStats {
    let burst = UnsafeMutablePointer<DemuxPacket>.allocate(capacity: 32)
    defer { burst.deallocate() }
    let words = traffic.words[t]
    let count = traffic.counts[t]
    let decode = traffic.decoder
    input.begin()
    var i = 0, bursts = 0
    while i < count {
        var m = 0
        let end = min(count, i + 32)
        while i < end {
            let w = words[i]
            if limit != Int.max {
                let (f, seq) = OrganizationTraffic.decode(w)
                if f < controlledFlows && !window.hasRoom(flow: f, segment: Int(seq), window: limit) {
                    if m > 0 { input.deliver(UnsafeBufferPointer(start: burst, count: m)) }
                    m = 0
                    input.quiescent()
                    window.waitForRoom(flow: f, segment: Int(seq), window: limit)
                }
            }
            burst[m] = decode(w)
            m += 1
            i += 1
        }
        if m > 0 { input.deliver(UnsafeBufferPointer(start: burst, count: m)) }
        bursts &+= 1
        if bursts & 7 == 0 { input.quiescent() }
    }
    return input.end()
}
