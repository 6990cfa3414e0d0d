import SMPPrimitives

// The PCB tables are keyed by the parser's FlowKey, seen from the arriving
// packet: `destination` is the socket's local endpoint, `source` its remote
// one. The bound/listening table uses the same type with the source part
// zeroed (the family's wildcard address, port 0), so a lookup never converts
// keys: the parser's key goes straight into the hash.

extension IPAddress {
    /// The family's wildcard address (`0.0.0.0` / `::`).
    @inlinable
    public static func wildcard(_ family: AddressFamily) -> IPAddress {
        family == .ipv4 ? IPAddress(ipv4: 0) : IPAddress(ipv6High: 0, low: 0)
    }

    /// True for `0.0.0.0` / `::`.
    @inlinable
    public var isWildcard: Bool { (high | low) == 0 }
}

extension FlowKey: RCUHashKey {
    /// A fast keyed mix over the key's words (folded multiplies,
    /// SMPPrimitives' `rcuHashMix(_:_:seed:)`); the IPv6 high halves are
    /// mixed in only for IPv6. Not DoS-resistant unless `seed` is secret and
    /// random (``PCBTable``'s tables draw theirs at random). A pure function:
    /// any thread, no memory access.
    @inlinable
    public func rcuHash(seed: UInt64) -> UInt64 {
        let ports = UInt64(destinationPort) << 32 | UInt64(sourcePort) << 16
            | UInt64(transport.rawValue) << 4 | UInt64(family.rawValue)
        var h = rcuHashMix(destinationLow, sourceLow, seed: seed)
        h = rcuHashMix(h, ports, seed: seed)
        if family == .ipv6 {
            h = rcuHashMix(h ^ destinationHigh, sourceHigh, seed: seed)
        }
        return h
    }

    /// The key of a bound/listening entry for `local` (source part zero).
    @inlinable
    public static func bound(_ transport: TransportProtocol, local: IPAddress, port: UInt16) -> FlowKey {
        FlowKey(transport: transport, source: .wildcard(local.family), sourcePort: 0,
                destination: local, destinationPort: port)
    }

    /// The bound-table key for this packet's specific local address.
    @inlinable
    public var boundKey: FlowKey { .bound(transport, local: destination, port: destinationPort) }

    /// The bound-table key for the wildcard local address.
    @inlinable
    public var wildcardKey: FlowKey {
        .bound(transport, local: .wildcard(destination.family), port: destinationPort)
    }

    /// The key under which a socket connected from `local` to `remote`
    /// receives (as its packets carry it).
    @inlinable
    public static func connected(_ transport: TransportProtocol, local: InetEndpoint, remote: InetEndpoint) -> FlowKey {
        FlowKey(transport: transport, source: remote.address, sourcePort: remote.port,
                destination: local.address, destinationPort: local.port)
    }
}

/// A socket endpoint: address and port.
public struct InetEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// The IP address (the wildcard, ``IPAddress/isWildcard``, binds every
    /// local address).
    public var address: IPAddress
    /// The port, host order.
    public var port: UInt16

    /// An endpoint from an address and a port (a plain value: any thread).
    public init(_ address: IPAddress, _ port: UInt16) {
        self.address = address
        self.port = port
    }

    /// `a.b.c.d` or an IPv6 text, and a port; nil if the text is no address.
    public init?(_ text: String, _ port: UInt16) {
        guard let a = IPAddress(text) else { return nil }
        self.init(a, port)
    }

    /// `a.b.c.d:port` or `[v6]:port`. Allocates (a String): for tools and logs.
    public var description: String {
        address.family == .ipv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }
}
