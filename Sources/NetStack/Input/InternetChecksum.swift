/// RFC 1071 Internet checksum over buffer bytes, for the input path
/// (ICMP verification, the rebuilt IPv4 header of a reassembled datagram).
/// Internal; a plain function of its arguments (any thread, no allocation).
enum InternetChecksum {
    /// One's-complement partial sum (not folded to 16 bits, carries kept
    /// below 2^32) of `count` bytes from `from` as big-endian 16-bit words;
    /// an odd last byte is padded with zero. The caller guarantees the
    /// range lies inside `bytes`.
    static func sum(_ bytes: UnsafeRawBufferPointer, from: Int, count: Int, initial: UInt32 = 0) -> UInt32 {
        var total = UInt64(initial)
        var i = from
        let end = from + count
        while i + 2 <= end {
            total &+= UInt64(bytes.loadUnaligned(fromByteOffset: i, as: UInt16.self).bigEndian)
            i += 2
        }
        if i < end { total &+= UInt64(bytes[i]) << 8 }
        while total > 0xffff { total = (total & 0xffff) &+ (total >> 16) }
        return UInt32(total)
    }

    /// The 16-bit one's-complement sum of a partial sum (complement it for
    /// the checksum field; 0xffff means a message verifies).
    static func fold(_ x: UInt32) -> UInt16 {
        var s = x
        while s > 0xffff { s = (s & 0xffff) &+ (s >> 16) }
        return UInt16(s)
    }
}
