import FastDemux
import Glibc
import SMPPrimitives
import Synchronization

/// Where a demultiplexing session (DemuxLab's `DemuxSession`) gets its
/// frames: a capture file, a live TUN device, a generator.
///
/// Concurrency contract: a source is used by one thread at a time (the
/// session's reader thread). The frame returned by ``nextFrame()`` is valid
/// until the next call; the session copies what it keeps.
public protocol PacketSource: SendableMetatype {
    /// The next frame, or nil at the end (end of file; for a live source:
    /// its duration or packet count is reached, or it was stopped). A live
    /// source may block inside this call while waiting for traffic.
    mutating func nextFrame() throws -> CapturedFrame?

    /// True if ``nextFrame()`` may block for long (a live device). The
    /// session then takes its reader thread out of RCU grace-period
    /// detection while it waits, so a blocked reader never stalls writers.
    var mayBlock: Bool { get }
}

extension PacketSource {
    /// By default a source does not block (a file, a generator).
    public var mayBlock: Bool { false }
}

/// A capture file (pcap or pcapng, see ``PcapReader``) as a packet source.
/// One thread at a time (the reader is not thread-safe); no allocation per
/// frame.
public struct CaptureFileSource: PacketSource {
    /// The reader frames come from (used only by the source's thread).
    public let reader: PcapReader

    /// Opens `path`.
    /// - Throws: ``PcapError`` (missing file, not a capture).
    public init(path: String) throws(PcapError) {
        reader = try PcapReader(path: path)
    }

    /// Reads from an open reader (a file, or a capture in memory).
    public init(reader: PcapReader) {
        self.reader = reader
    }

    /// The reader's next frame (``PcapReader/next()``): valid until the next
    /// call. Source thread only.
    public mutating func nextFrame() throws -> CapturedFrame? {
        try reader.next()
    }
}

/// A live TUN device as a packet source: every IP packet the kernel routes
/// into the interface, as `LINKTYPE_RAW` frames, until a duration passes, a
/// packet count is reached, or ``stop()`` is called from any thread.
///
/// Waits with `poll` in slices of at most 100 ms, so a stop request or the
/// deadline is noticed within 100 ms even when no traffic arrives. No
/// allocation per packet (one reused 64 KiB buffer).
public final class TUNPacketSource: PacketSource, @unchecked Sendable {
    // @unchecked Sendable: everything but `stopRequested` is used only by
    // the single reader thread (the PacketSource contract); `stop()` touches
    // only the atomic.
    /// The device packets are read from (open until its owner closes it).
    public let device: TUNDevice
    /// The queue read: the device's first (its only one unless it is a
    /// multi-queue device; see ``TUNQueueReader`` for reading them all).
    private let queue: TUNQueue
    private let buffer: UnsafeMutableRawBufferPointer
    private let deadline: Double?
    private let maxPackets: Int?
    private var count = 0
    private let stopRequested = Atomic<Bool>(false)

    /// - Parameters:
    ///   - device: an open TUN device (the source does not close it); its
    ///     first queue is read.
    ///   - duration: stop after this many seconds (nil: no limit).
    ///   - count: stop after this many packets (nil: no limit).
    public init(device: TUNDevice, duration: Double? = nil, count: Int? = nil) {
        self.device = device
        self.queue = device.queues[0]
        self.buffer = .allocate(byteCount: TUNDevice.maximumPacketSize, alignment: 16)
        self.deadline = duration.map { monotonicSeconds() + $0 }
        self.maxPackets = count
    }

    deinit { buffer.deallocate() }

    /// True: ``nextFrame()`` waits for traffic.
    public var mayBlock: Bool { true }

    /// Packets read so far.
    public var packetsRead: Int { count }

    /// Makes ``nextFrame()`` return nil within 100 ms. Any thread.
    public func stop() {
        // Relaxed: a flag polled in a loop; nothing else is published with it.
        stopRequested.store(true, ordering: .relaxed)
    }

    /// The next IP packet the kernel routes into the device, as a
    /// `LINKTYPE_RAW` frame timestamped with the real-time clock; nil once
    /// the duration or the packet count is reached, or after ``stop()``.
    /// Blocks (in `poll` slices of at most 100 ms) while no traffic arrives.
    /// The frame's bytes are the source's one buffer: valid until the next
    /// call. Source thread only; no allocation.
    ///
    /// - Throws: ``TUNError`` if reading or polling the device fails.
    public func nextFrame() throws -> CapturedFrame? {
        if let maxPackets, count >= maxPackets { return nil }
        while !stopRequested.load(ordering: .relaxed) {
            if let n = try queue.read(into: buffer) {
                count += 1
                var ts = timespec()
                clock_gettime(CLOCK_REALTIME, &ts)
                return CapturedFrame(index: count, linkType: .raw,
                                     timestampNanoseconds: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec),
                                     wireLength: n,
                                     bytes: UnsafeRawBufferPointer(start: buffer.baseAddress, count: n))
            }
            var slice = Duration.milliseconds(100)
            if let deadline {
                let left = deadline - monotonicSeconds()
                if left <= 0 { return nil }
                slice = .milliseconds(min(100, max(1, Int(left * 1000))))
            }
            _ = try queue.wait(timeout: slice)
        }
        return nil
    }
}
