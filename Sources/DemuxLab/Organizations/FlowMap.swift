import FastDemux

/// A small open-addressing map from flow keys to plain values (sockets, or
/// MsgP's connection slots), for the locked and thread-owned organizations
/// (their lookup structure; the fast path uses the RCU PCB tables instead).
/// Not thread-safe: guarded by the organization's lock or owned by one
/// thread. Same hash as the RCU table, so lookups cost the same apart from
/// the synchronization around them. Freed with ``deallocate()``.
struct FlowMap<Value: BitwiseCopyable> {
    private var keys: UnsafeMutablePointer<FlowKey>
    private var values: UnsafeMutablePointer<Value>
    /// 0 empty, 1 full, 2 deleted.
    private var states: UnsafeMutablePointer<UInt8>
    private var mask: Int
    private(set) var count = 0
    private var used = 0

    init(capacity: Int) {
        var n = 16
        while n < capacity * 2 { n <<= 1 }
        mask = n - 1
        keys = .allocate(capacity: n)
        values = .allocate(capacity: n)
        states = .allocate(capacity: n)
        states.initialize(repeating: 0, count: n)
    }

    func deallocate() {
        keys.deallocate()
        values.deallocate()
        states.deallocate()
    }

    @inline(__always)
    private static func hash(_ k: FlowKey) -> Int { Int(truncatingIfNeeded: k.rcuHash(seed: 0x51ed_270b)) }

    @inline(__always)
    func lookup(_ k: FlowKey) -> Value? {
        var i = Self.hash(k) & mask
        while true {
            let st = states[i]
            if st == 0 { return nil }
            if st == 1 && keys[i] == k { return values[i] }
            i = (i &+ 1) & mask
        }
    }

    /// False if `k` is present.
    mutating func insert(_ k: FlowKey, _ v: Value) -> Bool {
        if lookup(k) != nil { return false }
        if (used + 1) * 2 > mask + 1 { rehash() }
        var i = Self.hash(k) & mask
        while states[i] == 1 { i = (i &+ 1) & mask }
        if states[i] == 0 { used += 1 }
        states[i] = 1
        (keys + i).initialize(to: k)
        values[i] = v
        count += 1
        return true
    }

    mutating func remove(_ k: FlowKey) -> Value? {
        var i = Self.hash(k) & mask
        while true {
            let st = states[i]
            if st == 0 { return nil }
            if st == 1 && keys[i] == k {
                states[i] = 2
                count -= 1
                return values[i]
            }
            i = (i &+ 1) & mask
        }
    }

    private mutating func rehash() {
        let oldMask = mask, oldKeys = keys, oldValues = values, oldStates = states
        var n = oldMask + 1
        if count * 4 >= n { n <<= 1 }
        mask = n - 1
        keys = .allocate(capacity: n)
        values = .allocate(capacity: n)
        states = .allocate(capacity: n)
        states.initialize(repeating: 0, count: n)
        count = 0
        used = 0
        for i in 0...oldMask where oldStates[i] == 1 { _ = insert(oldKeys[i], oldValues[i]) }
        oldKeys.deallocate()
        oldValues.deallocate()
        oldStates.deallocate()
    }
}
