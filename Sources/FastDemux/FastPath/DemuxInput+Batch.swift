// The batch path of the fast path: the same deliveries as one call per
// packet, in passes that overlap the packets' cache misses.
import SMPPrimitives

extension DemuxInput {
    /// Delivers a batch of parsed packets (any number; processed in chunks
    /// of ``burstCapacity``) with the same result as calling
    /// ``deliver(_:key:tcp:payloadLength:)`` for each in order, but in four
    /// passes: look up every key, then touch every socket and its queue,
    /// then reserve each packet's queue slot (with its TCP step), then
    /// write the values. The passes have no dependencies between packets,
    /// so the processor overlaps their cache misses (the node, the socket,
    /// the queue, the stores into the reader's lines) instead of paying
    /// them one after the other. Must run inside
    /// ``burst(_:)``. `onDrop(i, reason)` is called for each packet not
    /// queued (free its buffer there).
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
        // Pass 1: every lookup (independent: their node misses overlap).
        for i in 0..<n { resolved[i] = table.lookup(batch[i].key) }
        // Pass 2: touch each socket's hot line and its queue object.
        warmSink &+= SocketDelivery.warm(resolved, count: n)
        // Pass 3, in arrival order (per-flow order kept): reserve each
        // packet's slot and do its bookkeeping and TCP step; the chunk's
        // locked instructions (ticket CASes, TCP try-locks) run here, with
        // no value store pending behind them (see
        // `SocketDelivery.deliverReserving`).
        delivery.makeRoom(for: n, counting: true)
        var reserved: UInt64 = 0    // n <= burstCapacity = 64
        for i in 0..<n {
            switch delivery.deliverReserving(batch[i], to: resolved[i], tcp: .socketTryLock, counting: true) {
            case .ticket(let t):
                tickets[i] = t
                reserved |= 1 &<< UInt64(i)
            case .dropped(let r):
                onDrop(first + i, r)
            }
        }
        // Pass 4: publish the values (plain stores and flag releases, in
        // ticket order per socket), before the burst's flush.
        while reserved != 0 {
            let i = reserved.trailingZeroBitCount
            reserved &= reserved &- 1
            resolved[i].unsafelyUnwrapped.withSocket { $0.queue.publish(batch[i].packet, at: tickets[i]) }
        }
    }
}
