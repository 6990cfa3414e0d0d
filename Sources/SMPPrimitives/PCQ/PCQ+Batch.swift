import Synchronization

// The batch put of ``PCQ``: one reservation (one ticket CAS) for a run of
// items, then one value copy and one lap-flag store per item. The consumer
// side needs nothing new: it already takes runs of ready flags.
extension PCQ {
    /// Appends as many of `items` as fit, in order, and returns how many
    /// went in (a prefix of `items`: `items[0..<n]`). Any thread; never
    /// blocks; the items of one call occupy consecutive tickets, so no other
    /// producer's item lands between them.
    ///
    /// Exact at the capacity edge, as ``put(_:)`` is: it returns fewer than
    /// `items.count` only if, at an instant during the call, the queue held
    /// `capacity` items counting the ones this call put (including items
    /// still being written by preempted producers). The items not taken stay
    /// the caller's; they are counted in ``statistics``' `failedPuts`, one
    /// per item, by a single fetch-add.
    ///
    /// Cost: one compare-and-swap on the producers' line for the whole run
    /// (retried only when another producer took tickets first), then per
    /// item a value copy and a flag store into the ring; the consumer's line
    /// is read only when the cached position says the run may not fit.
    @inlinable
    public func put(contentsOf items: UnsafeBufferPointer<Element>) -> Int {
        var unused = PCQPutCounts()
        return put(contentsOf: items, counting: &unused)
    }

    /// ``put(contentsOf:)``, adding to `counts` the atomic RMWs it issues,
    /// counted as they are issued: `puts` gains one for the ticket CAS that
    /// reserved the whole run (not one per item), `casRetries` one per lost
    /// CAS, `failedPuts` one for the fetch-add that counts the items left
    /// out (if any), `highWaterCASes` those of the slow path. So
    /// `counts.atomicRMWs` stays the number of RMWs, whatever the run's
    /// length. Same contract as ``put(contentsOf:)``.
    @inlinable
    public func put(contentsOf items: UnsafeBufferPointer<Element>, counting counts: inout PCQPutCounts) -> Int {
        let n = items.count
        guard n > 0, let base = items.baseAddress else { return 0 }
        let (first, k) = reserve(upTo: n, &counts)
        if k < n {
            recordFailedPuts(n &- k)
            counts.failedPuts &+= 1
        }
        if k == 0 { return 0 }
        let flags = self.flags, values = self.values, mask = self.mask
        // Every value first, then every flag: each flag's releasing store is
        // sequenced after all the value copies above it, so the consumer's
        // acquiring load of any flag of the run sees its value (and the
        // run's earlier ones). The values of a run share cache lines, so
        // this writes each line once.
        for j in 0..<k {
            (values + Int(bitPattern: (first &+ UInt(j)) & mask)).initialize(to: base[j])
        }
        for j in 0..<k {
            let t = first &+ UInt(j)
            // Releasing: pairs with the consumer's acquiring flag load (see
            // "Values of several words" on ``PCQ``).
            flags[Int(bitPattern: t & mask)].store(lapFlag(t), ordering: .releasing)
        }
        return k
    }

    /// Takes up to `n` consecutive tickets whose slots are free: returns the
    /// first ticket and how many were taken (0: the queue is full). The
    /// caller must publish exactly that many.
    ///
    /// Exactness: a short count comes only from a `head` read on the slow
    /// path. The `t` we then CAS from was read before that `head` (the
    /// initial load or a failed CAS), and the CAS finds the tail still at
    /// `t`; the tail never decreases, so it was exactly `t` when `head` was
    /// read, and `capacity - (t - head)` was exactly the free space at that
    /// instant.
    @inlinable
    internal func reserve(upTo n: Int, _ counts: inout PCQPutCounts) -> (first: UInt, count: Int) {
        let p = producer
        let capacity = self.capacity
        // Relaxed: a candidate ticket, validated by the CAS (as in `reserve`).
        var t = p.pointee.tail.load(ordering: .relaxed)
        while true {
            // Acquiring: pairs with `refreshHead`'s releasing store (which
            // acquired the consumer's `head`), so the consumer's reads of the
            // slots we reuse happen before our overwrites (see `reserve`).
            let cached = p.pointee.cachedHead.load(ordering: .acquiring)
            // Signed: a stale `t` can be behind `cached` (free > capacity
            // then); its CAS fails below, since the tail is past `cached`.
            var free = capacity &- Int(bitPattern: t &- cached)
            if free < n {
                let (fresh, highWaterCASes) = refreshHead(ticket: t)
                counts.highWaterCASes &+= highWaterCASes
                free = capacity &- Int(bitPattern: t &- fresh)
                if free <= 0 { return (t, 0) }
            }
            let k = Swift.min(n, free)
            // Relaxed: as in `reserve`; tickets need only the RMW total order.
            let (won, current) = p.pointee.tail.compareExchange(
                expected: t, desired: t &+ UInt(k), ordering: .relaxed)
            if won {
                counts.puts &+= 1
                return (t, k)
            }
            counts.casRetries &+= 1
            t = current
        }
    }

    @usableFromInline
    @inline(never)
    internal func recordFailedPuts(_ count: Int) {
        // One RMW for the whole rejected rest. Relaxed: statistics only.
        producer.pointee.failedPuts.add(count, ordering: .relaxed)
    }
}
