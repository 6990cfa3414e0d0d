import Glibc

// The package's clock readings: CLOCK_MONOTONIC for elapsed time and
// deadlines, CLOCK_THREAD_CPUTIME_ID for the CPU time a thread used. Each is
// one `clock_gettime` (a vDSO call, ~20 ns, no system call for the
// monotonic clock; the thread CPU clock enters the kernel). Any thread.

/// Monotonic time in nanoseconds (`CLOCK_MONOTONIC`: never jumps, does not
/// count suspend). Only differences are meaningful. Any thread.
@inlinable
public func monotonicNanoseconds() -> Int { nanoseconds(of: CLOCK_MONOTONIC) }

/// Monotonic time in seconds (see ``monotonicNanoseconds()``). Any thread.
@inlinable
public func monotonicSeconds() -> Double { seconds(of: CLOCK_MONOTONIC) }

/// CPU time the calling thread has used, in nanoseconds
/// (`CLOCK_THREAD_CPUTIME_ID`). Only the calling thread's own.
@inlinable
public func threadCPUNanoseconds() -> Int { nanoseconds(of: CLOCK_THREAD_CPUTIME_ID) }

/// CPU time the calling thread has used, in seconds (see
/// ``threadCPUNanoseconds()``).
@inlinable
public func threadCPUSeconds() -> Double { seconds(of: CLOCK_THREAD_CPUTIME_ID) }

@usableFromInline @inline(__always)
func nanoseconds(of clock: clockid_t) -> Int {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return ts.tv_sec &* 1_000_000_000 &+ ts.tv_nsec
}

@usableFromInline @inline(__always)
func seconds(of clock: clockid_t) -> Double {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

extension Duration {
    /// This duration in whole `unit`s (given in attoseconds), rounded up:
    /// a timeout or delay never ends early. Zero or negative durations give
    /// 0; very long ones are clamped to `Int.max`.
    ///
    /// Cheap for durations under ~9.2 s (one 64-bit division by a constant
    /// once inlined); longer ones take a 128-bit division.
    @inlinable @inline(__always)
    package func roundedUp(toUnitsOf unit: Int64) -> Int {
        let a = attoseconds
        if a <= 0 { return 0 }
        if a <= Int128(Int64.max) {
            return Int((Int64(truncatingIfNeeded: a) &- 1) / unit &+ 1)
        }
        let q = (a &- 1) / Int128(unit) &+ 1
        return q > Int128(Int.max) ? Int.max : Int(truncatingIfNeeded: q)
    }

    /// Whole milliseconds (the timer wheel's tick), rounded up (see ``roundedUp(toUnitsOf:)``).
    @inlinable
    package var millisecondsRoundedUp: Int { roundedUp(toUnitsOf: 1_000_000_000_000_000) }

    /// Whole nanoseconds, rounded up (see ``roundedUp(toUnitsOf:)``).
    @inlinable
    package var nanosecondsRoundedUp: Int { roundedUp(toUnitsOf: 1_000_000_000) }
}
