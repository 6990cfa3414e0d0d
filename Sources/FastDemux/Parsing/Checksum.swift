/// RFC 1071 Internet checksum helpers: the parser's optional verification,
/// NetStack's input path (ICMP, reassembled IPv4 headers) and its output path
/// (one implementation for all; `package` access so that only this
/// package's modules see it).
///
/// Pure functions of their arguments: any thread, no allocation.
@usableFromInline
package enum Checksum {
    /// One's-complement partial sum (not yet folded) of `count` bytes from
    /// `from`, as big-endian 16-bit words; an odd last byte is padded with
    /// zero. The caller guarantees the range is inside `bytes`.
    package static func sum(_ bytes: UnsafeRawBufferPointer, from: Int, count: Int) -> UInt32 {
        var total: UInt64 = 0
        var i = from
        let end = from + count
        while i + 2 <= end {
            total &+= UInt64(bytes.loadUnaligned(fromByteOffset: i, as: UInt16.self).bigEndian)
            i += 2
        }
        if i < end { total &+= UInt64(bytes[i]) << 8 }
        while total > 0xffff_ffff { total = (total & 0xffff_ffff) &+ (total >> 32) }
        return partial(UInt32(total))
    }

    /// Whether the IPv4 header of `length` bytes (IHL × 4, so a multiple of
    /// 4 and at least 20) at `from` checksums correctly: its one's-complement sum is 0xffff.
    /// The fast path's version of `fold(sum(...)) == 0`: it adds 32-bit
    /// words in native byte order into a 64-bit accumulator and folds the
    /// carries back in, which RFC 1071 section 2 allows (the sum is
    /// independent of byte order up to a swap, and 0xffff is its own swap;
    /// wider accumulators with end-around carry give the same 16-bit sum).
    @inline(__always)
    static func ipv4HeaderVerifies(_ bytes: UnsafeRawBufferPointer, from: Int, length: Int) -> Bool {
        @inline(__always) func word(_ at: Int) -> UInt64 {
            UInt64(bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self))
        }
        // The fixed 20 bytes unrolled, then any options.
        var total = word(from) &+ word(from &+ 4) &+ word(from &+ 8) &+ word(from &+ 12) &+ word(from &+ 16)
        var i = from &+ 20
        let end = from &+ length
        while i < end {
            total &+= word(i)
            i &+= 4
        }
        total = (total & 0xffff_ffff) &+ (total >> 32)
        total = (total & 0xffff_ffff) &+ (total >> 32)
        var folded = UInt32(truncatingIfNeeded: total)
        folded = (folded & 0xffff) &+ (folded >> 16)
        folded = (folded & 0xffff) &+ (folded >> 16)
        return folded == 0xffff
    }

    /// Keeps a 32-bit partial sum from overflowing later additions.
    @inline(__always)
    package static func partial(_ x: UInt32) -> UInt32 { (x & 0xffff) &+ (x >> 16) }

    /// The pseudo-header sum: addresses (already summed), protocol and the
    /// upper-layer length (32 bits, for IPv6 jumbograms).
    package static func pseudoHeader(addressSum: UInt32, protocol proto: UInt8, length: Int) -> UInt32 {
        partial(addressSum) &+ UInt32(proto) &+ UInt32(truncatingIfNeeded: (length >> 16) & 0xffff)
            &+ UInt32(truncatingIfNeeded: length & 0xffff)
    }

    /// Folds the carries of a partial sum into 16 bits (not complemented).
    @inline(__always)
    package static func fold16(_ x: UInt32) -> UInt16 {
        var s = x
        while s > 0xffff { s = (s & 0xffff) &+ (s >> 16) }
        return UInt16(s)
    }

    /// Folds a partial sum and complements it: 0 means "verifies".
    @inline(__always)
    package static func fold(_ x: UInt32) -> UInt16 { ~fold16(x) }
}
