/// The TCP options the engine parses and builds: MSS (RFC 9293 §3.2,
/// §3.7.1), window scale (RFC 7323 §2) and timestamps (RFC 7323 §3).
/// SACK-permitted (RFC 2018) is recognised on input (``sackPermitted``)
/// but never offered: the engine does not implement SACK.
///
/// A plain value; parsing and building are pure functions (any thread, no
/// allocation, one pass over at most 40 bytes).
@frozen
public struct TCPOptions: Sendable, BitwiseCopyable, Hashable {
    /// Maximum segment size (kind 2), only meaningful on a SYN.
    public var maximumSegmentSize: UInt16?
    /// Window scale shift count (kind 3), only meaningful on a SYN; values
    /// above 14 are kept as received and clamped by the engine (RFC 7323 §2.3).
    public var windowScale: UInt8?
    /// Timestamps (kind 8): TSval and TSecr.
    public var timestamp: (value: UInt32, echoReply: UInt32)? {
        get { hasTimestamp ? (timestampValue, timestampEchoReply) : nil }
        set {
            hasTimestamp = newValue != nil
            timestampValue = newValue?.value ?? 0
            timestampEchoReply = newValue?.echoReply ?? 0
        }
    }
    /// SACK-permitted (kind 4) was present; the engine ignores it.
    public var sackPermitted: Bool = false

    @usableFromInline var hasTimestamp = false
    @usableFromInline var timestampValue: UInt32 = 0
    @usableFromInline var timestampEchoReply: UInt32 = 0

    /// No options.
    public init() {}

    public static func == (a: TCPOptions, b: TCPOptions) -> Bool {
        a.maximumSegmentSize == b.maximumSegmentSize && a.windowScale == b.windowScale
            && a.sackPermitted == b.sackPermitted && a.hasTimestamp == b.hasTimestamp
            && a.timestampValue == b.timestampValue && a.timestampEchoReply == b.timestampEchoReply
    }

    public func hash(into h: inout Hasher) {
        h.combine(maximumSegmentSize); h.combine(windowScale); h.combine(sackPermitted)
        h.combine(hasTimestamp); h.combine(timestampValue); h.combine(timestampEchoReply)
    }

    /// The encoded length of these options, padded to a multiple of 4
    /// (RFC 9293 §3.1: the data offset counts 32-bit words).
    public var encodedLength: Int {
        var n = 0
        if maximumSegmentSize != nil { n += 4 }
        if windowScale != nil { n += 4 }  // NOP + 3 bytes
        if hasTimestamp { n += 12 }  // NOP NOP + 10 bytes (RFC 7323 Appendix A layout)
        return n
    }

    /// Parses the options area of a header (the bytes between the fixed
    /// 20-byte header and the data offset).
    ///
    /// RFC 9293 §3.1: kind 0 ends the list, kind 1 is one byte of padding,
    /// every other kind has a length byte counting kind and length. A
    /// length below 2 or running past the area is malformed (RFC 9293
    /// §3.1: "a TCP implementation MUST be prepared to handle an illegal
    /// option length (e.g., zero); a suggested procedure is to reset the
    /// connection and log the error cause" — the engine drops the segment
    /// and counts it instead, Linux's behaviour). An option of a known kind
    /// with the wrong length is ignored (RFC 7323 §2.2/§3.2 say to ignore
    /// such options).
    public static func parse(_ area: UnsafeRawBufferPointer) throws(TCPDropReason) -> TCPOptions {
        var o = TCPOptions()
        var i = 0
        let n = area.count
        while i < n {
            let kind = area[i]
            if kind == 0 { break }
            if kind == 1 { i += 1; continue }
            guard i + 1 < n else { throw .optionOverrun }
            let len = Int(area[i + 1])
            guard len >= 2 else { throw .badOptionLength }
            guard i + len <= n else { throw .optionOverrun }
            switch (kind, len) {
            case (2, 4):
                o.maximumSegmentSize = UInt16(area[i + 2]) << 8 | UInt16(area[i + 3])
            case (3, 3):
                o.windowScale = area[i + 2]
            case (4, 2):
                o.sackPermitted = true
            case (8, 10):
                o.hasTimestamp = true
                o.timestampValue = area.loadUnaligned(fromByteOffset: i + 2, as: UInt32.self).bigEndian
                o.timestampEchoReply = area.loadUnaligned(fromByteOffset: i + 6, as: UInt32.self).bigEndian
            default:
                break  // unknown kind (or known kind, wrong length): skipped
            }
            i += len
        }
        return o
    }

    /// Writes the options at the start of `area` (which must hold
    /// ``encodedLength`` bytes) and returns the bytes written.
    @discardableResult
    public func write(into area: UnsafeMutableRawBufferPointer) -> Int {
        var i = 0
        if let mss = maximumSegmentSize {
            area[i] = 2; area[i + 1] = 4
            area.storeBytes(of: mss.bigEndian, toByteOffset: i + 2, as: UInt16.self)
            i += 4
        }
        if let ws = windowScale {
            area[i] = 1; area[i + 1] = 3; area[i + 2] = 3; area[i + 3] = ws
            i += 4
        }
        if hasTimestamp {
            area[i] = 1; area[i + 1] = 1; area[i + 2] = 8; area[i + 3] = 10
            area.storeBytes(of: timestampValue.bigEndian, toByteOffset: i + 4, as: UInt32.self)
            area.storeBytes(of: timestampEchoReply.bigEndian, toByteOffset: i + 8, as: UInt32.self)
            i += 12
        }
        return i
    }
}
