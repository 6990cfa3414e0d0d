// A lock in one atomic word (0 free, 1 held), for update locks that live
// inline in memory their owner lays out itself: RCUHashTable's stripes and
// RCUBucketTable's writer block. Readers never take them.
import Glibc
import Synchronization

extension Atomic where Value == UInt32 {
    /// One attempt at the lock. Acquire on success: the previous holder's
    /// critical section (published by its releasing unlock) happens before
    /// ours.
    @inlinable @inline(__always)
    func tryLockWord() -> Bool {
        compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged
    }

    /// Takes the lock: a CAS, then, while it is held, relaxed loads (no
    /// exclusive line requests while waiting), spinning briefly and then
    /// yielding, since the holder may be preempted (oversubscription) or
    /// waiting for a grace period.
    @inlinable
    func lockWord() {
        var spins = 0
        while !tryLockWord() {
            repeat {
                spins += 1
                if spins < 100 { spinLoopHint() } else { sched_yield() }
            } while load(ordering: .relaxed) != 0
        }
    }

    /// Releases the lock. Release: our critical section happens before the
    /// next holder's (its acquiring CAS reads this store).
    @inlinable @inline(__always)
    func unlockWord() {
        store(0, ordering: .releasing)
    }
}
