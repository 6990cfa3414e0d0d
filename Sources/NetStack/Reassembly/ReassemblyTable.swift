/// Limits of a ``ReassemblyTable``. A plain value: any thread.
@frozen
public struct ReassemblyConfiguration: Sendable, BitwiseCopyable {
    /// Datagrams being reassembled at once (queue slots, preallocated).
    public var maxQueues: Int
    /// The memory cap: fragment buffers held at once, over all queues
    /// (Linux's ipfrag_high_thresh, 4 MiB, counted here in buffers: 2048
    /// buffers of 2 KiB are 4 MiB). A fragment beyond it is dropped as
    /// ``ReassemblyDropReason/memoryCap``.
    public var maxFragments: Int
    /// Fragments one datagram may queue (FreeBSD's maxfragsperpacket is
    /// 16; 64 lets a 65535-byte datagram through at MTU 1280, 52
    /// fragments). One more drops the datagram as
    /// ``ReassemblyDropReason/tooManyFragments``.
    public var maxFragmentsPerDatagram: Int
    /// How long an IPv4 datagram may take to complete, from its first
    /// fragment's arrival (Linux's ipfrag_time, 30 s).
    public var ipv4Timeout: Duration
    /// The same for IPv6 (RFC 8200 §4.5: 60 s; Linux's ip6frag_time).
    public var ipv6Timeout: Duration

    /// Linux's defaults, with 256 queues and 2048 fragment buffers.
    @inlinable
    public init(maxQueues: Int = 256, maxFragments: Int = 2048, maxFragmentsPerDatagram: Int = 64,
                ipv4Timeout: Duration = .seconds(30), ipv6Timeout: Duration = .seconds(60)) {
        self.maxQueues = maxQueues
        self.maxFragments = maxFragments
        self.maxFragmentsPerDatagram = maxFragmentsPerDatagram
        self.ipv4Timeout = ipv4Timeout
        self.ipv6Timeout = ipv6Timeout
    }
}

/// A reassembled datagram: a buffer of the table's datagram pool holding
/// the first fragment's link-layer header, a rebuilt IP header (IPv4: MF 0,
/// offset 0, total length and checksum rewritten; IPv6: the Fragment
/// header removed, payload length and the preceding Next Header rewritten)
/// and the whole payload. Parse it with the link type the fragments came
/// with. A plain value: any thread; the buffer belongs to whoever holds it
/// and goes back to ``ReassemblyTable/datagramPool``.
@frozen
public struct ReassembledDatagram: Sendable, BitwiseCopyable {
    /// The buffer, in ``ReassemblyTable/datagramPool`` (its length is set).
    public var packet: PacketRef
    /// Offset of the IP header in the buffer.
    public var networkOffset: Int
    /// Bytes in the buffer (link header, IP header, payload).
    public var length: Int
    /// Fragments that made it.
    public var fragments: Int
}

/// What ``ReassemblyTable/insert(_:_:now:)`` did with a fragment.
@frozen
public enum ReassemblyResult: Sendable, BitwiseCopyable {
    /// Queued; the table holds the buffer.
    case queued
    /// The fragment completed its datagram (the fragments' buffers are
    /// freed).
    case complete(ReassembledDatagram)
    /// The fragment was dropped (its buffer freed), and with it its queue
    /// if the reason drops whole datagrams.
    case dropped(ReassemblyDropReason)
}

/// Counters of a ``ReassemblyTable``. Conservation holds after every call:
/// `fragmentsIn == fragmentsReassembled + droppedFragments + fragmentsQueued`.
@frozen
public struct ReassemblyStatistics: Sendable {
    /// Fragments given to ``ReassemblyTable/insert(_:_:now:)``.
    public var fragmentsIn = 0
    /// Fragments that are part of a completed datagram.
    public var fragmentsReassembled = 0
    /// Fragments held now.
    public var fragmentsQueued = 0
    /// Datagrams completed.
    public var datagramsReassembled = 0
    /// Datagrams (queues) dropped, whatever the reason.
    public var datagramsDropped = 0
    /// Timed-out datagrams whose first fragment was present: an ICMP Time
    /// Exceeded (code 1, "fragment reassembly time exceeded") is owed
    /// (RFC 792; RFC 4443 §3.3; Linux's ip_expire / ip6frag_expire_frag_queue
    /// send it only then).
    public var timeExceededOwed = 0
    /// Dropped fragments per reason, indexed by raw value.
    public var droppedByReason = [Int](repeating: 0, count: ReassemblyDropReason.count)

