// Round-trip times of stack-udp-echo: a log-linear histogram, fixed size,
// no allocation per sample.

/// A histogram of nanosecond values with 64 linear buckets per power of
/// two above 128 ns (every value below 128 ns exact): a quantile is off by
/// less than 1/64 (1.6 %) of its value. Values above 2⁴⁰ ns (18 minutes)
/// share the last bucket.
///
/// Concurrency: a value owned by one thread (the client's).
struct LatencyHistogram {
    private static let linear = 128
    private static let subBuckets = 64
    private static let maxExponent = 40
    private static let bucketCount = linear + (maxExponent - 6) * subBuckets

    private(set) var counts = [Int](repeating: 0, count: LatencyHistogram.bucketCount)
    private(set) var total = 0
    private(set) var maximum = 0

    /// Counts one value (ns; negative counts as 0).
    @inline(__always)
    mutating func record(_ nanoseconds: Int) {
        let v = max(0, nanoseconds)
        counts.withUnsafeMutableBufferPointer { $0[Self.index(v)] &+= 1 }
        total &+= 1
        if v > maximum { maximum = v }
    }

    @inline(__always)
    static func index(_ v: Int) -> Int {
        if v < linear { return v }
        let e = min(Int.bitWidth - 1 - v.leadingZeroBitCount, maxExponent)   // ≥ 7
        let shift = e - 6
        let top = min(v >> shift, 127)   // 64...127
        return linear + (e - 7) * subBuckets + (top - 64)
    }

    /// Adds another histogram's counts (another thread's, after it stopped).
    mutating func merge(_ other: LatencyHistogram) {
        for i in counts.indices { counts[i] &+= other.counts[i] }
        total &+= other.total
        maximum = max(maximum, other.maximum)
    }

    /// The smallest value bucket `i` holds and its width.
    static func range(_ i: Int) -> (low: Int, width: Int) {
        if i < linear { return (i, 1) }
        let e = (i - linear) / subBuckets + 7
        let top = (i - linear) % subBuckets + 64
        return (top << (e - 6), 1 << (e - 6))
    }

    /// The `q` quantile (0...1) in nanoseconds: the middle of the bucket
    /// holding the value of rank ⌈q·total⌉; 0 if empty.
    func quantile(_ q: Double) -> Int {
        guard total > 0 else { return 0 }
        let rank = max(1, Int((q * Double(total)).rounded(.up)))
        var seen = 0
        for (i, c) in counts.enumerated() where c > 0 {
            seen += c
            if seen >= rank {
                let r = Self.range(i)
                return min(r.low + r.width / 2, maximum)
            }
        }
        return maximum
    }
}
