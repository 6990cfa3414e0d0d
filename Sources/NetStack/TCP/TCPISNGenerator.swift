import FastDemux

/// Initial sequence numbers per RFC 6528 §3:
/// `ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`,
/// where M is a clock ticking every 4 µs and F a keyed pseudo-random
/// function. F here is SipHash-2-4 (Aumasson and Bernstein, "SipHash: a
/// fast short-input PRF") with a 128-bit key drawn once per generator from
/// the system's random source (`SystemRandomNumberGenerator`, which reads
/// getrandom(2) on Linux), as RFC 6528 §3 asks ("a secret key ... SHOULD
/// be of at least 128 bits").
///
/// A plain value: copy it to every thread that opens connections (the key
/// is the same in every copy, so the ISN space stays one per stack).
public struct TCPISNGenerator: Sendable {
    private let k0: UInt64
    private let k1: UInt64

    /// A generator with a fresh random key.
    public init() {
        var rng = SystemRandomNumberGenerator()
        k0 = rng.next()
        k1 = rng.next()
    }

    /// A generator with a fixed key (tests).
    public init(key0: UInt64, key1: UInt64) {
        k0 = key0
        k1 = key1
    }

    /// The ISN for a connection between the two endpoints at time `now`
    /// (microseconds of a monotonic clock).
    ///
    /// Cost: one SipHash of 40 bytes, no allocation.
    public func initialSequenceNumber(local: IPAddress, localPort: UInt16, remote: IPAddress,
                                      remotePort: UInt16, now: UInt64) -> UInt32 {
        let ports = UInt64(localPort) << 16 | UInt64(remotePort) | UInt64(local.family.rawValue) << 32
        let f = TCPISNGenerator.sipHash24(k0, k1, local.high, local.low, remote.high, remote.low, ports)
        // M: the 4 µs clock of RFC 6528 §3 (RFC 793's ISN generator rate).
        let m = UInt32(truncatingIfNeeded: now / 4)
        return m &+ UInt32(truncatingIfNeeded: f)
    }

    @inline(__always)
    private static func rotl(_ x: UInt64, _ b: UInt64) -> UInt64 { (x << b) | (x >> (64 - b)) }

    /// SipHash-2-4 of five 64-bit words (a 40-byte message; fixed arity so
    /// that no array is built).
    static func sipHash24(_ k0: UInt64, _ k1: UInt64, _ w0: UInt64, _ w1: UInt64, _ w2: UInt64,
                          _ w3: UInt64, _ w4: UInt64) -> UInt64 {
        var v0: UInt64 = 0x736f_6d65_7073_6575 ^ k0
        var v1: UInt64 = 0x646f_7261_6e64_6f6d ^ k1
        var v2: UInt64 = 0x6c79_6765_6e65_7261 ^ k0
        var v3: UInt64 = 0x7465_6462_7974_6573 ^ k1
        @inline(__always) func round() {
            v0 = v0 &+ v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
            v2 = v2 &+ v3; v3 = rotl(v3, 16); v3 ^= v2
            v0 = v0 &+ v3; v3 = rotl(v3, 21); v3 ^= v0
            v2 = v2 &+ v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
        }
        @inline(__always) func compress(_ m: UInt64) {
            v3 ^= m
            round(); round()
            v0 ^= m
        }
        compress(w0); compress(w1); compress(w2); compress(w3); compress(w4)
        let b = UInt64(40) << 56
        v3 ^= b
        round(); round()
        v0 ^= b
        v2 ^= 0xff
        round(); round(); round(); round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}
