/// The IPv4 header this stack sends (RFC 791 §3.1): 20 bytes, no options.
///
/// Concurrency: every member is a pure function of its arguments (or a
/// constant); call it from any thread. Nothing allocates.
public enum IPv4Output {
    /// Header length: the stack sends no options (IHL 5).
    public static let headerLength = 20
    /// Default time to live: Linux's net.ipv4.ip_default_ttl (RFC 1700's
    /// recommended 64).
    public static let defaultTTL: UInt8 = 64
    /// The smallest MTU every IPv4 link must carry (RFC 791 §3.2).
    public static let minimumMTU = 68
    /// The largest datagram the 16-bit total length field can describe.
    public static let maximumDatagramLength = 65_535

    /// Writes a 20-byte IPv4 header at `offset` and fills in its header
    /// checksum (RFC 791 §3.1, RFC 1071).
    ///
    /// - Parameters:
    ///   - buffer: where to write; `offset + 20` bytes must fit (checked by
    ///     a precondition).
    ///   - offset: the header's offset in `buffer`.
    ///   - source: the source address (IPv4).
    ///   - destination: the destination address (IPv4).
    ///   - protocol: the protocol number of the payload (17 UDP, 1 ICMP).
    ///   - totalLength: header plus payload of this packet (or fragment).
    ///   - identification: the Identification field (see
    ///     ``IPIdentificationGenerator``; 0 is fine for an atomic datagram,
    ///     RFC 6864 §4.1).
    ///   - dontFragment: the DF flag.
    ///   - moreFragments: the MF flag (set on every fragment but the last).
    ///   - fragmentOffset: this fragment's offset in bytes in the original
    ///     payload; a multiple of 8 (RFC 791 §3.1 counts it in 8-byte units).
    ///   - ttl: time to live.
    public static func writeHeader(
        into buffer: UnsafeMutableRawBufferPointer, at offset: Int = 0,
        source: IPAddress, destination: IPAddress, protocol: UInt8, totalLength: Int,
        identification: UInt16, dontFragment: Bool, moreFragments: Bool = false,
        fragmentOffset: Int = 0, ttl: UInt8 = defaultTTL
    ) {
        precondition(offset >= 0 && buffer.count - offset >= headerLength, "IPv4 header does not fit")
        precondition(totalLength >= headerLength && totalLength <= maximumDatagramLength)
        precondition(fragmentOffset & 7 == 0 && fragmentOffset >> 3 <= 0x1fff)
        precondition(source.family == .ipv4 && destination.family == .ipv4)
        let flags: UInt16 = (dontFragment ? 0x4000 : 0) | (moreFragments ? 0x2000 : 0)
        buffer.put32(0x4500_0000 | UInt32(totalLength), at: offset)  // version 4, IHL 5, TOS 0
        buffer.put32(UInt32(identification) << 16 | UInt32(flags | UInt16(fragmentOffset >> 3)),
                     at: offset + 4)
        buffer.put32(UInt32(ttl) << 24 | UInt32(`protocol`) << 16, at: offset + 8)  // checksum 0 for now
        buffer.put(source, at: offset + 12)
        buffer.put(destination, at: offset + 16)
        let sum = Checksum.sum(UnsafeRawBufferPointer(buffer), from: offset, count: headerLength)
        buffer.put16(Checksum.fold(sum), at: offset + 10)
    }
}

/// The IPv6 header this stack sends (RFC 8200 §3) and its Fragment header
/// (RFC 8200 §4.5). No other extension headers are sent.
///
/// Concurrency: every member is a pure function of its arguments (or a
/// constant); call it from any thread. Nothing allocates.
public enum IPv6Output {
    /// The fixed header's length.
    public static let headerLength = 40
    /// The Fragment header's length.
    public static let fragmentHeaderLength = 8
    /// Default hop limit: Linux's net.ipv6.conf.*.hop_limit.
    public static let defaultHopLimit: UInt8 = 64
    /// The minimum link MTU (RFC 8200 §5).
    public static let minimumMTU = 1280
    /// The largest payload the 16-bit payload length describes (no
    /// jumbograms, RFC 2675, are sent).
    public static let maximumPayloadLength = 65_535

