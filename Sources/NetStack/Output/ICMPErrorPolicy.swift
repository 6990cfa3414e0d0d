/// Why an ICMP error must not be sent about a datagram (RFC 1122 §3.2.2,
/// RFC 4443 §2.4(e)).
@frozen
public enum ICMPErrorSuppression: Sendable, Hashable {
    /// The datagram has no readable IP header, or the upper-layer header
    /// the rules must look at is cut off: there is nothing safe to quote.
    case malformed
    /// It is itself an ICMP error message (RFC 1122 §3.2.2, RFC 4443
    /// §2.4(e.1)); for IPv4 also an unknown ICMP type, as Linux's
    /// icmp_send treats one.
    case aboutICMPError
    /// It is an ICMPv6 Redirect (RFC 4443 §2.4(e.2)).
    case aboutRedirect
    /// It is a fragment other than the first (RFC 1122 §3.2.2; for IPv6
    /// see ``ICMPErrorPolicy``).
    case nonInitialFragment
    /// It was sent to an IP multicast or broadcast address (RFC 1122
    /// §3.2.2, RFC 4443 §2.4(e.3)).
    case multicastOrBroadcastDestination
    /// It arrived as a link-layer multicast or broadcast (RFC 1122 §3.2.2,
    /// RFC 4443 §2.4(e.4, e.5)); never the case on a TUN device.
    case linkLayerMulticastOrBroadcast
    /// Its source does not name a single host: zero, loopback, broadcast,
    /// multicast or class E for IPv4 (RFC 1122 §3.2.2); unspecified or
    /// multicast for IPv6 (RFC 4443 §2.4(e.6)).
    case sourceNotUnicastHost
}

/// The rules for *not* sending an ICMP error, as a function the stack
/// consults before building one (and before asking the ``ICMPRateLimiter``).
///
/// IPv6 non-first fragments: RFC 4443 does not forbid errors about them,
/// but without the upper-layer header rule (e.1) cannot be checked, so
/// this policy refuses them as RFC 1122 does for IPv4 (Linux's
/// is_ineligible lets them through). Subnet-directed broadcasts are not
/// recognised (the stack has no subnet configuration); anycast sources
/// (RFC 4443 §2.4(e.6)) neither.
///
/// Concurrency: pure functions of their arguments; any thread; no
/// allocation, a few bounds-checked loads (and the IPv6 extension-header
/// walk).
public enum ICMPErrorPolicy {
    /// Whether an ICMPv4 error about `datagram` must not be sent, and why;
    /// `nil` means it may be (subject to rate limiting).
    ///
    /// - Parameters:
    ///   - datagram: the received IPv4 datagram, from its IP header.
    ///   - linkLayerBroadcast: it arrived as a link-layer broadcast or
    ///     multicast (false on a TUN device).
    /// - Returns: the first rule that forbids the error, or `nil`.
    public static func suppression(ofErrorAboutIPv4 datagram: UnsafeRawBufferPointer,
                                   linkLayerBroadcast: Bool = false) -> ICMPErrorSuppression? {
        guard let d = ReceivedDatagram.ipv4(datagram) else { return .malformed }
        if !d.isFirstFragment { return .nonInitialFragment }
        let destination = d.destination.ipv4Value, source = d.source.ipv4Value
        if destination >> 28 == 0xe || destination == 0xffff_ffff { return .multicastOrBroadcastDestination }
        if linkLayerBroadcast { return .linkLayerMulticastOrBroadcast }
        // 0/8 "this network", 127/8 loopback, 224/4 multicast, 240/4 class E
        // and the limited broadcast.
        let first = source >> 24
        if first == 0 || first == 127 || first >= 224 { return .sourceNotUnicastHost }
        if d.upperProtocol == 1 {
            guard d.upperOffset < d.end else { return .malformed }
            // Errors: 3 unreachable, 4 source quench, 5 redirect, 11 time
            // exceeded, 12 parameter problem; above 18 (NR_ICMP_TYPES)
            // unknown, which Linux's icmp_send also refuses.
            let type = datagram[d.upperOffset]
            switch type {
            case 3, 4, 5, 11, 12: return .aboutICMPError
            case 19...: return .aboutICMPError
            default: break
            }
        }
        return nil
    }

