import Synchronization

// The consumer side of ``LanedPCQ``: get and drain, visiting the lanes
// round-robin. One consumer thread at a time (see ``LanedPCQ``).
extension LanedPCQ {
    /// Removes and returns one item, or nil if no lane has one visible.
    ///
    /// Single consumer only. The item is the oldest of the first lane, in
    /// round-robin order, that has one; successive calls move on to the
    /// next lanes, so no lane is starved.
    ///
    /// Cost: a ``drain(max:_:)`` of one item. Prefer `drain` to take many:
    /// it publishes each lane's position once per call.
    @inlinable
    public func get() -> Element? {
        var item: Element? = nil
        drain(max: 1) { item = $0 }
        return item
    }

    /// Takes up to `max` items, calling `body` for each, and returns how
    /// many it took.
    ///
    /// Single consumer only. Lanes are visited round-robin, each once per
    /// call: starting with the lane after the one the previous call stopped
    /// in, each lane gives what it has ready (up to what is left of `max`),
    /// in its FIFO order. Items of different lanes are in no particular
    /// order relative to each other. A return of 0 means no lane had an
    /// item visible during the call.
    ///
    /// `body` must not call `get` or `drain` on this queue (it may put
    /// through a handle). A lane's position is published when the call is
    /// done with that lane, so its slots stay occupied for its producer
    /// while `body` runs on them. If `body` throws, the item it was given
    /// counts as taken, later items stay queued, and the error is rethrown.
    ///
    /// Cost per lane visited: a load of the lane's `tail` when the cached
    /// backlog is shorter than what is still wanted, a value copy per item,
    /// and one store if it took any.
    @inlinable
    @discardableResult
    public func drain(max maxCount: Int, _ body: (Element) throws -> Void) rethrows -> Int {
        guard maxCount > 0 else { return 0 }
        let shared = self.shared
        // Relaxed: see `register` (only bounds the scan).
        let lanes = shared.pointee.lanesInUse.load(ordering: .relaxed)
        guard lanes > 0 else { return 0 }
        // Relaxed: the consumer's own variable.
        var start = shared.pointee.cursor.load(ordering: .relaxed)
        if start >= lanes { start = 0 }
        var lane = start
        var taken = 0
        repeat {
            taken &+= try drainLane(lane, max: maxCount &- taken, body)
            lane &+= 1
            if lane == lanes { lane = 0 }
        } while taken < maxCount && lane != start
        // Stopped at `max` in a lane: the next call starts after it. Went
        // round: the next call starts one lane further, so the first place
        // rotates.
        if taken < maxCount {
            lane = start &+ 1
            if lane == lanes { lane = 0 }
        }
        shared.pointee.cursor.store(lane, ordering: .relaxed)
        return taken
    }

    /// Takes up to `maxCount` ready items from one lane.
    @inlinable
    internal func drainLane(_ lane: Int, max maxCount: Int, _ body: (Element) throws -> Void) rethrows -> Int {
        let c = consumerSide(lane)
        // Relaxed: the consumer's own variables.
        let start = c.pointee.head.load(ordering: .relaxed)
        var t = c.pointee.cachedTail.load(ordering: .relaxed)
        if Int(bitPattern: t &- start) < maxCount {
            // Acquiring: pairs with the producer's releasing store of `tail`,
            // so every slot below the value read is visible below. (The
            // lane's `tail` only grows, and only one owner at a time stores
            // it, so a later value's release covers the earlier slots too.)
            t = producerSide(lane).pointee.tail.load(ordering: .acquiring)
            c.pointee.cachedTail.store(t, ordering: .relaxed)
        }
        let ready = Swift.min(Int(bitPattern: t &- start), maxCount)
        if ready == 0 { return 0 }
        let ring = self.ring(lane), mask = self.mask
        let end = start &+ UInt(ready)
        var h = start
        defer { finishLaneBatch(c, from: start, to: h) }
        while h != end {
            // A plain copy, after the acquire above.
            let item = ring[Int(bitPattern: h & mask)]
            h &+= 1
            try body(item)
        }
        return ready
    }

    @inlinable @inline(__always)
    internal func finishLaneBatch(_ c: UnsafeMutablePointer<LaneConsumerSide>, from start: UInt, to h: UInt) {
        // Releasing: every slot of the batch was read before this store; the
        // producer acquires `head` before reusing those slots.
        c.pointee.head.store(h, ordering: .releasing)
        // The batch was ready at once: the lane held at least that many.
        // Own variable, plain store.
        let batch = Int(bitPattern: h &- start)
        if batch > c.pointee.highWater.load(ordering: .relaxed) {
            c.pointee.highWater.store(batch, ordering: .relaxed)
        }
    }
}
