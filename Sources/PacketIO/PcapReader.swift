import FastDemux
import CPcap
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One frame read from a capture file.
///
/// `bytes` points into the reader's buffer and is valid only until the next
/// call to ``PcapReader/next()`` (or the end of the ``PcapReader/forEach(_:)``
/// callback) and while the reader is alive: copy what must outlive it.
public struct CapturedFrame {
    /// 1-based position among the file's packet records, in file order
    /// (pcapng: enhanced, simple and obsolete packet blocks; other blocks
    /// are not counted). Matches tshark's frame number and the oracle's
    /// `pkt` column.
    public var index: Int
    /// The link-layer type of this frame (per interface in pcapng).
    public var linkType: LinkType
    /// Capture time in nanoseconds since the Unix epoch.
    public var timestampNanoseconds: Int64
    /// Original length on the wire (`len`); `bytes.count` is `caplen`.
    public var wireLength: Int
    /// The captured bytes (`caplen` of them).
    public var bytes: UnsafeRawBufferPointer

    /// Captured length (`caplen`).
    @inlinable
    public var capturedLength: Int { bytes.count }

    /// A frame from its parts (for sources other than a file, and tests);
    /// `bytes` must stay valid as long as the frame is used.
    public init(index: Int, linkType: LinkType, timestampNanoseconds: Int64, wireLength: Int,
                bytes: UnsafeRawBufferPointer) {
        self.index = index
        self.linkType = linkType
        self.timestampNanoseconds = timestampNanoseconds
        self.wireLength = wireLength
        self.bytes = bytes
    }
}

/// Why a capture file could not be read.
public enum PcapError: Error, CustomStringConvertible, Equatable {
    /// The file does not exist or cannot be opened.
    case cannotOpen(path: String, reason: String)
    /// The file is not a pcap or pcapng capture (or its header is broken).
    case notACapture(path: String, reason: String)
    /// A record after `packetsRead` good packets is broken or cut short.
    case malformed(path: String, packetsRead: Int, reason: String)

    /// `path: what went wrong`, for error messages.
    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason): return "\(path): cannot open: \(reason)"
        case .notACapture(let path, let reason): return "\(path): not a pcap/pcapng capture: \(reason)"
        case .malformed(let path, let n, let reason): return "\(path): broken after \(n) packets: \(reason)"
        }
    }
}

/// Replays a pcap or pcapng capture file, frame by frame.
///
/// Classic pcap files are read through libpcap (`pcap_open_offline`,
/// `pcap_next_ex`). pcapng files are read by ``PcapngReader``, because
/// libpcap 1.10 gives one link type per file and refuses a file whose
/// interfaces have different link types, while a pcapng file may mix them
/// (every enhanced packet block names its interface, and every interface
/// has its own link type).
///
/// Concurrency and cost: not thread-safe; use one reader per thread. After
/// opening, reading allocates nothing per frame (one reused buffer, grown
/// only for a larger frame than any before).
public final class PcapReader {
    /// The container format.
    public enum Format: Sendable {
        /// Classic pcap (any byte order, microsecond or nanosecond timestamps),
        /// read through libpcap.
        case pcap
        /// pcapng, read by ``PcapngReader`` (several interfaces and link types
        /// per file).
        case pcapng
    }

    /// The file's path, or the name given to an in-memory capture (used in
    /// error messages).
    public let path: String
    /// The container format, from the file's magic number.
    public let format: Format
    private var pcap: OpaquePointer?
    private var pcapng: PcapngReader?
    private var count = 0
    private let fileLinkType: LinkType
    /// The copy of an in-memory capture that `fmemopen` reads (nil for a file).
    private let memory: UnsafeMutableRawBufferPointer?

    /// Opens `path`.
    ///
    /// - Throws: ``PcapError/cannotOpen(path:reason:)`` if the file is missing
    ///   or unreadable, ``PcapError/notACapture(path:reason:)`` if it is
    ///   neither pcap nor pcapng.
    public convenience init(path: String) throws(PcapError) {
        guard let file = fopen(path, "rb") else {
            throw .cannotOpen(path: path, reason: String(cString: strerror(errno)))
        }
        try self.init(file: file, name: path, memory: nil)
    }