    /// Whether an ICMPv6 error of `type`/`code` about `datagram` must not
    /// be sent, and why; `nil` means it may be (subject to rate limiting).
    ///
    /// The multicast rules (e.3 to e.5) exempt Packet Too Big (type 2) and
    /// Parameter Problem code 2 (an unrecognised option with action bits
    /// 10), as RFC 4443 §2.4(e) does.
    ///
    /// - Parameters:
    ///   - datagram: the received IPv6 packet, from its IPv6 header.
    ///   - type: the ICMPv6 error type the caller wants to send.
    ///   - code: its code.
    ///   - linkLayerMulticast: it arrived as a link-layer multicast or
    ///     broadcast (false on a TUN device).
    /// - Returns: the first rule that forbids the error, or `nil`.
    public static func suppression(ofErrorAboutIPv6 datagram: UnsafeRawBufferPointer, type: UInt8, code: UInt8,
                                   linkLayerMulticast: Bool = false) -> ICMPErrorSuppression? {
        guard let d = ReceivedDatagram.ipv6(datagram) else { return .malformed }
        if !d.isFirstFragment { return .nonInitialFragment }
        if d.upperProtocol == 58 {
            guard d.upperOffset < d.end else { return .malformed }
            let offendingType = datagram[d.upperOffset]
            if offendingType < 128 { return .aboutICMPError }  // e.1: types 0...127 are errors
            if offendingType == 137 { return .aboutRedirect }  // e.2
        }
        let exempt = type == 2 || (type == 4 && code == 2)
        if !exempt {
            if d.destination.high >> 56 == 0xff { return .multicastOrBroadcastDestination }  // e.3
            if linkLayerMulticast { return .linkLayerMulticastOrBroadcast }  // e.4, e.5
        }
        if !d.source.isUnicastSource { return .sourceNotUnicastHost }  // e.6
        return nil
    }
}

/// A token bucket for ICMP errors: Linux's icmp_global_allow
/// (net.ipv4.icmp_msgs_per_sec = 1000, icmp_msgs_burst = 50, which also
/// govern ICMPv6). RFC 1812 §4.3.2.8 and RFC 4443 §2.4(f) require error
/// rate limiting; a token bucket is what RFC 4443 §2.4(f) suggests.
///
/// The bucket holds at most `burst` messages and refills at
/// `messagesPerSecond`; time comes from the caller (`now`, in nanoseconds
/// on any monotonic clock), so tests are deterministic and the hot path
/// makes no clock call of its own. Echo replies are not errors and are not
/// limited (Linux's default icmp_ratemask limits only unreachable, source
/// quench, time exceeded and parameter problem; icmpv6_ratemask excludes
/// Packet Too Big, which callers should not pass through the limiter
/// either). Linux's additional per-destination limit (icmp_ratelimit,
/// through inet_peer) is not implemented.
///
/// Concurrency: a value owned by one core executor; ``allow(now:)`` is
/// `mutating` and not thread-safe (no atomics: one executor, one bucket).
/// Cost: a few integer operations, no allocation.
public struct ICMPRateLimiter: Sendable {
    /// Refill rate.
    public let messagesPerSecond: Int
    /// Bucket size: how many errors may go out back to back.
    public let burst: Int
    /// Credit in message-nanoseconds: one message costs 10^9; refilling
    /// adds elapsed nanoseconds × rate, so no fraction of a token is lost.
    private var credit: UInt64
    private var last: UInt64
    private let capacity: UInt64

    private static let nanosecondsPerSecond: UInt64 = 1_000_000_000

    /// A full bucket at time `now`.
    ///
    /// - Parameters:
    ///   - messagesPerSecond: refill rate (≥ 1; Linux's default 1000).
    ///   - burst: bucket size (1 ... 2^32; Linux's default 50).
    ///   - now: the current time in nanoseconds.
    public init(messagesPerSecond: Int = 1000, burst: Int = 50, now: UInt64) {
        precondition(messagesPerSecond >= 1 && burst >= 1 && burst <= 1 << 32)
        self.messagesPerSecond = messagesPerSecond
        self.burst = burst
        capacity = UInt64(burst) * Self.nanosecondsPerSecond
        credit = capacity
        last = now
    }

    /// Takes one token if there is one: `true` means send the error.
    ///
    /// - Parameter now: the current time in nanoseconds; a time earlier
    ///   than the last call's counts as no time passing.
    public mutating func allow(now: UInt64) -> Bool {
        if now > last {
            // Past the time a refill from empty takes, the bucket is full
            // anyway; clamping keeps elapsed × rate far from overflowing.
            let rate = UInt64(messagesPerSecond)
            let elapsed = min(now - last, capacity / rate + 1)
            credit = min(capacity, credit + elapsed * rate)
            last = now
        }
        guard credit >= Self.nanosecondsPerSecond else { return false }
        credit -= Self.nanosecondsPerSecond
        return true
    }

    /// Whole tokens left (for tests and statistics).
    public var available: Int { Int(credit / Self.nanosecondsPerSecond) }
}