    /// Dropped fragments with this reason.
    public func dropped(_ reason: ReassemblyDropReason) -> Int { droppedByReason[Int(reason.rawValue)] }
    /// Dropped fragments, all reasons.
    public var droppedFragments: Int { droppedByReason.reduce(0, +) }
    /// Whether the conservation law holds.
    public var isConserved: Bool {
        fragmentsIn == fragmentsReassembled + droppedFragments + fragmentsQueued
    }
}

/// IPv4 (RFC 791 §3.2, with RFC 815's hole bookkeeping reduced to a sorted
/// list) and IPv6 (RFC 8200 §4.5) fragment reassembly over
/// `PacketPool` buffers.
///
/// Fragments arrive as `NetworkPacket` values from
/// `PacketParser/parseNetwork(_:linkType:wireLength:)` together
/// with the buffer they were parsed from; the buffer is not copied but kept
/// until the datagram completes, then the pieces are copied once into one
/// buffer of ``datagramPool``, which the parser accepts as a whole
/// datagram. The rules (Linux's ip_frag_queue / ip6_frag_queue on
/// inet_frag_queue_insert) are listed in <doc:Reassembly>.
///
/// Memory: every queue slot and fragment slot is preallocated in `init`
/// (``ReassemblyConfiguration/maxQueues`` and
/// ``ReassemblyConfiguration/maxFragments``), and the key index is a
/// dictionary reserved for `maxQueues` keys, so that a remote sender can
/// make the table hold at most `maxFragments` buffers and no insert
/// allocates. Buffers go back through a `PacketPool/Cache` of
/// ``fragmentPool``; a completed datagram takes one buffer from
/// ``datagramPool`` (one lock per datagram, not per fragment).
///
/// Buffer size: a reassembled datagram is up to 65535 bytes of IPv4 total
/// length, or 40 + 65535 of IPv6, plus the link header; ordinary 2 KiB
/// receive buffers hold only the first fragment's worth. The stack uses a
/// small dedicated datagram pool of ``recommendedDatagramBufferSize``-byte
/// buffers (a few per core: 16 are about 1 MiB) rather than making every
/// receive buffer 64 KiB, which would cost 32 times the memory for
/// ordinary frames. A datagram that does not fit is dropped as
/// ``ReassemblyDropReason/bufferTooSmall``.
///
/// Concurrency contract: a table belongs to the one core executor that
/// owns the flows it reassembles (the core the fragments are steered to).
/// Every method must be called on that executor's thread, one at a time:
/// there are no locks and no atomics. Expiry is driven by ``expire(now:_:)``
/// with an explicit `now`, meant to run from a `KernelContinuation` timer
/// scheduled on that same executor (``nextDeadline`` says when); tests pass
/// their own instants.
public final class ReassemblyTable: @unchecked Sendable {
    // @unchecked Sendable: not thread-safe at all. It is Sendable only so a
    // KernelContinuation's @Sendable body, which runs on the owning core
    // executor, can capture it; the contract above (one executor, one call
    // at a time) is what makes that sound.

    /// Buffer size that holds any reassembled datagram: 40 + 65535 bytes
    /// of IPv6 (more than IPv4's 65535) plus 88 bytes for a link-layer
    /// header with VLAN tags, rounded up to 64 KiB + 128.
    public static let recommendedDatagramBufferSize = 65_536 + 128

    /// The limits (immutable).
    public let configuration: ReassemblyConfiguration
    /// The pool the fragments' buffers belong to (they are freed into it).
    public let fragmentPool: PacketPool
    /// The pool reassembled datagrams are built in (may be `fragmentPool`
    /// if its buffers are large enough).
    public let datagramPool: PacketPool
    /// The counters.
    public private(set) var statistics = ReassemblyStatistics()

    struct Key: Hashable {
        var source: IPAddress
        var destination: IPAddress
        var identification: UInt32
        /// IPv4's protocol; 0 for IPv6 (RFC 8200 §4.5 keys on addresses
        /// and Identification only).
        var proto: UInt8
    }

