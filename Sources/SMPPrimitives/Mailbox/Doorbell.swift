import Glibc
import CSMPLinux
import Synchronization

/// The parking word of one receiving core: the receiver announces that it is
/// about to sleep, and a sender rings (wakes it) only if it saw that
/// announcement. Senders of a running receiver pay no system call at all.
///
/// ## The lost-wake-up argument (Dekker-style)
///
/// Receiver (``park(timeout:stillIdle:)``):
/// 1. `word = parked` with a sequentially consistent exchange (a full fence),
/// 2. re-check every work source (`stillIdle()`, sequentially consistent loads),
/// 3. `futex_wait(word, parked)` — sleeps only while the word is still `parked`.
///
/// Sender (``ring()``), after publishing its work with a release store:
/// 1. a sequentially consistent fence,
/// 2. load `word`; only if it is `parked`, exchange it back to `running` and
///    `futex_wake`.
///
/// Store/fence/load on both sides: at least one side sees the other's store.
/// Either the receiver's re-check sees the work (it does not sleep), or the
/// sender sees `parked` and wakes it. If the sender's exchange lands between
/// the receiver's re-check and its `futex_wait`, the kernel compares the
/// word (now `running`) with `parked` and returns at once: no lost wake-up.
///
/// ## Asymmetric fence
///
/// A hardware fence per send costs more than the send itself: it waits for
/// the sender's store buffer to drain, i.e. for the cross-core transfer of
/// the slot's cache line. Parking is rare, sending is not, so where the
/// kernel supports it (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`,
/// Linux 4.14+) the fence moves to the parking side, as liburcu's memb
/// flavour does for readers: the sender uses a compiler-only barrier, and
/// the receiver, after storing `parked`, calls `membarrier`, which makes
/// every other running thread of the process execute a full barrier before
/// it returns. If a sender's load of the word came before that barrier on
/// its CPU, so did its (earlier) publication, which is then visible to the
/// receiver's re-check; if it came after, it sees `parked`. Where
/// membarrier is unavailable both sides use hardware fences.
///
/// Concurrency contract: exactly one thread (the owner) parks; any thread
/// may ring. The word lives in its own 128-byte region (no false sharing
/// with the rings).
public final class Doorbell: @unchecked Sendable {
    // @unchecked: `word` is a pointer to memory this object owns for its
    // whole life and that is only accessed atomically (or by the kernel).
    @usableFromInline static let running: UInt32 = 0
    @usableFromInline static let parked: UInt32 = 1

    @usableFromInline let word: UnsafeMutablePointer<Atomic<UInt32>>
    private let region: UnsafeMutableRawPointer
    /// True when the process registered for expedited membarrier.
    @usableFromInline let asymmetric: Bool

    /// Whether this process may use the asymmetric fence (registered once).
    static let membarrierAvailable: Bool = smp_membarrier_register() == 0

    /// True if `SMP_DOORBELL_FENCE=hardware` is set in the environment:
    /// ``DoorbellFence/automatic`` then means ``DoorbellFence/hardware``
    /// (read once per process).
    static let environmentForcesHardwareFence: Bool = {
        guard let v = getenv("SMP_DOORBELL_FENCE") else { return false }
        return String(cString: v) == "hardware"
    }()

    /// Whether this doorbell uses the asymmetric fence (ringers: a compiler
    /// barrier; parker: `membarrier`) rather than hardware fences on both
    /// sides. Fixed at `init`.
    public var usesMembarrier: Bool { asymmetric }

