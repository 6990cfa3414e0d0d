/// Sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4: "all arithmetic
/// dealing with sequence numbers must be performed modulo 2**32"). `a < b`
/// means `a` precedes `b` in the window of 2^31 numbers before `b`
/// (RFC 1982's serial-number comparison).
///
/// Concurrency: pure functions, any thread; a subtraction and a sign test.
enum TCPSeq {
    /// `a` precedes `b`.
    @inline(__always) static func lt(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }
    /// `a` precedes or equals `b`.
    @inline(__always) static func le(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) <= 0 }
    /// `a` follows `b`.
    @inline(__always) static func gt(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) > 0 }
    /// `a` follows or equals `b`.
    @inline(__always) static func ge(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) >= 0 }
    /// The later of two numbers.
    @inline(__always) static func max(_ a: UInt32, _ b: UInt32) -> UInt32 { gt(a, b) ? a : b }
    /// The distance from `b` forward to `a` (`a - b`), as a count.
    @inline(__always) static func distance(_ a: UInt32, from b: UInt32) -> Int { Int(a &- b) }
    /// `low <= x < high` in sequence space.
    @inline(__always) static func inRange(_ x: UInt32, _ low: UInt32, _ high: UInt32) -> Bool {
        le(low, x) && lt(x, high)
    }
}
