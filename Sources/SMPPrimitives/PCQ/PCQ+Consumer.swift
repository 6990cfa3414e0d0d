import Synchronization

// The consumer side of ``PCQ``: get, peek and drain. One consumer thread at
// a time (see "The single-consumer rule" on ``PCQ``).
extension PCQ {
    /// Removes and returns the oldest item, or nil if there is none visible.
    ///
    /// Single consumer only. Returns nil when the queue is empty, and also
    /// while the oldest item's producer has reserved its slot but not yet
    /// written it (items behind it wait; none is skipped).
    ///
    /// Cost: a flag load and the value copy from the ring, and one store to
    /// the consumer's own line. Prefer ``drain(max:_:)`` to take many items:
    /// it publishes the consumer position once per call.
    @inlinable
    public func get() -> Element? {
        let c = consumer
        // Relaxed: only this thread writes `head`.
        let h = c.pointee.head.load(ordering: .relaxed)
        let i = Int(bitPattern: h & mask)
        // Acquiring: pairs with the producer's releasing flag store, so the
        // value read below is the one written for ticket `h`.
        guard flags[i].load(ordering: .acquiring) == lapFlag(h) else { return nil }
        // A plain copy of the value's bytes, sequenced after the acquire.
        let item = values[i]
        // Releasing: our read of the slot happens before any producer that
        // sees the new `head` reuses the slot.
        c.pointee.head.store(h &+ 1, ordering: .releasing)
        if c.pointee.highWater.load(ordering: .relaxed) == 0 {
            c.pointee.highWater.store(1, ordering: .relaxed)
        }
        return item
    }

    /// Returns the oldest item without removing it, or nil when ``get()``
    /// would return nil. Single consumer only; costs a flag load and the
    /// value copy.
    @inlinable
    public func peek() -> Element? {
        let h = consumer.pointee.head.load(ordering: .relaxed)  // own variable
        let i = Int(bitPattern: h & mask)
        // Acquiring: as in `get`.
        guard flags[i].load(ordering: .acquiring) == lapFlag(h) else { return nil }
        return values[i]
    }

    /// Takes up to `max` items in FIFO order, calling `body` for each, and
    /// returns how many it took. Stops early at the first slot that is not
    /// yet visible (see ``get()``).
    ///
    /// Single consumer only. `body` must not call `get`, `peek` or `drain`
    /// on this queue (it may `put`). The consumer position is published once,
    /// when the call returns, so the slots of this batch stay occupied for
    /// producers while `body` runs: keep `max` moderate (tens to hundreds)
    /// when `body` is slow. If `body` throws, the item it was given counts
    /// as taken, later items stay queued, and the error is rethrown.
    ///
    /// Cost: a flag load and a value copy per item, one store per call.
    @inlinable
    @discardableResult
    public func drain(max maxCount: Int, _ body: (Element) throws -> Void) rethrows -> Int {
        guard maxCount > 0 else { return 0 }
        // Copies of the immutable layout: the acquiring loads below would
        // otherwise make the compiler reload them from the object each item.
        let flags = self.flags, values = self.values, mask = self.mask, shift = self.lapShift
        let start = consumer.pointee.head.load(ordering: .relaxed)  // own variable
        let end = start &+ UInt(maxCount)
        // Phase 1: find the run of published slots. Flag loads only, 64 per
        // cache line. Acquiring: pairs with each producer's releasing flag
        // store, so every value of the run is visible below. (The expected
        // flag is `lapFlag(ready)`, spelled out on the local shift.)
        var ready = start
        while ready != end
            && flags[Int(bitPattern: ready & mask)].load(ordering: .acquiring)
                == UInt8(truncatingIfNeeded: ready &>> shift) &+ 1 {
            ready &+= 1
        }
        if ready == start { return 0 }
        // Phase 2: the values, every one sequenced after its flag's acquire
        // above. Their loads do not depend on each other or on a flag test
        // any more, so the processor overlaps their cache misses (one per
        // `64 / stride` items) instead of taking them one after another.
        var h = start
        defer { finishBatch(from: start, to: h) }
        while h != ready {
            let item = values[Int(bitPattern: h & mask)]
            h &+= 1
            try body(item)
        }
        return Int(bitPattern: h &- start)
    }

    @inlinable @inline(__always)
    internal func finishBatch(from start: UInt, to h: UInt) {
        let c = consumer
        // Releasing: every value of the batch was read before this store;
        // producers acquire `head` before reusing those slots.
        c.pointee.head.store(h, ordering: .releasing)
        // The batch was a run of ready items: the queue held at least that
        // many. Own variable, plain store: no RMW on the consumer's path.
        let batch = Int(bitPattern: h &- start)
        if batch > c.pointee.highWater.load(ordering: .relaxed) {
            c.pointee.highWater.store(batch, ordering: .relaxed)
        }
    }
}
