import FastDemux

/// The packet words an ``EndpointStack`` hands around: buffers of its
/// receive pool (the word exactly as `PacketPool` makes it) or of its
/// reassembly pool (the same kind of word with the top bit set).
///
/// Reassembled datagrams (up to 64 KiB) live in a small pool of large
/// buffers (``ReassemblyTable`` explains why not every receive buffer is
/// 64 KiB); they go through the same socket queues as ordinary packets,
/// so the word must say which pool it names. The tag costs a test per
/// access, no memory.
///
/// TCP super-segments (up to 64 KiB of IP packet, behind their virtio-net
/// header) live in a third pool, when the device has segmentation offload;
/// their words carry the second-highest bit.
///
/// A plain value, any thread: ``bytes(_:)`` reads what the holder of the
/// word owns; ``free(_:)`` takes one pool lock (cores free through their
/// own caches instead, see ``EndpointStack``).
public struct StackBuffers: Sendable {
    /// The receive pool: TUN reads, output packets, fragments.
    public let pool: PacketPool
    /// The pool of reassembled datagrams.
    public let datagramPool: PacketPool
    /// The pool of TCP super-segments (nil without segmentation offload).
    /// A buffer holds the virtio-net header, then the IP packet.
    public let segmentPool: PacketPool?

    /// The buffers: `segmentPool` only for a stack with segmentation offload.
    public init(pool: PacketPool, datagramPool: PacketPool, segmentPool: PacketPool? = nil) {
        self.pool = pool
        self.datagramPool = datagramPool
        self.segmentPool = segmentPool
    }

    /// A super-segment buffer's size: a 10-byte virtio-net header and a
    /// 64 KiB IP packet, rounded up.
    public static let segmentBufferSize = 65_536 + 512

    /// The bit that marks a super-segment-pool word.
    @usableFromInline static let segmentTag: UInt = 1 << (UInt.bitWidth - 2)

    /// Whether `packet` names a super-segment's buffer.
    @inlinable public static func isSegment(_ packet: PacketRef) -> Bool { packet.word & segmentTag != 0 }

    @inlinable static func segmentTagged(_ p: PacketRef) -> PacketRef { PacketRef(word: p.word | segmentTag) }

    @inlinable static func segmentUntagged(_ p: PacketRef) -> PacketRef { PacketRef(word: p.word & ~segmentTag) }

    /// The bit that marks a reassembly-pool word.
    @usableFromInline static let datagramTag: UInt = 1 << (UInt.bitWidth - 1)

    /// The word of a reassembly-pool buffer.
    @inlinable static func tagged(_ p: PacketRef) -> PacketRef { PacketRef(word: p.word | datagramTag) }

    /// Whether `packet` names a reassembled datagram's buffer.
    @inlinable public static func isDatagram(_ packet: PacketRef) -> Bool { packet.word & datagramTag != 0 }

    @inlinable static func untagged(_ p: PacketRef) -> PacketRef { PacketRef(word: p.word & ~datagramTag) }

    /// The packet's bytes (its length as set; a super-segment's start with
    /// its virtio-net header). The caller holds the word.
    @inlinable
    public func bytes(_ packet: PacketRef) -> UnsafeRawBufferPointer {
        if Self.isSegment(packet) { return segmentPool!.bytes(Self.segmentUntagged(packet)) }
        return Self.isDatagram(packet) ? datagramPool.bytes(Self.untagged(packet)) : pool.bytes(packet)
    }

    /// Returns the buffer to its pool (one lock). Any thread.
    public func free(_ packet: PacketRef) {
        if Self.isSegment(packet) {
            segmentPool!.free(Self.segmentUntagged(packet))
        } else if Self.isDatagram(packet) {
            datagramPool.free(Self.untagged(packet))
        } else {
            pool.free(packet)
        }
    }
}
