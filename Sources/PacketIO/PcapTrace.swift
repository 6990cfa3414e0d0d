import FastDemux

/// Every frame of a capture file loaded into one contiguous allocation, for
/// replaying the same traffic many times (benchmarks, multi-core replay)
/// without touching the file or allocating per frame.
///
/// Concurrency: immutable after `init`, so any number of threads may read
/// frames at once (hence `Sendable`). Frame bytes stay valid as long as the
/// trace is alive.
public final class PcapTrace: @unchecked Sendable {
    // @unchecked: all stored state is written only in init and never
    // mutated afterwards; the raw storage is freed only in deinit.
    private struct Record {
        var offset: Int
        var capturedLength: Int
        var wireLength: Int
        var linkType: LinkType
        var timestampNanoseconds: Int64
    }

    private let storage: UnsafeMutableRawBufferPointer
    private let records: [Record]
    /// The file the frames came from.
    public let path: String

    /// Loads every frame of `path`.
    ///
    /// - Parameters:
    ///   - path: the pcap or pcapng file to read.
    ///   - limit: stop after this many frames.
    /// - Throws: ``PcapError`` as ``PcapReader`` does; a file broken part
    ///   way through throws too (no partial trace).
    public init(path: String, limit: Int = .max) throws(PcapError) {
        self.path = path
        let reader = try PcapReader(path: path)
        var bytes: [UInt8] = []
        var records: [Record] = []
        while records.count < limit, let frame = try reader.next() {
            records.append(Record(offset: bytes.count, capturedLength: frame.bytes.count, wireLength: frame.wireLength,
                                  linkType: frame.linkType, timestampNanoseconds: frame.timestampNanoseconds))
            bytes.append(contentsOf: frame.bytes)
        }
        // One exact allocation (16-byte aligned start), so the bytes do not
        // move and can be handed out as raw pointers.
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        bytes.withUnsafeBytes { storage.copyMemory(from: $0) }
        self.storage = storage
        self.records = records
    }

    deinit { storage.deallocate() }

    /// Number of frames.
    public var count: Int { records.count }

    /// Total captured bytes.
    public var byteCount: Int { records.last.map { $0.offset + $0.capturedLength } ?? 0 }

    /// Frame `i` (0-based; its ``CapturedFrame/index`` is `i + 1`). O(1),
    /// no allocation; the bytes are valid while the trace is alive.
    public subscript(i: Int) -> CapturedFrame {
        let r = records[i]
        return CapturedFrame(index: i + 1, linkType: r.linkType, timestampNanoseconds: r.timestampNanoseconds,
                             wireLength: r.wireLength,
                             bytes: UnsafeRawBufferPointer(rebasing: storage[r.offset..<(r.offset + r.capturedLength)]))
    }
}