    /// Writes the 40-byte IPv6 header at `offset` (RFC 8200 §3).
    ///
    /// - Parameters:
    ///   - buffer: where to write; `offset + 40` bytes must fit (checked by a
    ///     precondition).
    ///   - offset: the header's offset in `buffer`.
    ///   - source: the source address (IPv6).
    ///   - destination: the destination address (IPv6).
    ///   - nextHeader: the header after this one (17 UDP, 58 ICMPv6, 44 Fragment).
    ///   - payloadLength: the bytes after the fixed header.
    ///   - flowLabel: the 20-bit flow label; see
    ///     ``flowLabel(source:destination:nextHeader:sourcePort:destinationPort:seed:)``.
    ///   - hopLimit: the hop limit.
    public static func writeHeader(
        into buffer: UnsafeMutableRawBufferPointer, at offset: Int = 0,
        source: IPAddress, destination: IPAddress, nextHeader: UInt8, payloadLength: Int,
        flowLabel: UInt32 = 0, hopLimit: UInt8 = defaultHopLimit
    ) {
        precondition(offset >= 0 && buffer.count - offset >= headerLength, "IPv6 header does not fit")
        precondition(payloadLength >= 0 && payloadLength <= maximumPayloadLength)
        precondition(source.family == .ipv6 && destination.family == .ipv6)
        // Version 6, traffic class 0, the flow label's 20 bits.
        buffer.put32(0x6000_0000 | (flowLabel & 0xfffff), at: offset)
        buffer.put32(UInt32(payloadLength) << 16 | UInt32(nextHeader) << 8 | UInt32(hopLimit), at: offset + 4)
        buffer.put(source, at: offset + 8)
        buffer.put(destination, at: offset + 24)
    }

    /// Writes an 8-byte Fragment header at `offset` (RFC 8200 §4.5).
    ///
    /// - Parameters:
    ///   - buffer: where to write; `offset + 8` bytes must fit.
    ///   - offset: the header's offset in `buffer`.
    ///   - nextHeader: the first header of the fragmentable part (17, 58).
    ///   - fragmentOffset: the fragment's offset in bytes in the
    ///     fragmentable part; a multiple of 8.
    ///   - moreFragments: the M flag (every fragment but the last).
    ///   - identification: the datagram's 32-bit Identification.
    public static func writeFragmentHeader(
        into buffer: UnsafeMutableRawBufferPointer, at offset: Int, nextHeader: UInt8,
        fragmentOffset: Int, moreFragments: Bool, identification: UInt32
    ) {
        precondition(offset >= 0 && buffer.count - offset >= fragmentHeaderLength)
        precondition(fragmentOffset & 7 == 0 && fragmentOffset >> 3 <= 0x1fff)
        buffer.put32(UInt32(nextHeader) << 24 | UInt32(fragmentOffset) | (moreFragments ? 1 : 0), at: offset)
        buffer.put32(identification, at: offset + 4)
    }

    /// A flow label for a flow (RFC 6437 §3): a keyed hash of the 5-tuple,
    /// 20 bits, the same for every packet of the flow and unpredictable
    /// without the seed. This stack labels its flows this way, as Linux
    /// does with net.ipv6.auto_flowlabels (its default); 0 ("unlabelled",
    /// RFC 8200 §6) is what a caller passes to opt out. For ICMPv6 pass the
    /// ports as 0.
    ///
    /// - Parameters:
    ///   - source: the sender.
    ///   - destination: the receiver.
    ///   - nextHeader: the upper-layer protocol (17 UDP, 58 ICMPv6).
    ///   - sourcePort: the sender's port (0 when the protocol has none).
    ///   - destinationPort: the receiver's port (0 when the protocol has none).
    ///   - seed: the stack's secret, chosen once at start-up.
    public static func flowLabel(
        source: IPAddress, destination: IPAddress, nextHeader: UInt8,
        sourcePort: UInt16 = 0, destinationPort: UInt16 = 0, seed: UInt64
    ) -> UInt32 {
        let extra = UInt64(nextHeader) << 32 | UInt64(sourcePort) << 16 | UInt64(destinationPort)
        return UInt32(truncatingIfNeeded: keyedHash(seed: seed, source, destination, extra)) & 0xfffff
    }
}