    struct Queue {
        var key: Key
        var deadline: ContinuousClock.Instant
        /// First fragment slot, sorted by offset; -1 if none.
        var head: Int32 = -1
        var count = 0
        /// Highest end seen, or the datagram's length once `lastIn`.
        var length = 0
        /// Data bytes queued (RFC 815's holes are `length - received` once
        /// first and last are in).
        var received = 0
        var lastIn = false
    }

    struct Fragment {
        var packet: PacketRef
        var start: Int
        var end: Int
        /// Where the data starts in the buffer.
        var dataOffset: Int
        /// Where the kept header ends: IPv4 the end of the IP header; IPv6
        /// the Fragment header's offset.
        var headerEnd: Int
        var networkOffset: Int
        var nextField: Int
        var fragmentNext: UInt8
        var next: Int32 = -1
    }

    private let queues: UnsafeMutablePointer<Queue?>
    private let fragments: UnsafeMutablePointer<Fragment>
    private var freeQueues: [Int32]
    private var freeFragmentHead: Int32
    private var index: [Key: Int32]
    private var cache: PacketPool.Cache

    /// A table with every slot preallocated (this is where it allocates:
    /// `maxQueues` queue slots, `maxFragments` fragment slots, the key
    /// index and a buffer cache). Any thread; then hand it to its executor.
    public init(configuration: ReassemblyConfiguration = ReassemblyConfiguration(),
                fragmentPool: PacketPool, datagramPool: PacketPool) {
        precondition(configuration.maxQueues >= 1 && configuration.maxFragments >= 1
                     && configuration.maxFragmentsPerDatagram >= 1)
        self.configuration = configuration
        self.fragmentPool = fragmentPool
        self.datagramPool = datagramPool
        queues = .allocate(capacity: configuration.maxQueues)
        queues.initialize(repeating: nil, count: configuration.maxQueues)
        fragments = .allocate(capacity: configuration.maxFragments)
        for i in 0..<configuration.maxFragments {
            (fragments + i).initialize(to: Fragment(
                packet: PacketRef(word: 0), start: 0, end: 0, dataOffset: 0, headerEnd: 0, networkOffset: 0,
                nextField: 0, fragmentNext: 0, next: i + 1 < configuration.maxFragments ? Int32(i + 1) : -1))
        }
        freeFragmentHead = 0
        freeQueues = (0..<Int32(configuration.maxQueues)).reversed()
        index = [:]
        index.reserveCapacity(configuration.maxQueues)
        cache = PacketPool.Cache(pool: fragmentPool)
    }

    deinit {
        for q in 0..<configuration.maxQueues where queues[q] != nil { freeBuffers(q) }
        queues.deinitialize(count: configuration.maxQueues)
        queues.deallocate()
        fragments.deinitialize(count: configuration.maxFragments)
        fragments.deallocate()
    }

    /// Free buffers the table's cache holds (for leak checks in tests).
    var cachedBufferCount: Int { cache.cachedCount }

    /// Datagrams being reassembled now.
    public var queueCount: Int { index.count }

    /// The fragments held now and their buffers' bytes (lengths as set,
    /// headers included), counted by walking every queue's fragment list:
    /// what the table keeps out of ``fragmentPool``. Owning executor only;
    /// O(`maxQueues` + fragments held), no allocation (control path: leak
    /// checks, status).
    public var held: (fragments: Int, bytes: Int) {
        var fragments = 0, bytes = 0
        for qi in 0..<configuration.maxQueues {
            guard let q = queues[qi] else { continue }
            var f = q.head
            while f >= 0 {
                fragments += 1
                bytes += fragmentPool.length(of: self.fragments[Int(f)].packet)
                f = self.fragments[Int(f)].next
            }
        }
        return (fragments, bytes)
    }

    /// The earliest deadline of a queued datagram (when ``expire(now:_:)``
    /// next has work), or nil when nothing is queued. O(``queueCount``)
    /// worth of slots: `maxQueues`.
    public var nextDeadline: ContinuousClock.Instant? {
        var best: ContinuousClock.Instant? = nil
        for q in 0..<configuration.maxQueues {
            if let d = queues[q]?.deadline, best == nil || d < best! { best = d }
        }
        return best
    }

