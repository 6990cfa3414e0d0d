/// The transport protocol of a ``FlowKey`` (IP protocol number).
@frozen
public enum TransportProtocol: UInt8, Sendable, BitwiseCopyable, Hashable, CustomStringConvertible {
    /// TCP (IP protocol 6).
    case tcp = 6
    /// UDP (IP protocol 17).
    case udp = 17

    /// `tcp` or `udp`, as tshark and the oracle spell it.
    public var description: String { self == .tcp ? "tcp" : "udp" }
}

/// A directed transport 5-tuple: protocol, source and destination address
/// and port, exactly as they appear in the packet (source = sender).
///
/// This is the key of the PCB tables: `Hashable` (synthesized over the
/// fields) and `BitwiseCopyable`, 40 bytes, never allocates. Both
/// addresses always have the same family. ``canonical`` gives the
/// direction-independent key (the oracle's `canon_key`) for counting a
/// connection's packets in both directions together.
@frozen
public struct FlowKey: Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    // Flattened rather than two `IPAddress` fields (each 17 bytes, padded
    // to 24): 38 bytes in a 40-byte stride, one family tag for both.
    @usableFromInline var sourceHigh: UInt64
    @usableFromInline var sourceLow: UInt64
    @usableFromInline var destinationHigh: UInt64
    @usableFromInline var destinationLow: UInt64
    /// The sender's port (host order).
    public var sourcePort: UInt16
    /// The receiver's port (host order).
    public var destinationPort: UInt16
    /// TCP or UDP.
    public var transport: TransportProtocol
    /// The address family of both endpoints.
    public var family: AddressFamily

    /// A key for the given endpoints. Both addresses must have the same
    /// family (the destination's family is taken from the source).
    @inlinable
    public init(transport: TransportProtocol, source: IPAddress, sourcePort: UInt16,
                destination: IPAddress, destinationPort: UInt16) {
        self.sourceHigh = source.high
        self.sourceLow = source.low
        self.destinationHigh = destination.high
        self.destinationLow = destination.low
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.transport = transport
        self.family = source.family
    }

    /// The sender's address.
    @inlinable
    public var source: IPAddress {
        get { IPAddress(high: sourceHigh, low: sourceLow, family: family) }
        set { sourceHigh = newValue.high; sourceLow = newValue.low; family = newValue.family }
    }

    /// The receiver's address.
    @inlinable
    public var destination: IPAddress {
        get { IPAddress(high: destinationHigh, low: destinationLow, family: family) }
        set { destinationHigh = newValue.high; destinationLow = newValue.low; family = newValue.family }
    }

    /// Field-wise equality, as the derived `==` (and consistent with the
    /// derived `hash(into:)`), written out because the derived one compiles
    /// to a `memcmp` call: this is the key compare of every PCB table
    /// lookup on the fast path. Any thread; a few register compares.
    @inlinable
    public static func == (a: FlowKey, b: FlowKey) -> Bool {
        let addresses = (a.sourceLow ^ b.sourceLow) | (a.destinationLow ^ b.destinationLow)
            | (a.sourceHigh ^ b.sourceHigh) | (a.destinationHigh ^ b.destinationHigh)
        return addresses == 0 && a.sourcePort == b.sourcePort && a.destinationPort == b.destinationPort
            && a.transport == b.transport && a.family == b.family
    }

    /// The same flow seen from the other end.
    @inlinable
    public var reversed: FlowKey {
        FlowKey(transport: transport, source: destination, sourcePort: destinationPort,
                destination: source, destinationPort: sourcePort)
    }

    /// The direction-independent form: the endpoint with the smaller
    /// (packed address bytes, port) pair becomes the source. Both
    /// directions of a connection have the same canonical key.
    @inlinable
    public var canonical: FlowKey {
        let s = (sourceHigh, sourceLow, sourcePort)
        let d = (destinationHigh, destinationLow, destinationPort)
        return d < s ? reversed : self
    }

    /// `proto|lowaddr|lowport|highaddr|highport` of the ``canonical`` key:
    /// the format of the `canon_key` column of the tshark oracle's fixtures
    /// (Tests/Fixtures/oracle). Allocates (a String): for tools and tests.
    public var canonicalDescription: String {
        let c = canonical
        return "\(c.transport)|\(c.source)|\(c.sourcePort)|\(c.destination)|\(c.destinationPort)"
    }

    /// `tcp 10.0.0.1:80 > 10.0.0.2:1234` (IPv6 addresses in brackets).
    public var description: String {
        func ep(_ a: IPAddress, _ p: UInt16) -> String {
            a.family == .ipv6 ? "[\(a)]:\(p)" : "\(a):\(p)"
        }
        return "\(transport) \(ep(source, sourcePort)) > \(ep(destination, destinationPort))"
    }
}
