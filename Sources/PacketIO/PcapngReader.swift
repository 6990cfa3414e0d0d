#if canImport(Glibc)
import FastDemux
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A pcapng block reader that keeps every interface's link type, so that a
/// file mixing link types (an Ethernet and a cooked interface, say) is
/// replayed with the right type per frame.
///
/// Understands section header (0x0A0D0D0A, either byte order, several
/// sections per file), interface description (1; `if_tsresol`,
/// `if_tsoffset`), enhanced packet (6), simple packet (3) and the obsolete
/// packet block (2); other blocks are skipped. Frames are numbered over
/// packet blocks only, as tshark numbers them.
///
/// Not thread-safe. One read buffer, reused; grown only for larger blocks.
/// Usually reached through ``PcapReader``.
public final class PcapngReader {
    struct Interface {
        var linkType: LinkType
        var snapLength: Int
        /// Timestamp units per second (10^6 unless `if_tsresol` says).
        var unitsPerSecond: UInt64
        /// `if_tsoffset`, seconds.
        var offsetSeconds: Int64
    }

    /// Largest block accepted; anything bigger is treated as corruption
    /// rather than allocated.
    public static let maxBlockLength = 64 << 20

    private let file: UnsafeMutablePointer<FILE>
    private let path: String
    private var bigEndian = false
    private var interfaces: [Interface] = []
    private var buffer: UnsafeMutableRawBufferPointer
    private var count = 0

    /// Takes ownership of `file`, positioned at a section header block.
    init(file: UnsafeMutablePointer<FILE>, path: String) throws(PcapError) {
        self.file = file
        self.path = path
        self.buffer = .allocate(byteCount: 64 * 1024, alignment: 8)
        // The first block must be a section header with a valid byte-order
        // magic, or this is not pcapng at all.
        do throws(PcapError) {
            guard try readBlock(expectingSectionHeader: true) else {
                throw PcapError.notACapture(path: path, reason: "empty file")
            }
        } catch {
            if case .malformed(path: _, packetsRead: _, reason: let reason) = error {
                throw .notACapture(path: path, reason: reason)
            }
            throw error
        }
        // Read ahead over the interface descriptions so that
        // `firstLinkType` is known; the first other block stays pending.
        while try readBlock() {
            if blockType == 1 {
                try addInterface()
            } else if blockType != 0x0A0D_0D0A {
                hasPendingBlock = true
                break
            }
        }
    }

    /// Opens a pcapng file directly.
    public convenience init(path: String) throws(PcapError) {
        guard let file = fopen(path, "rb") else {
            throw .cannotOpen(path: path, reason: String(cString: strerror(errno)))
        }
        try self.init(file: file, path: path)
    }

    deinit {
        fclose(file)
        buffer.deallocate()
    }

    /// The buffer holds a block read ahead by `init` and not yet handled.
    private var hasPendingBlock = false

    /// The first interface's link type, if the section declares one before
    /// its first packet.
    public var firstLinkType: LinkType? { interfaces.first?.linkType }

    /// Frames returned so far.
    public var framesRead: Int { count }

    // Body of the block last read (after the 8-byte type/length header,
    // without the trailing length).
    private var blockType: UInt32 = 0
    private var bodyLength = 0

    @inline(__always)
    private func u32(_ at: Int) -> UInt32 {
        let v = buffer.loadUnaligned(fromByteOffset: at, as: UInt32.self)
        return bigEndian ? UInt32(bigEndian: v) : UInt32(littleEndian: v)
    }

    @inline(__always)
    private func u16(_ at: Int) -> UInt16 {
        let v = buffer.loadUnaligned(fromByteOffset: at, as: UInt16.self)
        return bigEndian ? UInt16(bigEndian: v) : UInt16(littleEndian: v)
    }

    private func fail(_ reason: String) -> PcapError {
        .malformed(path: path, packetsRead: count, reason: reason)
    }

