/// UDP datagrams (RFC 768) over IPv4 and IPv6, checksummed over the
/// pseudo-header (RFC 768; RFC 8200 §8.1 for IPv6, where the checksum is
/// mandatory). A computed checksum of 0 is sent as 0xffff on both.
///
/// Concurrency: pure functions of their arguments, callable from any
/// thread. The `send` functions mutate only what they are given `inout`
/// (the executor's identification generator and pool cache). Cost: one
/// pass over the payload for the checksum and one copy; no allocation, no
/// reference counting.
public enum UDPOutput {
    /// The UDP header's length.
    public static let headerLength = 8

    @inline(__always)
    static func head(sourcePort: UInt16, destinationPort: UInt16, payload: Int) -> UInt64 {
        UInt64(sourcePort) << 48 | UInt64(destinationPort) << 32 | UInt64(headerLength + payload) << 16
    }

    /// Builds a UDP/IPv4 datagram into one buffer and returns its length.
    ///
    /// - Parameters:
    ///   - buffer: where to write (a `PacketPool` buffer); the
    ///     packet starts at offset 0 (raw IP, as a TUN device with
    ///     IFF_NO_PI takes it).
    ///   - source: the sender (IPv4).
    ///   - sourcePort: the sender's port.
    ///   - destination: the receiver (IPv4).
    ///   - destinationPort: the receiver's port.
    ///   - payload: the datagram's data.
    ///   - identification: the IPv4 Identification; the default 0 suits an
    ///     atomic datagram (DF set, RFC 6864 §4.1).
    ///   - dontFragment: the DF flag; the stack sets it on every UDP
    ///     datagram that fits the MTU (Linux's IP_PMTUDISC_WANT, the UDP
    ///     default).
    ///   - ttl: time to live.
    /// - Returns: the packet's length.
    /// - Throws: ``OutputError/bufferTooSmall``, ``OutputError/datagramTooLarge``.
    public static func buildIPv4(
        into buffer: UnsafeMutableRawBufferPointer, source: IPAddress, sourcePort: UInt16,
        destination: IPAddress, destinationPort: UInt16, payload: UnsafeRawBufferPointer,
        identification: UInt16 = 0, dontFragment: Bool = true, ttl: UInt8 = IPv4Output.defaultTTL
    ) throws(OutputError) -> Int {
        try Datagram.buildIPv4(
            into: buffer, protocol: 17,
            head: head(sourcePort: sourcePort, destinationPort: destinationPort, payload: payload.count),
            checksum: .udp, body: payload, source: source, destination: destination,
            identification: identification, dontFragment: dontFragment, ttl: ttl)
    }

    /// Builds a UDP/IPv6 datagram into one buffer and returns its length.
    ///
    /// - Parameters:
    ///   - buffer: where to write; the packet starts at offset 0.
    ///   - source: the sender (IPv6).
    ///   - sourcePort: the sender's port.
    ///   - destination: the receiver (IPv6).
    ///   - destinationPort: the receiver's port.
    ///   - payload: the datagram's data.
    ///   - flowLabel: the flow label (see
    ///     ``IPv6Output/flowLabel(source:destination:nextHeader:sourcePort:destinationPort:seed:)``).
    ///   - hopLimit: the hop limit.
    /// - Returns: the packet's length.
    /// - Throws: ``OutputError/bufferTooSmall``, ``OutputError/datagramTooLarge``.
    public static func buildIPv6(
        into buffer: UnsafeMutableRawBufferPointer, source: IPAddress, sourcePort: UInt16,
        destination: IPAddress, destinationPort: UInt16, payload: UnsafeRawBufferPointer,
        flowLabel: UInt32 = 0, hopLimit: UInt8 = IPv6Output.defaultHopLimit
    ) throws(OutputError) -> Int {
        try Datagram.buildIPv6(
            into: buffer, nextHeader: 17,
            head: head(sourcePort: sourcePort, destinationPort: destinationPort, payload: payload.count),
            checksum: .udp, body: payload, source: source, destination: destination,
            flowLabel: flowLabel, hopLimit: hopLimit)
    }

