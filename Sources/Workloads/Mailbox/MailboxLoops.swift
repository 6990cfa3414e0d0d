// What several mailbox implementations share: the round-trip samples, the
// timed ping-pong loop (a synchronous and an async copy), the stream
// receivers' order check, and the throttled sender of the unbounded queues.
import Glibc
import SMPPrimitives

/// Round-trip samples (nanoseconds), written by one thread.
final class RTTSamples: @unchecked Sendable {
    // @unchecked Sendable: written by the one measuring thread, read after
    // it is joined (or after the awaited task ended).
    let buffer: UnsafeMutablePointer<Int>
    let capacity: Int
    var count = 0
    init(capacity: Int) {
        self.capacity = capacity
        buffer = .allocate(capacity: Swift.max(capacity, 1))
    }
    deinit { buffer.deallocate() }
    @inline(__always) func record(_ ns: Int) {
        if count < capacity {
            buffer[count] = ns
            count += 1
        }
    }
    /// (median, p99) in nanoseconds.
    func percentiles() -> (Double, Double) {
        guard count > 0 else { return (0, 0) }
        var sorted = UnsafeMutableBufferPointer(start: buffer, count: count)
        sorted.sort()
        return (Double(sorted[count / 2]), Double(sorted[Swift.min(count - 1, count * 99 / 100)]))
    }
}

/// The measuring side of a ping-pong run: ``pingpongWarmup`` untimed and
/// then `n` timed round trips, each timed with the monotonic clock and
/// checked. `roundTrip(value, last)` sends `value` and returns the reply;
/// `last` is true for the final one (the last planned, or the one at which
/// the wall-clock cap is noticed, looked at every 1,024), after which the
/// loop ends. Returns the wrong replies and the seconds the loop took.
@inline(__always)
func measureRoundTrips(n: Int, samples: RTTSamples, cap: Double,
                       _ roundTrip: (_ value: Int, _ last: Bool) -> Int) -> (errors: Int, seconds: Double) {
    let total = pingpongWarmup + n
    let start = monotonicSeconds()
    var errors = 0
    for i in 0..<total {
        let last = i == total - 1 || (i & 1023 == 0 && monotonicSeconds() - start > cap)
        let t0 = monotonicNanoseconds()
        let reply = roundTrip(i, last)
        let rtt = monotonicNanoseconds() &- t0
        if reply != i { errors += 1 }
        if i >= pingpongWarmup { samples.record(rtt) }
        if last { break }
    }
    return (errors, monotonicSeconds() - start)
}

/// ``measureRoundTrips(n:samples:cap:_:)`` for a round trip that awaits
/// (the same loop; Swift has no way to share it between a synchronous and
/// an async closure).
func measureRoundTripsAsync(n: Int, samples: RTTSamples, cap: Double,
                            _ roundTrip: (_ value: Int) async -> Int?) async -> (errors: Int, seconds: Double) {
    let total = pingpongWarmup + n
    let start = monotonicSeconds()
    var errors = 0
    for i in 0..<total {
        let last = i == total - 1 || (i & 1023 == 0 && monotonicSeconds() - start > cap)
        let t0 = monotonicNanoseconds()
        let reply = await roundTrip(i)
        let rtt = monotonicNanoseconds() &- t0
        if reply != i { errors += 1 }
        if i >= pingpongWarmup { samples.record(rtt) }
        if last { break }
    }
    return (errors, monotonicSeconds() - start)
}

/// A stream receiver's check: messages are 1, 2, 3, ... in order.
/// Counts every message that is not the one after its predecessor.
struct StreamOrderCheck {
    /// The message expected next.
    private(set) var expected = 1
    private(set) var errors = 0

    /// Checks one received message.
    @inline(__always) mutating func check(_ v: Int) {
        if v != expected { errors &+= 1 }
        expected = v &+ 1
    }

    /// The last message seen (how many arrived, if all came in order).
    var last: Int { expected - 1 }
}

/// How far ahead of the receiver's progress
/// ``sendThrottled(n:cap:start:progress:_:)`` lets the sender get (the
/// unbounded queues would otherwise grow without limit).
private let streamThrottleInFlight = 1_000_000

/// The sender loop of the baselines without backpressure (a DispatchQueue,
/// an AsyncStream): sends 1...n; every 4,096 messages it waits (100 µs
/// sleeps) while message i is more than about 1M past `progress()` (a
/// message number the receiver has reached) and stops at the wall-clock
/// cap, counted from `start`. Returns how many it sent.
@inline(__always)
func sendThrottled(n: Int, cap: Double, start: Double, progress: () -> Int, _ send: (Int) -> Void) -> Int {
    var sent = 0
    for i in 1...n {
        send(i)
        sent = i
        if i & 4095 == 0 {
            while i - progress() > streamThrottleInFlight { usleep(100) }
            if monotonicSeconds() - start > cap { break }
        }
    }
    return sent
}
