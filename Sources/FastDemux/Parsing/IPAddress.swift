#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The IP version of an ``IPAddress``.
@frozen
public enum AddressFamily: UInt8, Sendable, BitwiseCopyable, Hashable {
    /// IPv4 (the value of the version field).
    case ipv4 = 4
    /// IPv6 (the value of the version field).
    case ipv6 = 6
}

/// An IPv4 or IPv6 address in 16 bytes of inline storage plus a family tag.
///
/// The address is kept as two big-endian-interpreted 64-bit halves
/// (`high` = bytes 0...7, `low` = bytes 8...15), so that comparing
/// `(high, low)` orders addresses exactly like their packed network-order
/// bytes (Python's `ipaddress.packed`, which the oracle's canonical key
/// sorts by). An IPv4 address lives in the low 32 bits of `low`.
///
/// A plain value: no allocation, `BitwiseCopyable`, usable from any thread.
/// Only ``description`` and ``init(_:)`` (text conversions) allocate.
@frozen
public struct IPAddress: Hashable, Sendable, BitwiseCopyable, Comparable, CustomStringConvertible {
    /// Bytes 0...7 of the address as a big-endian number (0 for IPv4).
    public var high: UInt64
    /// Bytes 8...15 of the address as a big-endian number; for IPv4 the address
    /// in its low 32 bits.
    public var low: UInt64
    /// IPv4 or IPv6.
    public var family: AddressFamily

    /// An IPv4 address from its 32-bit value in host order
    /// (`0x7f000001` is 127.0.0.1).
    @inlinable
    public init(ipv4 value: UInt32) {
        self.high = 0
        self.low = UInt64(value)
        self.family = .ipv4
    }

    /// An IPv6 address from its two halves (bytes 0...7 and 8...15, each
    /// read as a big-endian integer).
    @inlinable
    public init(ipv6High high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
        self.family = .ipv6
    }

    @inlinable
    init(high: UInt64, low: UInt64, family: AddressFamily) {
        self.high = high
        self.low = low
        self.family = family
    }

    /// Reads an address of the given family from network-order bytes at
    /// `offset`. The caller guarantees 4 (IPv4) or 16 (IPv6) readable bytes.
    @inlinable
    init(unchecked bytes: UnsafeRawBufferPointer, at offset: Int, family: AddressFamily) {
        switch family {
        case .ipv4:
            self.init(ipv4: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).bigEndian)
        case .ipv6:
            self.init(
                ipv6High: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self).bigEndian,
                low: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self).bigEndian)
        }
    }

    /// The IPv4 value in host order (meaningful only for `.ipv4`).
    @inlinable
    public var ipv4Value: UInt32 { UInt32(truncatingIfNeeded: low) }

    /// Parses dotted-quad IPv4 or any textual IPv6 form (`inet_pton`).
    public init?(_ text: String) {
        var v6 = in6_addr()
        var v4 = in_addr()
        if text.withCString({ inet_pton(AF_INET, $0, &v4) }) == 1 {
            self.init(ipv4: UInt32(bigEndian: v4.s_addr))
        } else if text.withCString({ inet_pton(AF_INET6, $0, &v6) }) == 1 {
            let (h, l) = withUnsafeBytes(of: &v6) { raw in
                (raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self).bigEndian,
                 raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self).bigEndian)
            }
            self.init(ipv6High: h, low: l)
        } else {
            return nil
        }
    }

    /// Orders by family, then by the packed network-order bytes.
    @inlinable
    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        if a.family != b.family { return a.family.rawValue < b.family.rawValue }
        return (a.high, a.low) < (b.high, b.low)
    }

    /// IPv4 as dotted quad; IPv6 in RFC 5952 canonical form (lower-case hex,
    /// no leading zeros, the longest run of two or more zero groups — the
    /// first on a tie — as `::`, IPv4-mapped addresses as `::ffff:a.b.c.d`),
    /// which is how tshark prints addresses.
    public var description: String {
        switch family {
        case .ipv4:
            let v = ipv4Value
            return "\(v >> 24).\((v >> 16) & 0xff).\((v >> 8) & 0xff).\(v & 0xff)"
        case .ipv6:
            return ipv6Text
        }
    }

    private var ipv6Text: String {
        var groups = [UInt16](repeating: 0, count: 8)
        for i in 0..<4 {
            groups[i] = UInt16(truncatingIfNeeded: high >> (48 - 16 * UInt64(i)))
            groups[4 + i] = UInt16(truncatingIfNeeded: low >> (48 - 16 * UInt64(i)))
        }
        if high == 0 && (low >> 32) == 0xffff {
            let v = UInt32(truncatingIfNeeded: low)
            return "::ffff:\(v >> 24).\((v >> 16) & 0xff).\((v >> 8) & 0xff).\(v & 0xff)"
        }
        // Longest run of zero groups, at least two long.
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if groups[i] == 0 {
                var j = i
                while j < 8 && groups[j] == 0 { j += 1 }
                if j - i > bestLen { bestStart = i; bestLen = j - i }
                i = j
            } else {
                i += 1
            }
        }
        if bestLen < 2 { bestStart = -1 }
        var out = ""
        i = 0
        while i < 8 {
            if i == bestStart {
                out += "::"
                i += bestLen
                continue
            }
            if !out.isEmpty && !out.hasSuffix(":") { out += ":" }
            out += String(groups[i], radix: 16)
            i += 1
        }
        return out
    }
}
