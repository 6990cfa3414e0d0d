import SMPPrimitives

/// Errors of the UDP socket API, with the errno Linux gives for each.
@frozen
public enum UDPSocketError: Error, Sendable, Hashable {
    /// EADDRINUSE: another socket holds a conflicting binding.
    case addressInUse
    /// EADDRNOTAVAIL: the address is not one of the stack's.
    case addressNotAvailable
    /// EAFNOSUPPORT / EINVAL: the address family does not fit the socket
    /// (an IPv4 address on an IPv6 socket, an IPv4-mapped address on a
    /// v6-only socket).
    case familyMismatch
    /// EISCONN / EINVAL: already bound or connected.
    case invalidState
    /// EDESTADDRREQ: send without a destination on an unconnected socket.
    case notConnected
    /// EBADF: the socket is closed.
    case closed
    /// EAGAIN on bind: every ephemeral port is taken.
    case noEphemeralPort
    /// EMSGSIZE, ENOBUFS: the output path could not build the datagram.
    case output(OutputError)

    /// The errno Linux reports for the same condition.
    public var errno: Int32 {
        switch self {
        case .addressInUse: return 98          // EADDRINUSE
        case .addressNotAvailable: return 99   // EADDRNOTAVAIL
        case .familyMismatch: return 97        // EAFNOSUPPORT
        case .invalidState: return 22          // EINVAL
        case .notConnected: return 89          // EDESTADDRREQ
        case .closed: return 9                 // EBADF
        case .noEphemeralPort: return 11       // EAGAIN
        case .output(.poolExhausted): return 105  // ENOBUFS
        case .output: return 90                // EMSGSIZE
        }
    }
}

/// The UDP port reservations of one stack: which (address, port) pairs
/// are bound, with Linux's conflict rules (inet_bind_conflict without
/// SO_REUSEADDR / SO_REUSEPORT), and the ephemeral port allocator.
///
/// A binding covers a set of IPv4 and a set of IPv6 local addresses:
/// `0.0.0.0` all IPv4; `a.b.c.d` (or `::ffff:a.b.c.d` on an IPv6 socket)
/// that one; `::` all IPv6, and all IPv4 too unless the socket is v6-only;
/// a specific IPv6 address that one. Two bindings of a port conflict when
/// their IPv4 sets or their IPv6 sets intersect: so a specific and a
/// wildcard binding of one family conflict (Linux: EADDRINUSE), a
/// dual-stack `::` conflicts with every IPv4 binding, a v6-only `::` with
/// none.
///
/// Concurrency: any thread; one mutex (control path only).
final class UDPPortTable: Sendable {
    /// Linux's default net.ipv4.ip_local_port_range.
    static let ephemeralRange: ClosedRange<UInt16> = 32768...60999

    struct Binding: Hashable {
        var address: IPAddress
        var v6Only: Bool
        var socketID: Int
        /// SO_REUSEPORT: bindings of the same address and v6-only setting
        /// that both set it share the port (a group).
        var reusePort = false

        /// The IPv4 addresses covered: nil none, 0 all, else one.
        var v4: IPAddress?? {
            switch address.family {
            case .ipv4: return address.isWildcard ? .some(nil) : .some(address)
            case .ipv6:
                if address.isWildcard { return v6Only ? nil : .some(nil) }
                if address.isIPv4Mapped { return .some(address.unmapped) }
                return nil
            }
        }
        /// The IPv6 addresses covered (IPv4-mapped bindings cover none).
        var v6: IPAddress?? {
            guard address.family == .ipv6, !address.isIPv4Mapped else { return nil }
            return address.isWildcard ? .some(nil) : .some(address)
        }

        func conflicts(with other: Binding) -> Bool {
            if reusePort && other.reusePort && address == other.address && v6Only == other.v6Only { return false }
            func overlap(_ a: IPAddress??, _ b: IPAddress??) -> Bool {
                guard case .some(let x) = a, case .some(let y) = b else { return false }
                guard let x, let y else { return true }   // a wildcard meets anything
                return x == y
            }
            return overlap(v4, other.v4) || overlap(v6, other.v6)
        }
    }

    /// A pthread lock (binds and closes on several threads contend for it,
    /// and the thread sanitizer must see the hand-offs: see `PthreadMutex`).
    private let state = PthreadLockedValue<(ports: [UInt16: [Binding]], next: UInt16)>(
        ([:], UInt16.random(in: UDPPortTable.ephemeralRange)))

    /// Reserves `port` (0: an ephemeral port) for `binding`; returns the port.
    func reserve(_ binding: Binding, port: UInt16) throws(UDPSocketError) -> UInt16 {
        try state.withLock { (s: inout (ports: [UInt16: [Binding]], next: UInt16)) throws(UDPSocketError) -> UInt16 in
            func free(_ p: UInt16) -> Bool { !(s.ports[p] ?? []).contains { $0.conflicts(with: binding) } }
            var chosen = port
            if port == 0 {
                // Linux's __inet_hash_connect walks the range from a
                // random offset; a counter from a random start is enough
                // here (the table is per stack, not a remote-facing hash).
                let r = Self.ephemeralRange
                let size = Int(r.upperBound - r.lowerBound) + 1
                var found: UInt16?
                for i in 0..<size {
                    let p = r.lowerBound + UInt16((Int(s.next - r.lowerBound) + i) % size)
                    if free(p) { found = p; break }
                }
                guard let found else { throw .noEphemeralPort }
                chosen = found
                s.next = found == r.upperBound ? r.lowerBound : found + 1
            } else if !free(port) {
                throw .addressInUse
            }
            s.ports[chosen, default: []].append(binding)
            return chosen
        }
    }

    /// Bindings reserved now, over all ports (a gauge: one per bound or
    /// connected socket). Any thread; one lock.
    var reservationCount: Int {
        state.withLock { s in s.ports.values.reduce(0) { $0 + $1.count } }
    }

    /// Releases the socket's reservation of `port`.
    func release(port: UInt16, socketID: Int) {
        state.withLock { s in
            s.ports[port]?.removeAll { $0.socketID == socketID }
            if s.ports[port]?.isEmpty == true { s.ports[port] = nil }
        }
    }
}
