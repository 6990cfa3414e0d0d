/// The out-of-order ranges of a connection's receive side (RFC 9293
/// §3.10.7.4, "Segments with higher beginning sequence numbers may be held
/// for later processing"): up to a fixed number of disjoint, sorted
/// `[start, end)` sequence ranges whose bytes already sit in the receive
/// ring past its readable end. The bytes are bounded by the advertised
/// window; the ranges by ``capacity`` (a segment that would need one more
/// range is refused and counted, ``TCPDropReason/reassemblyRangesFull``).
///
/// Storage: one array allocated with the connection; inserting shifts at
/// most ``capacity`` entries, no allocation.
struct TCPReassemblyQueue {
    private var starts: [UInt32]
    private var ends: [UInt32]
    private(set) var count = 0

    init(capacity: Int) {
        starts = [UInt32](repeating: 0, count: Swift.max(1, capacity))
        ends = starts
    }

    var capacity: Int { starts.count }
    var isEmpty: Bool { count == 0 }

    /// The highest sequence number held (end of the last range).
    var highestEnd: UInt32? { count == 0 ? nil : ends[count - 1] }

    /// Records `[s, e)` (after `rcvNext`), merging with overlapping or
    /// adjacent ranges. Returns false (nothing recorded) if it needs a new
    /// range and all are in use.
    mutating func insert(_ s: UInt32, _ e: UInt32) -> Bool {
        var s = s, e = e
        // First range whose end reaches s (could merge or follow).
        var i = 0
        while i < count && TCPSeq.lt(ends[i], s) { i += 1 }
        // Ranges i..<j overlap or touch [s, e).
        var j = i
        while j < count && TCPSeq.le(starts[j], e) {
            if TCPSeq.lt(starts[j], s) { s = starts[j] }
            if TCPSeq.gt(ends[j], e) { e = ends[j] }
            j += 1
        }
        let merged = j - i
        if merged == 0 {
            guard count < capacity else { return false }
            var k = count
            while k > i { starts[k] = starts[k - 1]; ends[k] = ends[k - 1]; k -= 1 }
            starts[i] = s; ends[i] = e
            count += 1
            return true
        }
        starts[i] = s; ends[i] = e
        let remove = merged - 1
        if remove > 0 {
            var k = i + 1
            while k + remove < count { starts[k] = starts[k + remove]; ends[k] = ends[k + remove]; k += 1 }
            count -= remove
        }
        return true
    }

    /// If the first range starts at or before `rcvNext`, removes it and
    /// returns its end (the new RCV.NXT): the hole before it was filled.
    mutating func popContiguous(at rcvNext: UInt32) -> UInt32? {
        guard count > 0, TCPSeq.le(starts[0], rcvNext) else { return nil }
        let e = ends[0]
        var k = 0
        while k + 1 < count { starts[k] = starts[k + 1]; ends[k] = ends[k + 1]; k += 1 }
        count -= 1
        return TCPSeq.max(e, rcvNext)
    }

    mutating func removeAll() { count = 0 }
}
