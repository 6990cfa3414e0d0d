/// A hierarchical timing wheel of millisecond ticks (Varghese & Lauck; the
/// cascading layout of the classic BSD/Linux callout wheel), holding
/// ``KernelContinuation``s through intrusive links embedded in them.
///
/// Levels: 256 slots of 1 ms, then three levels of 64 slots covering
/// 256 ms, 16.4 s and 17.5 min per slot (about 18.6 h in all; longer delays
/// are parked in the last level and re-filed when they cascade).
///
/// - insert and remove: O(1), no allocation (the links are in the node).
/// - advance: O(1) per elapsed tick plus, every 256 ticks, re-filing one
///   slot of an upper level (each entry is re-filed at most 3 times).
/// - Lateness: an entry inserted with delay d at tick t expires when the
///   clock reaches tick t + d, i.e. between d - 1 and d ms after insertion
///   (tick granularity), plus however late the owner gets to ``advance``.
///   The wheel itself adds no further rounding: cascading re-files entries
///   into exact level-0 slots.
/// - Expired entries wait on one FIFO list, in expiry order; an entry
///   inserted at or before the current tick (a delay of 0) joins its back.
///   ``expiredCount`` lets the owner bound a pass to the entries that were
///   due when the pass began (see `CoreExecutor.runExpired`), so that one
///   a body re-files runs on a later pass.
///
/// Concurrency contract: owned by one thread (a ``CoreExecutor``); nothing
/// here is thread-safe. Other threads reach it only through the executor's
/// hand-off list.
final class TimerWheel {
    static let level0Bits = 8
    static let levelBits = 6
    static let level0Slots = 1 << level0Bits            // 256
    static let levelSlots = 1 << levelBits              // 64
    static let upperLevels = 3
    static let slotCount = level0Slots + upperLevels * levelSlots
    /// `wheelSlot` of a node that is in no slot and not on the expired list.
    static let unlinked = -1
    /// `wheelSlot` of a node on the expired list.
    static let onExpiredList = -2
    /// The farthest delta the wheel files exactly (2^26 ticks).
    static let horizon = 1 << (level0Bits + upperLevels * levelBits)

    /// Head of each slot's doubly linked list.
    private let slots: UnsafeMutablePointer<Unmanaged<KernelContinuation>?>
    /// The last tick processed: every entry with `expires <= currentTick`
    /// has been moved to the expired list.
    private(set) var currentTick: Int
    /// Entries filed in slots (not counting the expired list).
    private(set) var count = 0
    /// Entries whose tick has come, in expiry order, linked through
    /// `wheelNext` (and `wheelPrev`, for O(1) removal); taken from the
    /// front by ``popExpired()``.
    private var expiredHead: Unmanaged<KernelContinuation>?
    private var expiredTail: Unmanaged<KernelContinuation>?
    /// Entries on the expired list.
    private(set) var expiredCount = 0

    init(now: Int) {
        slots = .allocate(capacity: TimerWheel.slotCount)
        slots.initialize(repeating: nil, count: TimerWheel.slotCount)
        currentTick = now
    }

    deinit {
        slots.deinitialize(count: TimerWheel.slotCount)
        slots.deallocate()
    }

    /// The current monotonic clock in milliseconds (the wheel's tick).
    static func nowTick() -> Int {
        monotonicNanoseconds() / 1_000_000
    }

    var hasExpired: Bool { expiredHead != nil }

    /// Files `node` to expire at tick `expires`. The node must not be linked.
    func insert(_ node: Unmanaged<KernelContinuation>, expires: Int) {
        let c = node._withUnsafeGuaranteedRef { $0 }
        assert(c.wheelSlot == TimerWheel.unlinked, "inserting a linked node")
        c.expires = expires
        let delta = expires - currentTick
        if delta <= 0 {
            appendExpired(node)
            return
        }
        let slot: Int
        if delta < TimerWheel.level0Slots {
            slot = expires & (TimerWheel.level0Slots - 1)
        } else {
            var level = 1
            var shift = TimerWheel.level0Bits
            // Clamp beyond the horizon: filed in the last level, re-filed
            // (with its true `expires`) when that slot cascades.
            let d = min(delta, TimerWheel.horizon - 1)
            let e = currentTick + d
            while level < TimerWheel.upperLevels && d >= 1 << (shift + TimerWheel.levelBits) {
                level += 1
                shift += TimerWheel.levelBits
            }
            slot = TimerWheel.level0Slots + (level - 1) * TimerWheel.levelSlots
                + ((e >> shift) & (TimerWheel.levelSlots - 1))
        }
        c.wheelSlot = slot
        c.wheelPrev = nil
        c.wheelNext = slots[slot]
        if let next = slots[slot] { next._withUnsafeGuaranteedRef { $0.wheelPrev = node } }
        slots[slot] = node
        count += 1
    }

