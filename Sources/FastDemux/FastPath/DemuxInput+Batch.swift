// The batch path of the fast path: the same deliveries as one call per
// packet, in passes that overlap the packets' cache misses.
extension DemuxInput {
    /// Delivers a batch of parsed packets (any number; processed in chunks
    /// of ``burstCapacity``) with the same result as calling
    /// ``deliver(_:key:tcp:payloadLength:)`` for each in order, but in three
    /// passes: look up every key, then touch every socket and its queue,
    /// then enqueue. The passes have no dependencies between packets, so the
    /// processor overlaps their cache misses (the node, the socket, the
    /// queue) instead of paying them one after the other. Must run inside
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
        // Pass 3: enqueue in arrival order (per-flow order kept).
        for i in 0..<n {
            let v = delivery.deliver(batch[i], to: resolved[i], tcp: .socketTryLock, counting: true)
            if case .dropped(let r) = v { onDrop(first + i, r) }
        }
    }
}