/// Per-destination IP Identification values from a fixed table of
/// counters (Linux's ip_idents; the hash-of-counters scheme RFC 7739
/// recommends for IPv6 and RFC 6864 §4.2 permits for IPv4).
///
/// Why per destination: RFC 6864 §4.2 only requires an ID to be unique per
/// (source, destination, protocol) within a datagram's lifetime, and a
/// single stack-wide counter would let any peer count the packets this
/// stack sends to everyone else (the "idle scan" of RFC 6274 §3.5 and RFC
/// 7739 §3). A keyed hash of (source, destination, protocol) picks one of
/// `bucketCount` counters, each starting at a seeded random value: packets
/// to one destination get consecutive IDs, other destinations' counters
/// are unrelated and not observable. Unlike Linux the counters do not jump
/// by a random amount after idle periods.
///
/// Concurrency: owned by one core executor (it is `~Copyable` and its
/// methods are `mutating`): not thread-safe, no atomics. Each core has its
/// own generator; two cores sending to one destination may then repeat an
/// ID, which RFC 6864 §4.2 tolerates only within the reassembly timeout —
/// a sharded stack should pin a destination's fragmented traffic to one
/// core. ``nextIPv4(source:destination:protocol:)`` costs one hash and one
/// memory access; nothing allocates after `init`.
public struct IPIdentificationGenerator: ~Copyable {
    private let counters: UnsafeMutablePointer<UInt32>
    private let mask: Int
    private let seed: UInt64

    /// A table of `bucketCount` counters (rounded up to a power of two;
    /// default 2048, Linux's minimum ip_idents size), allocated once.
    ///
    /// - Parameters:
    ///   - bucketCount: number of counters (≥ 1).
    ///   - seed: the hash key and the counters' starting values; a random
    ///     value by default (tests pass a fixed one).
    public init(bucketCount: Int = 2048, seed: UInt64 = UInt64.random(in: .min ... .max)) {
        precondition(bucketCount >= 1)
        var n = 1
        while n < bucketCount { n <<= 1 }
        counters = .allocate(capacity: n)
        for i in 0..<n { counters[i] = UInt32(truncatingIfNeeded: mix64(seed &+ UInt64(i))) }
        mask = n - 1
        self.seed = seed
    }

    deinit { counters.deallocate() }

    @inline(__always)
    private mutating func next(_ a: IPAddress, _ b: IPAddress, _ proto: UInt8) -> UInt32 {
        let i = Int(truncatingIfNeeded: keyedHash(seed: seed, a, b, UInt64(proto))) & mask
        let value = counters[i]
        counters[i] = value &+ 1
        return value
    }

    /// The next IPv4 Identification for a datagram (RFC 791 §3.1).
    ///
    /// - Parameters:
    ///   - source: the datagram's source.
    ///   - destination: the datagram's destination.
    ///   - protocol: its protocol number.
    public mutating func nextIPv4(source: IPAddress, destination: IPAddress, protocol: UInt8) -> UInt16 {
        UInt16(truncatingIfNeeded: next(source, destination, `protocol`))
    }

    /// The next 32-bit Identification for a fragmented IPv6 datagram
    /// (RFC 8200 §4.5; the protocol is 44, the Fragment header's, for all).
    ///
    /// - Parameters:
    ///   - source: the datagram's source.
    ///   - destination: the datagram's destination.
    public mutating func nextIPv6(source: IPAddress, destination: IPAddress) -> UInt32 {
        next(source, destination, 44)
    }
}