    private func ensureCapacity(_ n: Int) {
        if buffer.count < n {
            let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: max(n, buffer.count * 2), alignment: 8)
            buffer.deallocate()
            buffer = bigger
        }
    }

    /// Reads the next block's body into `buffer`; `false` at a clean end of
    /// file. Handles section headers (byte order, interface reset) itself.
    private func readBlock(expectingSectionHeader: Bool = false) throws(PcapError) -> Bool {
        var header = (UInt32(0), UInt32(0))
        let got = withUnsafeMutableBytes(of: &header) { fread($0.baseAddress, 1, 8, file) }
        if got == 0 { return false }
        guard got == 8 else { throw fail("file ends inside a block header") }
        var type = header.0
        var length: UInt32
        if type == 0x0A0D_0D0A {
            // The byte-order magic follows the length; read it first.
            var bom: UInt32 = 0
            guard fread(&bom, 1, 4, file) == 4 else { throw fail("file ends inside a section header") }
            switch bom {
            case 0x1A2B_3C4D: bigEndian = false
            case 0x4D3C_2B1A: bigEndian = true
            default: throw fail("bad byte-order magic in section header")
            }
            length = bigEndian ? UInt32(bigEndian: header.1) : UInt32(littleEndian: header.1)
            guard length >= 28 else { throw fail("section header too short") }
            interfaces.removeAll(keepingCapacity: true)
            try readBody(length: Int(length), alreadyRead: 4)
            buffer.storeBytes(of: bom, toByteOffset: 0, as: UInt32.self)
            blockType = type
            return true
        }
        if expectingSectionHeader { throw fail("does not start with a section header block") }
        type = bigEndian ? UInt32(bigEndian: type) : UInt32(littleEndian: type)
        length = bigEndian ? UInt32(bigEndian: header.1) : UInt32(littleEndian: header.1)
        try readBody(length: Int(length), alreadyRead: 0)
        blockType = type
        return true
    }

    /// Bytes between the read position and the end of the file, or nil if
    /// the stream cannot seek (a pipe). Only called before the buffer grows,
    /// which a well-formed file does a few times at most.
    private func bytesLeft() -> Int? {
        let here = ftello(file)
        guard here >= 0, fseeko(file, 0, SEEK_END) == 0 else { return nil }
        let end = ftello(file)
        guard fseeko(file, here, SEEK_SET) == 0 else { return nil }
        return end >= here ? Int(end - here) : nil
    }

    /// Reads the rest of a block of total `length` (8 header bytes and
    /// `alreadyRead` body bytes consumed) and checks the trailing length.
    private func readBody(length: Int, alreadyRead: Int) throws(PcapError) {
        guard length >= 12, length % 4 == 0 else { throw fail("bad block length \(length)") }
        guard length <= Self.maxBlockLength else { throw fail("block length \(length) too large") }
        let rest = length - 8
        let toRead = rest - alreadyRead
        if rest > buffer.count {
            // A corrupt length must cost an error, not an allocation of up to
            // maxBlockLength: before growing, check the file holds the block.
            if let left = bytesLeft(), toRead > left {
                throw fail("block length \(length) runs past the end of the file (\(left) bytes left)")
            }
            ensureCapacity(rest)
        }
        guard fread(buffer.baseAddress! + alreadyRead, 1, toRead, file) == toRead else {
            throw fail("file ends inside a block")
        }
        bodyLength = rest - 4
        guard Int(u32(bodyLength)) == length else { throw fail("block trailer length mismatch") }
    }

    private func addInterface() throws(PcapError) {
        guard bodyLength >= 8 else { throw fail("interface description block too short") }
        var iface = Interface(linkType: LinkType(rawValue: UInt32(u16(0))), snapLength: Int(u32(4)),
                              unitsPerSecond: 1_000_000, offsetSeconds: 0)
        var o = 8
        while o + 4 <= bodyLength {
            let code = u16(o), len = Int(u16(o + 2))
            if code == 0 { break }
            guard o + 4 + len <= bodyLength else { break }
            if code == 9 && len >= 1 {
                let v = buffer[o + 4]
                let exponent = UInt64(v & 0x7f)
                if v & 0x80 != 0 {
                    iface.unitsPerSecond = exponent < 64 ? 1 << exponent : 1
                } else {
                    var u: UInt64 = 1
                    for _ in 0..<min(exponent, 19) { u *= 10 }
                    iface.unitsPerSecond = u
                }
            } else if code == 14 && len >= 8 {
                let lo = UInt64(u32(o + 4)), hi = UInt64(u32(o + 8))
                iface.offsetSeconds = Int64(bitPattern: bigEndian ? (lo << 32 | hi) : (hi << 32 | lo))
            }
            o += 4 + ((len + 3) & ~3)
        }
        interfaces.append(iface)
    }

    private func nanoseconds(_ ticks: UInt64, _ iface: Interface) -> Int64 {
        let ups = iface.unitsPerSecond
        let seconds = ticks / ups, fraction = ticks % ups
        // fraction < ups, so the quotient is below 10^9; the 128-bit product
        // keeps resolutions finer than 1.8 * 10^10 units/s (if_tsresol 11 and
        // up: picoseconds) from overflowing 64 bits.
        let ns = ups == 1_000_000_000 ? fraction : ups.dividingFullWidth(fraction.multipliedFullWidth(by: 1_000_000_000)).quotient
        return (Int64(truncatingIfNeeded: seconds) &+ iface.offsetSeconds) &* 1_000_000_000 &+ Int64(truncatingIfNeeded: ns)
    }

    private func nextBlock() throws(PcapError) -> Bool {
        if hasPendingBlock {
            hasPendingBlock = false
            return true
        }
        return try readBlock()
    }

    /// The next frame, or `nil` at the end of the file; its bytes are valid
    /// until the next call.
    public func next() throws(PcapError) -> CapturedFrame? {
        while try nextBlock() {
            switch blockType {
            case 1:
                try addInterface()
            case 6, 2:
                // Enhanced: if_id(4) ts(8) caplen(4) len(4); obsolete: if_id(2) drops(2) ts(8) caplen(4) len(4).
                guard bodyLength >= 20 else { throw fail("packet block too short") }
                let id = blockType == 6 ? Int(u32(0)) : Int(u16(0))
                guard id < interfaces.count else { throw fail("packet for undeclared interface \(id)") }
                let caplen = Int(u32(12)), len = Int(u32(16))
                guard caplen <= bodyLength - 20 else { throw fail("captured length \(caplen) exceeds its block") }
                let iface = interfaces[id]
                let ticks = UInt64(u32(4)) << 32 | UInt64(u32(8))
                count += 1
                return CapturedFrame(
                    index: count, linkType: iface.linkType, timestampNanoseconds: nanoseconds(ticks, iface),
                    wireLength: len, bytes: UnsafeRawBufferPointer(start: buffer.baseAddress! + 20, count: caplen))
            case 3:
                // Simple: original length, then data, for interface 0.
                guard bodyLength >= 4 else { throw fail("simple packet block too short") }
                guard let iface = interfaces.first else { throw fail("simple packet block before any interface") }
                let len = Int(u32(0))
                var caplen = min(len, bodyLength - 4)
                if iface.snapLength > 0 { caplen = min(caplen, iface.snapLength) }
                count += 1
                return CapturedFrame(
                    index: count, linkType: iface.linkType, timestampNanoseconds: 0,
                    wireLength: len, bytes: UnsafeRawBufferPointer(start: buffer.baseAddress! + 4, count: caplen))
            default:
                continue  // section header (handled in readBlock), statistics, name resolution, custom ...
            }
        }
        return nil
    }
}
