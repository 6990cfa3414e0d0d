import SMPPrimitives

/// Why no source address fits a destination.
enum SourceAddressFailure: Error {
    /// The stack has no address of the destination's family.
    case notAvailable
    /// The bound address is of the other family.
    case familyMismatch
}

extension EndpointStack {
    /// The source address (never IPv4-mapped) for sending to `remote` from
    /// a socket bound to `bound`: a wildcard binding takes the stack's
    /// first address of the peer's family (Linux picks by route; the stack
    /// has one link), a specific binding is used as it is. Shared by UDP
    /// sends and connects and by TCP's active open. Any thread; no
    /// allocation.
    func sourceAddress(bound: IPAddress, remote: IPAddress) throws(SourceAddressFailure) -> IPAddress {
        let r = remote.unmapped
        let a = bound.isWildcard ? localAddress(r.family) : bound.unmapped
        guard let a else { throw .notAvailable }
        guard a.family == r.family else { throw .familyMismatch }
        return a
    }
}
