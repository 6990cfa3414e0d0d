/// The transport protocol of a ``FlowKey`` (IP protocol number).
@frozen
public enum TransportProtocol: UInt8, Sendable, BitwiseCopyable, Hashable, CustomStringConvertible {
    case tcp = 6
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
    public var source: IPAddress
    public var destination: IPAddress
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var transport: TransportProtocol

    @inlinable
    public init(transport: TransportProtocol, source: IPAddress, sourcePort: UInt16,
                destination: IPAddress, destinationPort: UInt16) {
        self.transport = transport
        self.source = source
        self.sourcePort = sourcePort
        self.destination = destination
        self.destinationPort = destinationPort
    }

    /// The address family of both endpoints.
    @inlinable
    public var family: AddressFamily { source.family }

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
        let s = (source.high, source.low, sourcePort)
        let d = (destination.high, destination.low, destinationPort)
        return d < s ? reversed : self
    }

    /// `proto|lowaddr|lowport|highaddr|highport` of the ``canonical`` key:
    /// the oracle's `canon_key` format (oracle.py `canon()`).
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