    /// A doorbell whose owner is running. The first doorbell of the
    /// process that may use `membarrier` registers the process for its
    /// expedited form (one system call).
    /// - Parameter fence: which fence pairs ringers with the parker (see
    ///   ``DoorbellFence``); both choices are correct, they differ in who
    ///   pays.
    public init(fence: DoorbellFence = .automatic) {
        switch fence {
        case .automatic: asymmetric = !Doorbell.environmentForcesHardwareFence && Doorbell.membarrierAvailable
        case .membarrier: asymmetric = Doorbell.membarrierAvailable
        case .hardware: asymmetric = false
        }
        region = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 128)
        word = region.bindMemory(to: Atomic<UInt32>.self, capacity: 1)
        word.initialize(to: Atomic(Doorbell.running))
    }

    deinit {
        word.deinitialize(count: 1)
        region.deallocate()
    }

    /// True while the owner has announced that it is parking.
    /// Any thread; a racy snapshot.
    public var isParked: Bool { word.pointee.load(ordering: .relaxed) == Doorbell.parked }

    /// Wakes the owner if (and only if) it announced parking. Call after
    /// publishing the work the owner must see. Any thread. Costs one load
    /// (plus a fence where membarrier is unavailable) when the owner is
    /// running; a `futex_wake` otherwise.
    /// - Returns: true if this call rang (issued the wake-up).
    @inlinable @discardableResult
    public func ring() -> Bool {
        var unused = 0
        return ring(countingRMWs: &unused)
    }

    /// ``ring()``, adding to `rmws` the atomic exchange it issues: one
    /// whenever the owner looked parked, also when a concurrent ringer won
    /// the exchange (then it returns false). For statistics that count each
    /// RMW where it is issued; `rmws` is the caller's own. Any thread.
    @inlinable @discardableResult
    public func ring(countingRMWs rmws: inout Int) -> Bool {
        Doorbell.ring(word, asymmetric: asymmetric, countingRMWs: &rmws)
    }

    /// ``ring(countingRMWs:)`` on a doorbell's word, for a caller that
    /// keeps the doorbell alive itself and holds its `word` and
    /// ``usesMembarrier`` (``MailboxMesh`` does, so that a send retains and
    /// releases no `Doorbell` object: two atomic read-modify-writes per
    /// message, each a full barrier on x86 that waits for the slot store's
    /// cache-line transfer). The same operations in the same order as
    /// ``ring()``: the lost-wake-up argument above is unchanged, only the
    /// object is not touched (the caller's own reference keeps `word`
    /// allocated).
    @inlinable @inline(__always)
    static func ring(_ word: UnsafeMutablePointer<Atomic<UInt32>>, asymmetric: Bool,
                     countingRMWs rmws: inout Int) -> Bool {
        // Order the caller's publication (a store) before the load of the
        // word: the store/load half of the Dekker pair above — a compiler
        // barrier when the parking side issues membarrier, else a fence.
        if asymmetric {
            smp_compiler_barrier()
        } else {
            atomicMemoryFence(ordering: .sequentiallyConsistent)
        }
        if word.pointee.load(ordering: .relaxed) != Doorbell.parked { return false }
        rmws &+= 1
        return ringSlow(word)
    }

    @usableFromInline static func ringSlow(_ word: UnsafeMutablePointer<Atomic<UInt32>>) -> Bool {
        // Exchange so that of several concurrent ringers only one pays the
        // system call; the others see `running`.
        guard word.pointee.exchange(Doorbell.running, ordering: .sequentiallyConsistent) == Doorbell.parked else {
            return false
        }
        _ = smp_futex_wake(UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self), 1)
        return true
    }

    /// Parks the owner until rung, or until the timeout elapses, unless
    /// `stillIdle()` (called after the parking announcement) returns false.
    /// Owner thread only. Spurious returns are possible: callers loop.
    ///
    /// Costs a store, a `membarrier` (or nothing extra where unavailable),
    /// `stillIdle()` and, when it sleeps, a `futex_wait`.
    /// - Parameters:
    ///   - timeout: the longest sleep, rounded up to nanoseconds; nil
    ///     sleeps until rung; zero or negative re-checks without sleeping.
    ///   - stillIdle: loads every work source a ringer publishes to, with
    ///     sequentially consistent loads (the load half of the protocol);
    ///     true if there is still nothing to do.
    public func park(timeout: Duration?, stillIdle: () -> Bool) {
        // Announce first (full fence), then look at the work sources.
        word.pointee.store(Doorbell.parked, ordering: .sequentiallyConsistent)
        // The heavy side of the asymmetric fence: every sender's earlier
        // publication is now visible, or that sender will see `parked`.
        if asymmetric { _ = smp_membarrier() }
        if stillIdle() {
            let raw = UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self)
            // -1: no timeout. A zero timeout makes futex_wait return at once.
            _ = smp_futex_wait(raw, Doorbell.parked, Int64(timeout.map { $0.nanosecondsRoundedUp } ?? -1))
        }
        word.pointee.store(Doorbell.running, ordering: .relaxed)
    }
}

/// How a ``Doorbell`` orders a ringer's publication (a store) before its
/// load of the doorbell word, the StoreLoad half of the lost-wake-up
/// argument.
public enum DoorbellFence: Sendable, Equatable {
    /// ``membarrier`` where the kernel supports it, else ``hardware``;
    /// ``hardware`` if the environment has `SMP_DOORBELL_FENCE=hardware`
    /// (how the test suite exercises the fallback path as a whole).
    case automatic
    /// The asymmetric fence (ringers pay a compiler barrier, the parker a
    /// `membarrier` system call per park); ``hardware`` if the kernel
    /// lacks expedited membarrier.
    case membarrier
    /// A sequentially consistent fence on every ring and none extra on
    /// the parking side.
    case hardware
}

/// A one-shot event a foreign (non-executor) thread can block on: one
/// thread waits, one thread signals. Used for synchronous cross-core calls
/// (it carries no value: the call's result travels in its `CallBox`).
final class OneShotEvent: @unchecked Sendable {
    // @unchecked Sendable: the word is owned memory, accessed only
    // atomically (and by the kernel's futex).
    private let word: UnsafeMutablePointer<Atomic<UInt32>>

    init() {
        word = .allocate(capacity: 1)
        word.initialize(to: Atomic(0))
    }

    deinit {
        word.deinitialize(count: 1)
        word.deallocate()
    }

    /// Acquire: everything the signaller wrote before `signal()` is visible.
    var isSignalled: Bool { word.pointee.load(ordering: .acquiring) != 0 }

    func signal() {
        // Release pairs with the waiter's acquiring load; the wake is issued
        // unconditionally (signal happens once, so the syscall is rare).
        word.pointee.store(1, ordering: .releasing)
        _ = smp_futex_wake(UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self), 1)
    }

    /// Blocks until signalled, or until `giveUp()` (checked every 10 ms
    /// once the short spin is over) returns true. Returns whether it was
    /// signalled.
    @discardableResult
    func wait(givingUpWhen giveUp: () -> Bool = { false }) -> Bool {
        var spins = 0
        while !isSignalled {
            if spins < 1_000 {
                spins += 1
                spinLoopHint()
            } else {
                if giveUp() { return isSignalled }
                // futex_wait returns at once if the word is no longer 0.
                _ = smp_futex_wait(UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self), 0, 10_000_000)
            }
        }
        return true
    }
}