    /// Reads a capture held in memory (pcap or pcapng bytes), for example a
    /// capture bundled as a resource. The bytes are copied once; `name`
    /// stands for the file in error messages.
    ///
    /// - Throws: ``PcapError/notACapture(path:reason:)`` if the bytes are
    ///   neither pcap nor pcapng.
    public convenience init(bytes: [UInt8], name: String) throws(PcapError) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        bytes.withUnsafeBytes { memory.copyMemory(from: $0) }
        guard let file = fmemopen(memory.baseAddress, bytes.count, "rb") else {
            let reason = String(cString: strerror(errno))
            memory.deallocate()
            throw .cannotOpen(path: name, reason: reason)
        }
        do {
            try self.init(file: file, name: name, memory: memory)
        } catch {
            memory.deallocate()
            throw error
        }
    }

    /// Takes ownership of `file` (closed on every path).
    private init(file: UnsafeMutablePointer<FILE>, name path: String,
                 memory: UnsafeMutableRawBufferPointer?) throws(PcapError) {
        self.path = path
        var magic: UInt32 = 0
        let got = fread(&magic, 1, 4, file)
        if got == 4 && magic == 0x0A0D_0D0A {  // palindromic: same in either byte order
            rewind(file)
            self.format = .pcapng
            let reader = try PcapngReader(file: file, path: path)
            self.pcapng = reader
            self.fileLinkType = reader.firstLinkType ?? LinkType(rawValue: UInt32.max)
            self.memory = memory
            return
        }
        if ferror(file) != 0 {
            fclose(file)
            throw .cannotOpen(path: path, reason: "read error (a directory?)")
        }
        rewind(file)
        self.format = .pcap
        var errbuf = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        // On success libpcap owns `file` and closes it in pcap_close.
        guard let p = pcap_fopen_offline_with_tstamp_precision(file, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errbuf) else {
            fclose(file)
            let reason = String(decoding: errbuf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw .notACapture(path: path, reason: reason)
        }
        self.pcap = p
        self.fileLinkType = Self.linkType(fromDLT: pcap_datalink(p))
        self.memory = memory
    }

    deinit {
        if let pcap { pcap_close(pcap) }
        pcapng = nil  // closes its FILE before the memory it reads goes
        memory?.deallocate()
    }

    /// The link type of the file (pcap) or of its first interface (pcapng);
    /// frames carry their own in ``CapturedFrame/linkType``.
    public var linkType: LinkType { fileLinkType }

    /// Frames read so far.
    public var framesRead: Int { count }

    /// libpcap reports `DLT_` values; map the platform `DLT_RAW` back to
    /// `LINKTYPE_RAW` so frames carry file-format numbers.
    static func linkType(fromDLT dlt: Int32) -> LinkType {
        dlt == 12 ? .raw : LinkType(rawValue: UInt32(bitPattern: dlt))
    }

    /// The next frame, or `nil` at the end of the file. The frame's bytes
    /// are valid until the next call.
    ///
    /// - Throws: ``PcapError/malformed(path:packetsRead:reason:)`` when a
    ///   record is broken or the file is cut short; the frames before it
    ///   were good.
    public func next() throws(PcapError) -> CapturedFrame? {
        if let pcapng {
            guard let frame = try pcapng.next() else { return nil }
            count = frame.index
            return frame
        }
        guard let pcap else { return nil }
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        switch pcap_next_ex(pcap, &header, &data) {
        case 1:
            guard let header, let data else { return nil }
            count += 1
            let h = header.pointee
            // Opened with nanosecond precision: tv_usec holds nanoseconds.
            let ns = Int64(h.ts.tv_sec) &* 1_000_000_000 &+ Int64(h.ts.tv_usec)
            return CapturedFrame(
                index: count, linkType: fileLinkType, timestampNanoseconds: ns, wireLength: Int(h.len),
                bytes: UnsafeRawBufferPointer(start: data, count: Int(h.caplen)))
        case -2:
            return nil
        default:
            throw .malformed(path: path, packetsRead: count, reason: String(cString: pcap_geterr(pcap)))
        }
    }

    /// Calls `body` with every remaining frame, in file order.
    public func forEach(_ body: (CapturedFrame) throws -> Void) throws {
        while let frame = try next() {
            try body(frame)
        }
    }
}