    // MARK: Insert

    /// Takes one fragment: `packet` is the buffer (of ``fragmentPool``) the
    /// frame was parsed from, `info` what
    /// `PacketParser/parseNetwork(_:linkType:wireLength:)`
    /// returned for it. Ownership of `packet` passes to the table in every
    /// case: it is queued, or freed (dropped, or copied into the completed
    /// datagram).
    ///
    /// Owning executor only. No allocation; O(fragments of the datagram)
    /// for the sorted insert, plus the copy of the datagram when it
    /// completes.
    public func insert(_ packet: PacketRef, _ info: NetworkPacket, now: ContinuousClock.Instant) -> ReassemblyResult {
        statistics.fragmentsIn += 1
        guard let frag = info.fragment else { return dropFragment(packet, .notAFragment) }
        guard !info.isTruncated else { return dropFragment(packet, .truncated) }
        let ipv6 = info.family == .ipv6
        let start = frag.offset
        let dataLength = info.end - info.upperLayerOffset
        var end = start + dataLength
        if ipv6 {
            // ip6_frag_queue: the fragment alone is refused (with an ICMPv6
            // Parameter Problem) when it ends past 65535 or, not being the
            // last, its length is not a multiple of 8 (RFC 8200 §4.5).
            if end > 65_535 { return dropFragment(packet, .oversizeDatagram) }
            if frag.moreFragments && end & 7 != 0 { return dropFragment(packet, .inconsistentLength) }
            if start == 0 && headerChainTruncated(packet, info) {
                return dropFragment(packet, .incompleteHeaderChain)
            }
        } else if frag.moreFragments && end & 7 != 0 {
            // ip_frag_queue: a non-last fragment is trimmed to 8-byte units.
            end &= ~7
        }
        // The memory cap refuses the new fragment and keeps the queues
        // (inet_frag_find above ipfrag_high_thresh).
        guard freeFragmentHead >= 0 else { return dropFragment(packet, .memoryCap) }
        let key = Key(source: info.source, destination: info.destination, identification: frag.identification,
                      proto: ipv6 ? 0 : info.upperLayerProtocol)
        let qi: Int
        if let existing = index[key] {
            qi = Int(existing)
        } else {
            guard let slot = freeQueues.popLast() else { return dropFragment(packet, .memoryCap) }
            qi = Int(slot)
            // The timer starts with the first fragment to arrive and is
            // never pushed back (RFC 8200 §4.5; Linux's inet_frag_create).
            let timeout = ipv6 ? configuration.ipv6Timeout : configuration.ipv4Timeout
            queues[qi] = Queue(key: key, deadline: now + timeout)
            index[key] = slot
        }
        return queue(qi, packet, info, frag, start: start, end: end)
    }

