// Byte-level helpers shared by the output builders: big-endian stores,
// address sums for the pseudo-headers, the upper-layer checksum and the
// keyed hash behind IP identifications and flow labels. Internal; every
// function is a pure function of its arguments.

/// Why an output builder produced no packet.
///
/// A plain value (any thread). Builders throw it with typed throws, so a
/// failure allocates nothing either.
@frozen
public enum OutputError: Error, Sendable, Hashable {
    /// The output buffer is too small for the packet.
    case bufferTooSmall
    /// The datagram is longer than its length fields can express (UDP
    /// length 65535, IPv4 total length 65535, IPv6 payload length 65535: no
    /// jumbograms).
    case datagramTooLarge
    /// The MTU is below the protocol's minimum (IPv4: 68, RFC 791 §3.2;
    /// IPv6: 1280, RFC 8200 §5).
    case mtuTooSmall
    /// The datagram needs more fragments than the caller gave output slots.
    case tooManyFragments
    /// The packet pool ran dry; every buffer taken for this datagram was
    /// returned before the error was thrown.
    case poolExhausted
    /// The packet to answer is not what the builder expects (not an echo
    /// request, truncated, a fragment, a wrong version).
    case malformedInput
    /// The reply would need a source address that is not a unicast address
    /// (the request went to a multicast or broadcast address; RFC 1122
    /// §3.2.2.6, RFC 4443 §4.2).
    case notUnicast
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    func put16(_ value: UInt16, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inline(__always)
    func put32(_ value: UInt32, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    @inline(__always)
    func put64(_ value: UInt64, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self)
    }

    /// Writes an address in network order (4 or 16 bytes).
    @inline(__always)
    func put(_ address: IPAddress, at offset: Int) {
        switch address.family {
        case .ipv4: put32(address.ipv4Value, at: offset)
        case .ipv6:
            put64(address.high, at: offset)
            put64(address.low, at: offset + 8)
        }
    }

    /// Copies `source` to `offset` (nothing for an empty source).
    @inline(__always)
    func copy(_ source: UnsafeRawBufferPointer, to offset: Int) {
        guard let from = source.baseAddress, !source.isEmpty else { return }
        (baseAddress! + offset).copyMemory(from: from, byteCount: source.count)
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always)
    func u16(_ offset: Int) -> UInt16 { loadUnaligned(fromByteOffset: offset, as: UInt16.self).bigEndian }

    @inline(__always)
    func u32(_ offset: Int) -> UInt32 { loadUnaligned(fromByteOffset: offset, as: UInt32.self).bigEndian }

    @inline(__always)
    func u64(_ offset: Int) -> UInt64 { loadUnaligned(fromByteOffset: offset, as: UInt64.self).bigEndian }
}

/// The one's-complement partial sum of the four 16-bit words of a 64-bit
/// big-endian value (at most 4 × 0xffff: no overflow in later additions).
@inline(__always)
func wordSum(_ x: UInt64) -> UInt32 {
    UInt32(truncatingIfNeeded: x >> 48) &+ UInt32(truncatingIfNeeded: (x >> 32) & 0xffff)
        &+ UInt32(truncatingIfNeeded: (x >> 16) & 0xffff) &+ UInt32(truncatingIfNeeded: x & 0xffff)
}

extension IPAddress {
    /// The partial sum of the address's 16-bit words, as
    /// `Checksum.pseudoHeader` wants it (RFC 768, RFC 8200 §8.1).
    @inline(__always)
    var checksumWords: UInt32 {
        family == .ipv4 ? wordSum(low & 0xffff_ffff) : wordSum(high) &+ wordSum(low)
    }

    /// Not multicast, not broadcast, not unspecified: an address a reply
    /// may come from (IPv4: not 0/8, 224/4, 240/4; IPv6: not ::, ff00::/8).
    @inline(__always)
    var isUnicastSource: Bool {
        switch family {
        case .ipv4:
            let first = ipv4Value >> 24
            return first != 0 && first < 224
        case .ipv6:
            return high >> 56 != 0xff && !(high == 0 && low == 0)
        }
    }
}

/// How the 8-byte upper-layer header carries its checksum: where the
/// 16-bit field is (as a shift into the big-endian 64-bit header), whether
/// the pseudo-header is included, and whether a computed 0 goes out as
/// 0xffff (UDP, RFC 768; for IPv6 a zero UDP checksum is not allowed at
/// all, RFC 8200 §8.1).
struct UpperChecksum {
    var shift: UInt64
    var pseudoHeader: Bool
    var zeroAsOnes: Bool

    /// UDP: checksum in bytes 6...7, with pseudo-header.
    static let udp = UpperChecksum(shift: 0, pseudoHeader: true, zeroAsOnes: true)
    /// ICMP (RFC 792): checksum in bytes 2...3, over the message alone.
    static let icmpv4 = UpperChecksum(shift: 32, pseudoHeader: false, zeroAsOnes: false)
    /// ICMPv6 (RFC 4443 §2.3): bytes 2...3, with the pseudo-header.
    static let icmpv6 = UpperChecksum(shift: 32, pseudoHeader: true, zeroAsOnes: false)

    /// `head` (the 8 header bytes, big-endian) with its checksum field set
    /// for the message `head ++ body` sent from `source` to `destination`.
    @inline(__always)
    func seal(_ head: UInt64, body: UnsafeRawBufferPointer, protocol proto: UInt8,
              source: IPAddress, destination: IPAddress) -> UInt64 {
        let mask: UInt64 = 0xffff << shift
        let open = head & ~mask
        // The head is 8 bytes (even), so the body's words stay aligned.
        var sum = wordSum(open) &+ Checksum.sum(body, from: 0, count: body.count)
        if pseudoHeader {
            sum = Checksum.partial(sum) &+ Checksum.pseudoHeader(
                addressSum: source.checksumWords &+ destination.checksumWords,
                protocol: proto, length: 8 + body.count)
        }
        var checksum = Checksum.fold(sum)
        if checksum == 0 && zeroAsOnes { checksum = 0xffff }
        return open | UInt64(checksum) << shift
    }
}

/// splitmix64's finalizer: a cheap, well-mixed 64-bit permutation.
@inline(__always)
func mix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// A keyed hash of two addresses and two more words: the bucket of an IP
/// identification counter, or an IPv6 flow label.
@inline(__always)
func keyedHash(seed: UInt64, _ a: IPAddress, _ b: IPAddress, _ extra: UInt64) -> UInt64 {
    var h = mix64(seed ^ a.high)
    h = mix64(h ^ a.low)
    h = mix64(h ^ b.high)
    h = mix64(h ^ b.low)
    return mix64(h ^ extra)
}
