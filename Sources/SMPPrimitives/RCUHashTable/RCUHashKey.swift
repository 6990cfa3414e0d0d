// Keys of an RCUHashTable and the keyed mix they hash with.

/// A key of an ``RCUHashTable``: plain data, compared with `==`, hashed with
/// a per-table random seed so that a remote party who picks keys (flows)
/// cannot aim them at one bucket.
///
/// Keys are copied bit for bit into the table's nodes and compared by
/// lock-free readers on any thread, so `==` and ``rcuHash(seed:)`` must be
/// pure functions of the bits (no references, no side effects).
public protocol RCUHashKey: Equatable, BitwiseCopyable {
    /// A 64-bit hash of the key keyed by `seed`. Must be cheap (a few
    /// multiplies) and mix every field; ``rcuHashMix(_:_:seed:)`` is a good
    /// building block.
    func rcuHash(seed: UInt64) -> UInt64
}

/// A keyed 64-bit mix of two words (a folded 64x64->128 multiply, in the
/// style of wyhash). One multiply; every input bit affects the result.
/// A pure function: any thread, no memory access.
///
/// Both factors of the first multiply are keyed. A folded multiply loses
/// everything when a factor is zero: with `b` unkeyed, every key whose
/// `b` word equals the second constant (an IPv6 source address half an
/// attacker can pick) hashed to one value under every seed. Now a zero
/// factor needs `a == seed ^ C1` or `b == seed ^ C2`, which only the
/// seed's holder can aim at (docs/Security.md, "Hash flooding").
@inlinable @inline(__always)
public func rcuHashMix(_ a: UInt64, _ b: UInt64, seed: UInt64) -> UInt64 {
    let x = (a ^ seed ^ 0xa076_1d64_78bd_642f).multipliedFullWidth(by: b ^ seed ^ 0xe703_7ed1_a0b4_28db)
    let y = (x.high ^ x.low ^ seed).multipliedFullWidth(by: 0x8ebc_6af0_9c88_c6e3)
    return y.high ^ y.low
}

extension UInt64: RCUHashKey {
    /// The word mixed with ``rcuHashMix(_:_:seed:)``.
    @inlinable public func rcuHash(seed: UInt64) -> UInt64 { rcuHashMix(self, 0, seed: seed) }
}
extension UInt: RCUHashKey {
    /// The word mixed with ``rcuHashMix(_:_:seed:)``.
    @inlinable public func rcuHash(seed: UInt64) -> UInt64 { rcuHashMix(UInt64(self), 0, seed: seed) }
}
extension Int: RCUHashKey {
    /// The bit pattern mixed with ``rcuHashMix(_:_:seed:)``.
    @inlinable public func rcuHash(seed: UInt64) -> UInt64 { rcuHashMix(UInt64(bitPattern: Int64(self)), 0, seed: seed) }
}
extension UInt32: RCUHashKey {
    /// The word mixed with ``rcuHashMix(_:_:seed:)``.
    @inlinable public func rcuHash(seed: UInt64) -> UInt64 { rcuHashMix(UInt64(self), 0, seed: seed) }
}