    /// ip_frag_queue / ip6_frag_queue from "is this the final fragment?" on.
    private func queue(_ qi: Int, _ packet: PacketRef, _ info: NetworkPacket, _ frag: FragmentInfo,
                       start: Int, end: Int) -> ReassemblyResult {
        var q = queues[qi]!
        if !frag.moreFragments {
            // A last fragment must not end before data already received nor
            // differ from an earlier last fragment.
            if end < q.length || (q.lastIn && end != q.length) { return dropQueue(qi, packet, .inconsistentLength) }
            q.lastIn = true
            q.length = end
        } else if end > q.length {
            // Data past the received last fragment.
            if q.lastIn { return dropQueue(qi, packet, .inconsistentLength) }
            q.length = end
        }
        if end == start { return dropQueue(qi, packet, .emptyFragment) }
        // IPv4 cannot exceed a 65535-byte total length with a 20-byte header
        // or more (ip_frag_reasm's out_oversize, detected as soon as the
        // data reaches that far rather than at completion).
        if info.family == .ipv4 && 20 + q.length > 65_535 { return dropQueue(qi, packet, .oversizeDatagram) }

        // inet_frag_queue_insert: find the place; inside received data is
        // a duplicate (dropped alone), partly over it an overlap (the
        // datagram goes).
        var previous: Int32 = -1
        var f = q.head
        while f >= 0 && fragments[Int(f)].end <= start {
            previous = f
            f = fragments[Int(f)].next
        }
        if f >= 0 && fragments[Int(f)].start < end {
            // [start, end) meets received data: a duplicate only if the
            // fragments from f on cover it without a gap.
            var covered = start
            var g = f
            while g >= 0 && fragments[Int(g)].start <= covered && covered < end {
                covered = max(covered, fragments[Int(g)].end)
                g = fragments[Int(g)].next
            }
            queues[qi] = q
            return covered >= end ? dropFragment(packet, .duplicate) : dropQueue(qi, packet, .overlap)
        }
        if q.count + 1 > configuration.maxFragmentsPerDatagram {
            queues[qi] = q
            return dropQueue(qi, packet, .tooManyFragments)
        }
        let slot = freeFragmentHead
        freeFragmentHead = fragments[Int(slot)].next
        fragments[Int(slot)] = Fragment(
            packet: packet, start: start, end: end, dataOffset: info.upperLayerOffset,
            headerEnd: frag.headerOffset == info.networkOffset ? info.upperLayerOffset : frag.headerOffset,
            networkOffset: info.networkOffset, nextField: frag.nextHeaderFieldOffset,
            fragmentNext: info.upperLayerProtocol, next: f)
        if previous >= 0 { fragments[Int(previous)].next = slot } else { q.head = slot }
        q.count += 1
        q.received += end - start
        statistics.fragmentsQueued += 1
        queues[qi] = q
        // Complete: the first fragment is in (the head starts at 0), the
        // last is in and there are no holes (RFC 815: the hole list is
        // empty; with no overlaps, the received bytes are the length).
        if q.lastIn && fragments[Int(q.head)].start == 0 && q.received == q.length {
            return assemble(qi)
        }
        return .queued
    }

    /// RFC 8200 §4.5 / RFC 7112: the first fragment must carry the header
    /// chain through the upper-layer header (Linux's
    /// ipv6_frag_thdr_truncated: TCP 20 bytes, UDP 8, ICMPv6 8, other 1).
    private func headerChainTruncated(_ packet: PacketRef, _ info: NetworkPacket) -> Bool {
        let bytes = fragmentPool.bytes(packet)
        var next = info.upperLayerProtocol
        var o = info.upperLayerOffset
        let end = min(info.end, bytes.count)
        var chained = 0
        while next == 0 || next == 43 || next == 60 || next == 51 {
            chained += 1
            guard chained <= PacketParser.maxIPv6ExtensionHeaders, o + 2 <= end else { return true }
            let length = next == 51 ? (Int(bytes[o + 1]) + 2) * 4 : (Int(bytes[o + 1]) + 1) * 8
            next = bytes[o]
            o += length
        }
        switch next {
        case 6: o += 20
        case 17, 58: o += 8
        default: o += 1
        }
        return o > end
    }

    // MARK: Assembly

    /// ip_frag_reasm / ip6_frag_reasm: one copy of every fragment's data
    /// behind the first fragment's headers, then the header rewritten.
    private func assemble(_ qi: Int) -> ReassemblyResult {
        let q = queues[qi]!
        let first = fragments[Int(q.head)]
        let ipv6 = q.key.source.family == .ipv6
        let ip = first.networkOffset
        let headerEnd = first.headerEnd
        let ipLength = headerEnd - ip + q.length
        // IPv4 total length, IPv6 payload length (the unfragmentable
        // extension headers count, the Fragment header does not).
        if (ipv6 ? ipLength - 40 : ipLength) > 65_535 { return dropQueue(qi, nil, .oversizeDatagram) }
        let total = headerEnd + q.length
        guard total <= datagramPool.bufferSize else { return dropQueue(qi, nil, .bufferTooSmall) }
        guard let out = datagramPool.allocate() else { return dropQueue(qi, nil, .noBuffer) }
        let dst = datagramPool.buffer(out).baseAddress!
        dst.copyMemory(from: fragmentPool.bytes(first.packet).baseAddress!, byteCount: headerEnd)
        var f = q.head
        while f >= 0 {
            let piece = fragments[Int(f)]
            let src = fragmentPool.bytes(piece.packet).baseAddress! + piece.dataOffset
            (dst + headerEnd + piece.start).copyMemory(from: src, byteCount: piece.end - piece.start)
            f = piece.next
        }
        let buffer = datagramPool.buffer(out)
        @inline(__always) func store16(_ v: Int, at o: Int) {
            buffer[o] = UInt8(truncatingIfNeeded: v >> 8)
            buffer[o + 1] = UInt8(truncatingIfNeeded: v)
        }
        if ipv6 {
            store16(ipLength - 40, at: ip + 4)
            buffer[first.nextField] = first.fragmentNext
        } else {
            store16(ipLength, at: ip + 2)
            store16(0, at: ip + 6)  // MF 0, offset 0 (DF is not kept)
            store16(0, at: ip + 10)
            store16(Int(Checksum.fold(Checksum.sum(UnsafeRawBufferPointer(buffer), from: ip, count: headerEnd - ip))),
                    at: ip + 10)
        }
        datagramPool.setLength(total, of: out)
        freeBuffers(qi)
        let count = q.count
        releaseQueue(qi)
        statistics.fragmentsReassembled += count
        statistics.datagramsReassembled += 1
        return .complete(ReassembledDatagram(packet: out, networkOffset: ip, length: total, fragments: count))
    }