    /// Sends a UDP/IPv4 datagram into pool buffers, fragmenting it if it
    /// exceeds the MTU (or the pool's buffer size).
    ///
    /// A datagram that fits takes one buffer with DF set and ID 0; a larger
    /// one is fragmented locally with DF clear and a per-destination ID
    /// (Linux's IP_PMTUDISC_WANT). If the pool runs dry part-way, the
    /// buffers already taken go back to `cache` and nothing is sent.
    ///
    /// - Parameters:
    ///   - source: the sender (IPv4).
    ///   - sourcePort: the sender's port.
    ///   - destination: the receiver (IPv4).
    ///   - destinationPort: the receiver's port.
    ///   - payload: the datagram's data (up to 65,507 bytes).
    ///   - mtu: the device MTU (≥ 68).
    ///   - ttl: time to live.
    ///   - identifications: the executor's ID generator.
    ///   - cache: the executor's pool cache; the buffers come from its pool.
    ///   - out: receives the packets, in order; each has its length set.
    /// - Returns: how many entries of `out` were filled.
    /// - Throws: ``OutputError/mtuTooSmall``, ``OutputError/datagramTooLarge``,
    ///   ``OutputError/tooManyFragments`` (before taking any buffer),
    ///   ``OutputError/poolExhausted``.
    public static func sendIPv4(
        source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16,
        payload: UnsafeRawBufferPointer, mtu: Int, ttl: UInt8 = IPv4Output.defaultTTL,
        identifications: inout IPIdentificationGenerator, cache: inout PacketPool.Cache,
        into out: UnsafeMutableBufferPointer<PacketRef>
    ) throws(OutputError) -> Int {
        try Datagram.sendIPv4(
            protocol: 17, head: head(sourcePort: sourcePort, destinationPort: destinationPort, payload: payload.count),
            checksum: .udp, body: payload, source: source, destination: destination, mtu: mtu,
            dontFragmentIfFits: true, ttl: ttl, identifications: &identifications, cache: &cache, into: out)
    }

    /// Sends a UDP/IPv6 datagram into pool buffers, fragmenting it as its
    /// source host (RFC 8200 §4.5) if it exceeds the MTU (or the pool's
    /// buffer size). If the pool runs dry part-way, the buffers already
    /// taken go back to `cache` and nothing is sent.
    ///
    /// - Parameters:
    ///   - source: the sender (IPv6).
    ///   - sourcePort: the sender's port.
    ///   - destination: the receiver (IPv6).
    ///   - destinationPort: the receiver's port.
    ///   - payload: the datagram's data (up to 65,527 bytes).
    ///   - mtu: the device MTU (≥ 1280).
    ///   - flowLabel: the flow label.
    ///   - hopLimit: the hop limit.
    ///   - identifications: the executor's ID generator (Fragment header IDs).
    ///   - cache: the executor's pool cache.
    ///   - out: receives the packets, in order; each has its length set.
    /// - Returns: how many entries of `out` were filled.
    /// - Throws: as ``sendIPv4(source:sourcePort:destination:destinationPort:payload:mtu:ttl:identifications:cache:into:)``.
    public static func sendIPv6(
        source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16,
        payload: UnsafeRawBufferPointer, mtu: Int, flowLabel: UInt32 = 0,
        hopLimit: UInt8 = IPv6Output.defaultHopLimit,
        identifications: inout IPIdentificationGenerator, cache: inout PacketPool.Cache,
        into out: UnsafeMutableBufferPointer<PacketRef>
    ) throws(OutputError) -> Int {
        try Datagram.sendIPv6(
            nextHeader: 17, head: head(sourcePort: sourcePort, destinationPort: destinationPort, payload: payload.count),
            checksum: .udp, body: payload, source: source, destination: destination, mtu: mtu,
            flowLabel: flowLabel, hopLimit: hopLimit, identifications: &identifications, cache: &cache, into: out)
    }
}
