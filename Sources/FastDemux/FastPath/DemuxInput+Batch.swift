// The batch path of the fast path: the same deliveries as one call per
// packet, in passes that overlap the packets' cache misses.
extension DemuxInput {
    /// Delivers a batch of parsed packets (any number; processed in chunks
    /// of ``burstCapacity``) with the same result as calling
    /// ``deliver(_:key:tcp:payloadLength:)`` for each in order (per socket:
    /// the order between different sockets' packets may change), but in
    /// passes: look up every key, then touch every socket and its queue,
    /// then group the packets by socket, then hand each socket its group at
    /// once. The first passes have no dependencies between packets, so the
    /// processor overlaps their cache misses (the node, the socket, the
    /// queue) instead of paying them one after the other; the hand-over
    /// costs one queue reservation (`PCQ.put(contentsOf:)`, one ticket
    /// CAS), one readiness entry and for TCP one try-lock per socket per
    /// chunk instead of per packet. Must run inside ``burst(_:)``.
    /// `onDrop(i, reason)` is called for each packet not queued, in
    /// arrival order, after the chunk's hand-overs (free its buffer there).
    @inlinable
    public func deliver(batch: UnsafeBufferPointer<DemuxPacket>, onDrop: (Int, DemuxDropReason) -> Void) {
        assert(inBurst, "deliver outside of burst { }")
        var start = 0
        while start < batch.count {
            let n = Swift.min(batch.count - start, DemuxInput.burstCapacity)
            deliverChunk(UnsafeBufferPointer(rebasing: batch[start..<(start + n)]), first: start, onDrop: onDrop)
            start += n
        }
    }

    @inlinable
    func deliverChunk(_ batch: UnsafeBufferPointer<DemuxPacket>, first: Int, onDrop: (Int, DemuxDropReason) -> Void) {
        let n = batch.count
        let g = grouping
        // Pass 1: every lookup (independent: their node misses overlap).
        for i in 0..<n { resolved[i] = table.lookup(batch[i].key) }
        // Pass 2: touch each socket's hot line and its queue object.
        warmSink &+= SocketDelivery.warm(resolved, count: n)
        // Pass 3: group the packets by socket, groups in order of first
        // appearance, each group's packets in arrival order (a counting
        // sort over a small open-addressed table keyed by the socket's
        // address; no allocation).
        var groups = 0
        for i in 0..<n {
            guard let r = resolved[i] else {
                delivery.deliver(batch[i], to: nil, tcp: .socketTryLock, counting: true)
                g.verdicts[i] = SocketDelivery.verdictCode(.noSocket)
                continue
            }
            let bits = r.bits
            var h = Int(truncatingIfNeeded: ((bits &>> 4) &* 0x9E37_79B9_7F4A_7C15) &>> 57)   // top 7 bits
            while true {
                let e = g.slotKeys[h]
                if e == bits {
                    let grp = Int(g.slotGroups[h])
                    g.groupCounts[grp] &+= 1
                    g.groupOf[i] = Int32(grp)
                    break
                }
                if e == 0 {
                    g.slotKeys[h] = bits
                    g.slotGroups[h] = Int32(groups)
                    g.groupSlots[groups] = Int32(h)
                    g.groupSockets[groups] = r
                    g.groupCounts[groups] = 1
                    g.groupOf[i] = Int32(groups)
                    groups &+= 1
                    break
                }
                h = (h &+ 1) & (DemuxInputGrouping.slotCount &- 1)
            }
        }
        var offset: Int32 = 0
        for grp in 0..<groups {
            g.groupStarts[grp] = offset
            g.groupFill[grp] = offset
            offset &+= g.groupCounts[grp]
        }
        for i in 0..<n where resolved[i] != nil {
            let grp = Int(g.groupOf[i])
            g.order[Int(g.groupFill[grp])] = Int32(i)
            g.groupFill[grp] &+= 1
        }
        // Pass 4: one hand-over per socket (one queue reservation, one
        // readiness entry, one TCP try-lock), and the table cleared for the
        // next chunk.
        for grp in 0..<groups {
            delivery.deliverGroup(batch, order: g.order + Int(g.groupStarts[grp]), count: Int(g.groupCounts[grp]),
                                  to: g.groupSockets[grp], words: g.words, verdicts: g.verdicts, counting: true)
            g.slotKeys[Int(g.groupSlots[grp])] = 0
        }
        // Pass 5: the drops, reported in arrival order.
        for i in 0..<n where g.verdicts[i] != 0 {
            onDrop(first + i, DemuxDropReason(rawValue: Int(g.verdicts[i]) &- 1).unsafelyUnwrapped)
        }
    }
}

/// The scratch space of ``DemuxInput/deliver(batch:onDrop:)``'s grouping
/// pass, allocated once per input (one chunk of
/// ``DemuxInput/burstCapacity`` packets at most) and owned by its thread.
@usableFromInline
struct DemuxInputGrouping {
    /// Open-addressed slots (at least twice the chunk: short probes).
    @usableFromInline static var slotCount: Int { 128 }
    /// Socket address per slot (0: empty; every slot is emptied again at
    /// the end of each chunk) and the group it maps to.
    @usableFromInline let slotKeys: UnsafeMutablePointer<UInt>
    @usableFromInline let slotGroups: UnsafeMutablePointer<Int32>
    /// Per group: its socket, packet count, slot, first index into `order`
    /// and fill position.
    @usableFromInline let groupSockets: UnsafeMutablePointer<SocketReference>
    @usableFromInline let groupCounts: UnsafeMutablePointer<Int32>
    @usableFromInline let groupSlots: UnsafeMutablePointer<Int32>
    @usableFromInline let groupStarts: UnsafeMutablePointer<Int32>
    @usableFromInline let groupFill: UnsafeMutablePointer<Int32>
    /// Per packet: its group, and its verdict code.
    @usableFromInline let groupOf: UnsafeMutablePointer<Int32>
    @usableFromInline let verdicts: UnsafeMutablePointer<UInt8>
    /// Packet indices, grouped; and one group's packet words.
    @usableFromInline let order: UnsafeMutablePointer<Int32>
    @usableFromInline let words: UnsafeMutablePointer<PacketRef>

    init(capacity: Int) {
        precondition(capacity <= Self.slotCount / 2)
        slotKeys = .allocate(capacity: Self.slotCount)
        slotKeys.initialize(repeating: 0, count: Self.slotCount)
        slotGroups = .allocate(capacity: Self.slotCount)
        groupSockets = .allocate(capacity: capacity)
        groupCounts = .allocate(capacity: capacity)
        groupSlots = .allocate(capacity: capacity)
        groupStarts = .allocate(capacity: capacity)
        groupFill = .allocate(capacity: capacity)
        groupOf = .allocate(capacity: capacity)
        verdicts = .allocate(capacity: capacity)
        order = .allocate(capacity: capacity)
        words = .allocate(capacity: capacity)
    }

    func deallocate() {
        slotKeys.deallocate(); slotGroups.deallocate(); groupSockets.deallocate()
        groupCounts.deallocate(); groupSlots.deallocate(); groupStarts.deallocate()
        groupFill.deallocate(); groupOf.deallocate(); verdicts.deallocate()
        order.deallocate(); words.deallocate()
    }
}