    // MARK: Expiry

    /// Drops every datagram whose timeout has passed at `now`, counting its
    /// fragments as ``ReassemblyDropReason/timeout``. For each such datagram
    /// whose first fragment (offset 0) was received, `timeExceeded` is
    /// called with that fragment's buffer and its IP header offset before
    /// the buffer is freed, so that the output path can quote it in an ICMP
    /// Time Exceeded, code 1 (the buffer may be read, not kept, during the
    /// call). Returns the number of datagrams dropped.
    ///
    /// Owning executor only, typically from a `KernelContinuation` timer
    /// armed for ``nextDeadline``; O(`maxQueues`). No allocation.
    @discardableResult
    public func expire(now: ContinuousClock.Instant,
                       _ timeExceeded: (_ firstFragment: PacketRef, _ networkOffset: Int) -> Void = { _, _ in }) -> Int {
        var expired = 0
        for qi in 0..<configuration.maxQueues {
            guard let q = queues[qi], q.deadline <= now else { continue }
            if q.head >= 0 && fragments[Int(q.head)].start == 0 {
                statistics.timeExceededOwed += 1
                timeExceeded(fragments[Int(q.head)].packet, fragments[Int(q.head)].networkOffset)
            }
            _ = dropQueue(qi, nil, .timeout)
            expired += 1
        }
        return expired
    }

    // MARK: Dropping

    private func dropFragment(_ packet: PacketRef, _ reason: ReassemblyDropReason) -> ReassemblyResult {
        cache.free(packet)
        statistics.droppedByReason[Int(reason.rawValue)] += 1
        return .dropped(reason)
    }

    /// Drops the queue's fragments and `packet` (the one that caused it, if
    /// any) under `reason`.
    private func dropQueue(_ qi: Int, _ packet: PacketRef?, _ reason: ReassemblyDropReason) -> ReassemblyResult {
        freeBuffers(qi)
        let count = queues[qi]!.count
        releaseQueue(qi)
        statistics.droppedByReason[Int(reason.rawValue)] += count
        statistics.datagramsDropped += 1
        if let packet { return dropFragment(packet, reason) }
        return .dropped(reason)
    }

    /// Frees the buffers of the queue's fragments (not the slots).
    private func freeBuffers(_ qi: Int) {
        var f = queues[qi]!.head
        while f >= 0 {
            cache.free(fragments[Int(f)].packet)
            f = fragments[Int(f)].next
        }
    }

    /// Returns the queue's fragment slots and the queue slot (not the
    /// buffers: the caller has freed or copied them).
    private func releaseQueue(_ qi: Int) {
        let q = queues[qi]!
        if q.head >= 0 {
            var last = q.head
            while fragments[Int(last)].next >= 0 { last = fragments[Int(last)].next }
            fragments[Int(last)].next = freeFragmentHead
            freeFragmentHead = q.head
        }
        statistics.fragmentsQueued -= q.count
        index.removeValue(forKey: q.key)
        queues[qi] = nil
        freeQueues.append(Int32(qi))
    }
}