    /// Unlinks `node` from its slot or from the expired list, if it is on
    /// either. O(1). Returns true if it was filed in a slot.
    @discardableResult
    func remove(_ node: Unmanaged<KernelContinuation>) -> Bool {
        let c = node._withUnsafeGuaranteedRef { $0 }
        let slot = c.wheelSlot
        if slot == TimerWheel.unlinked { return false }
        let prev = c.wheelPrev
        let next = c.wheelNext
        if let prev {
            prev._withUnsafeGuaranteedRef { $0.wheelNext = next }
        } else if slot >= 0 {
            slots[slot] = next
        } else {
            expiredHead = next
        }
        if let next {
            next._withUnsafeGuaranteedRef { $0.wheelPrev = prev }
        } else if slot < 0 {
            expiredTail = prev
        }
        c.wheelSlot = TimerWheel.unlinked
        c.wheelPrev = nil
        c.wheelNext = nil
        if slot >= 0 { count -= 1 } else { expiredCount -= 1 }
        return slot >= 0
    }

    private func appendExpired(_ node: Unmanaged<KernelContinuation>) {
        let c = node._withUnsafeGuaranteedRef { $0 }
        c.wheelSlot = TimerWheel.onExpiredList
        c.wheelPrev = expiredTail
        c.wheelNext = nil
        if let tail = expiredTail {
            tail._withUnsafeGuaranteedRef { $0.wheelNext = node }
        } else {
            expiredHead = node
        }
        expiredTail = node
        expiredCount += 1
    }

    /// Takes the first entry of the expired list (now unlinked), or nil.
    func popExpired() -> Unmanaged<KernelContinuation>? {
        guard let head = expiredHead else { return nil }
        remove(head)
        return head
    }

    /// Detaches a whole slot's list and returns its head.
    private func detach(_ slot: Int) -> Unmanaged<KernelContinuation>? {
        let head = slots[slot]
        slots[slot] = nil
        return head
    }

    /// Advances to tick `now`, moving every entry that expires at or before
    /// it to the expired list.
    func advance(to now: Int) {
        if count == 0 {
            // Nothing filed: jump (an idle executor may sleep for hours).
            if now > currentTick { currentTick = now }
            return
        }
        while currentTick < now {
            currentTick += 1
            let t = currentTick
            // Cascade: at each level-0 wrap, re-file the upper-level slot
            // whose period begins now (and, at its wrap, the next level's).
            if t & (TimerWheel.level0Slots - 1) == 0 {
                var shift = TimerWheel.level0Bits
                for level in 1...TimerWheel.upperLevels {
                    let index = (t >> shift) & (TimerWheel.levelSlots - 1)
                    refile(TimerWheel.level0Slots + (level - 1) * TimerWheel.levelSlots + index)
                    if index != 0 { break }
                    shift += TimerWheel.levelBits
                }
            }
            var node = detach(t & (TimerWheel.level0Slots - 1))
            while let n = node {
                let next = n._withUnsafeGuaranteedRef { $0.wheelNext }
                count -= 1
                appendExpired(n)
                node = next
            }
            if count == 0 {
                currentTick = now
                return
            }
        }
    }

    /// Moves every filed entry to the expired list (shutdown).
    func expireAll() {
        for slot in 0..<TimerWheel.slotCount {
            var node = detach(slot)
            while let n = node {
                let next = n._withUnsafeGuaranteedRef { $0.wheelNext }
                count -= 1
                appendExpired(n)
                node = next
            }
        }
    }

    private func refile(_ slot: Int) {
        var node = detach(slot)
        while let n = node {
            let c = n._withUnsafeGuaranteedRef { $0 }
            let next = c.wheelNext
            count -= 1
            c.wheelSlot = TimerWheel.unlinked
            insert(n, expires: c.expires)
            node = next
        }
    }

    /// The earliest tick at which ``advance(to:)`` may have something to do:
    /// the next occupied level-0 slot, else the next cascade point. nil when
    /// the wheel is empty. Scans at most 256 slots (called before parking).
    func nextEventTick() -> Int? {
        if count == 0 { return nil }
        let wrap = (currentTick | (TimerWheel.level0Slots - 1)) + 1
        var t = currentTick + 1
        while t < wrap {
            if slots[t & (TimerWheel.level0Slots - 1)] != nil { return t }
            t += 1
        }
        return wrap
    }
}
