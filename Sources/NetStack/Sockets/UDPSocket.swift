import SMPPrimitives
import Synchronization

/// A received datagram, borrowed: the payload is a view into the packet
/// buffer, valid only inside the closure that receives it (the buffer goes
/// back to its pool when the closure returns). Copy what must outlive it.
public struct UDPDatagram {
    /// The UDP payload, in place in the packet buffer (no copy).
    public let payload: UnsafeRawBufferPointer
    /// The sender (IPv4-mapped on an IPv6 socket that received IPv4).
    public let peer: InetEndpoint
    /// The local address and port it was sent to (same form as `peer`).
    public let local: InetEndpoint
}

/// A UDP socket of an ``EndpointStack``, on FastDemux's `Socket` and PCB
/// tables (one receive queue, RCU lookups, no lock on the input path).
///
/// Two ways to use it:
/// - **On a core executor** (non-blocking): give `onReadable` to
///   ``EndpointStack/makeUDPSocket(_:v6Only:reusePort:core:onReadable:)``; it runs
///   on core `core`'s executor whenever datagrams arrived (the socket's
///   worker continuation, scheduled by the input cores after each burst,
///   coalesced). Drain with ``tryReceive(_:)`` until it returns nil, reply
///   with `send(_:to:)`: neither blocks, neither allocates.
/// - **From Swift Concurrency**: ``receive(_:)`` suspends until a datagram
///   arrives; the async `send(_:to:)` hops onto the flow's owner core.
///
/// Dual stack: an IPv6 socket bound to `::` also receives IPv4 datagrams
/// (peers as `::ffff:a.b.c.d`) and sends to IPv4-mapped peers as IPv4,
/// unless it is v6-only. Bind conflicts follow Linux (see `UDPPortTable`);
/// port 0 takes an ephemeral port from 32768–60999.
///
/// Concurrency contract: control (``bind(_:)``, ``connect(to:)``,
/// ``close()``) from any thread. Receiving is single-reader: one task or
/// the readiness handler, not both at once. The non-blocking `send(_:to:)`
/// only on an executor of the stack; the async one from anywhere.
public final class UDPSocket: @unchecked Sendable {
    // @unchecked Sendable: `socket` is thread-safe (FastDemux's contract);
    // the endpoints are behind `state`; everything else is immutable.

    /// The stack the socket belongs to.
    public let stack: EndpointStack
    /// IPv4 or IPv6.
    public let family: AddressFamily
    /// IPV6_V6ONLY: an IPv6 socket that never sees IPv4.
    public let v6Only: Bool
    /// The core whose executor runs the readiness handler.
    public let core: Int
    /// SO_REUSEPORT: sockets that all set it may bind the same address and
    /// port; each flow goes to one member (by its hash).
    public let reusePort: Bool
    /// The demux socket underneath.
    let socket: Socket
    private let onReadable: (@Sendable (UDPSocket) -> Void)?

    private struct State {
        var local: InetEndpoint?
        var remote: InetEndpoint?
        var closed = false
        /// A member of a reuseport group (bound through its anchor).
        var grouped = false
    }
    /// A pthread lock: control calls and sends on several threads may
    /// contend (see `PthreadMutex` for the thread sanitizer).
    private let state = PthreadLockedValue(State())

    init(stack: EndpointStack, family: AddressFamily, v6Only: Bool, reusePort: Bool, core: Int,
         onReadable: (@Sendable (UDPSocket) -> Void)?) {
        self.stack = stack
        self.reusePort = reusePort
        self.family = family
        self.v6Only = family == .ipv6 && v6Only
        self.core = core
        self.onReadable = onReadable
        socket = stack.demux.makeSocket(.udp)
        socket.v6Only.store(self.v6Only, ordering: .relaxed)
        stack.live.openSockets.add(1, ordering: .relaxed)
        // Every socket gets its worker (zero coalescing delay: UDP replies
        // should not wait); without a handler it does nothing, and async
        // readers are woken by the socket's own parker. The token counts
        // the continuation as live for as long as its body exists.
        let token = stack.live.workerToken()
        socket.attachWorker(on: stack.group.executors[core], delay: .zero) { [weak self] _ in
            withExtendedLifetime(token) {}
            guard let self else { return }
            // On executor `core`, the single writer of that core's counters.
            self.stack.cores[self.core].stats.socketWorkerRuns &+= 1
            guard let handler = self.onReadable else { return }
            handler(self)
        }
    }

    deinit {
        if !state.withLock({ $0.closed }) { close() }
    }

    /// The local endpoint (after bind, connect or a first send).
    public var localEndpoint: InetEndpoint? { state.withLock { $0.local } }
    /// The peer (after connect).
    public var remoteEndpoint: InetEndpoint? { state.withLock { $0.remote } }
    /// The demux socket's counters.
    public var counters: Socket.Counters { socket.counters }

    private var wildcard: IPAddress { family == .ipv4 ? IPAddress(ipv4: 0) : IPAddress(ipv6High: 0, low: 0) }

    /// Checks that `address` fits the socket's family.
    private func check(_ address: IPAddress) throws(UDPSocketError) {
        guard address.family == family else { throw .familyMismatch }
        if v6Only && address.isIPv4Mapped { throw .familyMismatch }
    }

    // MARK: Control

    /// Binds to `local`: a wildcard or one of the stack's addresses, port 0
    /// for an ephemeral port. Any thread.
    /// - Throws: ``UDPSocketError/addressInUse`` (a conflicting binding),
    ///   ``UDPSocketError/addressNotAvailable``, ``UDPSocketError/familyMismatch``,
    ///   ``UDPSocketError/invalidState`` (already bound), ``UDPSocketError/closed``.
    public func bind(_ local: InetEndpoint) throws(UDPSocketError) {
        try check(local.address)
        if !local.address.isWildcard && !stack.isLocal(local.address) { throw .addressNotAvailable }
        try state.withLock { (s: inout State) throws(UDPSocketError) -> Void in
            guard !s.closed else { throw .closed }
            guard s.local == nil else { throw .invalidState }
            let binding = UDPPortTable.Binding(address: local.address, v6Only: v6Only, socketID: socket.id,
                                               reusePort: reusePort)
            let port = try stack.ports.reserve(binding, port: local.port)
            do throws(SocketError) {
                if reusePort {
                    try stack.joinReusePortGroup(socket, at: InetEndpoint(local.address, port), v6Only: v6Only)
                    s.grouped = true
                } else {
                    try socket.bind(InetEndpoint(local.address, port))
                }
            } catch {
                stack.ports.release(port: port, socketID: socket.id)
                throw error == .closed ? .closed : .addressInUse
            }
            s.local = InetEndpoint(local.address, port)
        }
    }

    /// Binds to the wildcard address of the socket's family.
    public func bind(port: UInt16 = 0) throws(UDPSocketError) {
        try bind(InetEndpoint(wildcard, port))
    }

    /// Connects to `remote`: the socket then receives only that peer's
    /// datagrams and `send(_:to:)` may omit the destination. Binds an
    /// ephemeral port first if unbound; a wildcard binding gets the stack's
    /// address of the peer's family. Any thread.
    public func connect(to remote: InetEndpoint) throws(UDPSocketError) {
        try check(remote.address)
        if localEndpoint == nil { try bind(port: 0) }
        try state.withLock { (s: inout State) throws(UDPSocketError) -> Void in
            guard !s.closed else { throw .closed }
            guard s.remote == nil, let bound = s.local else { throw .invalidState }
            let address = try sourceAddress(bound: bound.address, remote: remote.address)
            let local = InetEndpoint(remote.address.isIPv4Mapped ? address.mappedToIPv6 : address, bound.port)
            if s.grouped {
                // A connected socket leaves its reuseport group: it takes
                // exactly its peer's datagrams from now on.
                stack.leaveReusePortGroup(socket, at: bound)
                s.grouped = false
            }
            do throws(SocketError) {
                try socket.connect(to: remote, from: local)
            } catch {
                throw error == .closed ? .closed : .addressInUse
            }
            s.local = local
            s.remote = remote
        }
    }

    /// The source address (never IPv4-mapped) for sending to `remote`.
    private func sourceAddress(bound: IPAddress, remote: IPAddress) throws(UDPSocketError) -> IPAddress {
        do throws(SourceAddressFailure) {
            return try stack.sourceAddress(bound: bound, remote: remote)
        } catch {
            throw error == .notAvailable ? .addressNotAvailable : .familyMismatch
        }
    }

    /// Closes the socket: its port is free again, queued datagrams go back
    /// to the pool after a grace period (waited for off the executors,
    /// deferred on them), the readiness handler is cancelled. Idempotent;
    /// any thread.
    public func close() {
        let closing: (port: UInt16, group: InetEndpoint?)? = state.withLock { s in
            guard !s.closed else { return nil }
            s.closed = true
            return (s.local?.port ?? 0, s.grouped ? s.local : nil)
        }
        guard let (port, group) = closing else { return }
        stack.live.openSockets.subtract(1, ordering: .relaxed)
        if let group { stack.leaveReusePortGroup(socket, at: group) }
        if port != 0 { stack.ports.release(port: port, socketID: socket.id) }
        // A synchronous grace period on an executor (a QSBR reader) would
        // wait for itself.
        if CoreExecutor.current != nil { socket.closeDeferred() } else { socket.close() }
    }

    // MARK: Receive

    /// The next datagram, if one is queued, lent to `body`; nil if none.
    /// Never blocks, no allocation; the buffer is freed when `body`
    /// returns (to the core's cache on an executor of the stack).
    @discardableResult
    public func tryReceive<R>(_ body: (UDPDatagram) throws -> R) rethrows -> R? {
        guard let p = socket.tryReceive() else { return nil }
        defer { release(p) }
        return try body(datagram(p))
    }

    /// The next datagram, suspending until one arrives, lent to `body`;
    /// nil once the socket is closed and drained. Never while holding an
    /// RCU read section.
    @discardableResult
    public func receive<R>(_ body: (UDPDatagram) throws -> R) async rethrows -> R? {
        guard let p = await socket.receiveAsync() else { return nil }
        defer { release(p) }
        return try body(datagram(p))
    }

    private func release(_ p: PacketRef) {
        if let c = stack.currentCore { c.release(p) } else { stack.buffers.free(p) }
    }

    /// The view of a queued packet (parsed again: the queue holds only the
    /// word; the parse is a few bounds-checked loads).
    private func datagram(_ p: PacketRef) -> UDPDatagram {
        let bytes = stack.buffers.bytes(p)
        guard case .packet(let t) = PacketParser().parse(bytes, linkType: .raw) else {
            // Unreachable: the input path parsed this very buffer.
            let none = InetEndpoint(wildcard, 0)
            return UDPDatagram(payload: UnsafeRawBufferPointer(rebasing: bytes[0..<0]), peer: none, local: none)
        }
        var peer = InetEndpoint(t.flow.source, t.flow.sourcePort)
        var local = InetEndpoint(t.flow.destination, t.flow.destinationPort)
        if family == .ipv6 && peer.address.family == .ipv4 {
            peer.address = peer.address.mappedToIPv6
            local.address = local.address.mappedToIPv6
        }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[t.payloadOffset ..< t.payloadOffset + t.capturedPayloadLength])
        return UDPDatagram(payload: payload, peer: peer, local: local)
    }

    // MARK: Send

    /// Source and destination (IPv4 forms) of a send; binds an ephemeral
    /// port first if unbound (as Linux's autobind).
    private func route(_ destination: InetEndpoint?) throws(UDPSocketError) -> (InetEndpoint, InetEndpoint) {
        if localEndpoint == nil { try bind(port: 0) }
        return try state.withLock { (s: inout State) throws(UDPSocketError) -> (InetEndpoint, InetEndpoint) in
            guard !s.closed else { throw .closed }
            guard let remote = destination ?? s.remote else { throw .notConnected }
            try check(remote.address)
            guard let bound = s.local else { throw .invalidState }
            let source = try sourceAddress(bound: bound.address, remote: remote.address)
            return (InetEndpoint(source, bound.port), remote.unmapped)
        }
    }

    /// Sends `payload` to `destination` (or the connected peer): built on
    /// this core from its pool cache, fragmented to the MTU, written on
    /// the flow's owner core's queue in this loop pass. On an executor of
    /// the stack only (the readiness handler, a job); no allocation.
    public func send(_ payload: UnsafeRawBufferPointer, to destination: InetEndpoint? = nil) throws(UDPSocketError) {
        guard let c = stack.currentCore else {
            preconditionFailure("UDPSocket.send(_:to:) off the stack's executors: use the async send")
        }
        let (local, remote) = try route(destination)
        do throws(OutputError) {
            try c.sendUDP(payload, from: local, to: remote)
        } catch {
            throw .output(error)
        }
    }

    /// Sends `payload` to `destination` (or the connected peer) from any
    /// task: one synchronous hop onto the flow's owner core (an allocation
    /// and two executor hand-offs per datagram).
    public func send(_ payload: [UInt8], to destination: InetEndpoint? = nil) async throws(UDPSocketError) {
        let (local, remote) = try route(destination)
        let owner = stack.owner(local: local, remote: remote)
        let result: Result<Void, UDPSocketError> = await stack.group.call(on: owner) { [stack] in
            guard let c = stack.currentCore else { return .failure(.closed) }
            var r: Result<Void, UDPSocketError> = .success(())
            payload.withUnsafeBytes { bytes in
                do throws(OutputError) {
                    try c.sendUDP(bytes, from: local, to: remote)
                } catch {
                    r = .failure(.output(error))
                }
            }
            return r
        }
        try result.get()
    }
}

extension EndpointStack {
    /// A new UDP socket (unbound). Any thread; allocates.
    ///
    /// - Parameters:
    ///   - family: IPv4 or IPv6.
    ///   - v6Only: IPV6_V6ONLY (IPv6 only): no IPv4 datagrams, no
    ///     IPv4-mapped addresses.
    ///   - reusePort: SO_REUSEPORT (see ``UDPSocket/reusePort``).
    ///   - core: the executor that runs `onReadable`.
    ///   - onReadable: the readiness handler (executor form), run on core
    ///     `core` after datagrams arrived; drain with
    ///     ``UDPSocket/tryReceive(_:)``. Nil for the async form.
    public func makeUDPSocket(_ family: AddressFamily = .ipv6, v6Only: Bool = false, reusePort: Bool = false,
                              core: Int = 0, onReadable: (@Sendable (UDPSocket) -> Void)? = nil) -> UDPSocket {
        precondition(core >= 0 && core < configuration.cores)
        return UDPSocket(stack: self, family: family, v6Only: v6Only, reusePort: reusePort, core: core,
                         onReadable: onReadable)
    }

    /// Adds `socket` to the reuseport group of `endpoint`, making the group
    /// (its anchor bound in the PCB tables) if it is the first member.
    func joinReusePortGroup(_ socket: Socket, at endpoint: InetEndpoint, v6Only: Bool) throws(SocketError) {
        try reuseGroups.withLock { (g: inout [InetEndpoint: ReusePortGroup]) throws(SocketError) -> Void in
            if let group = g[endpoint] {
                group.members.append(socket)
                group.publish()
                return
            }
            let anchor = demux.makeSocket(.udp, queueCapacity: 16)
            anchor.v6Only.store(v6Only, ordering: .relaxed)
            let group = ReusePortGroup(anchor: anchor, counts: live)
            group.members = [socket]
            // Published before the bind: the anchor is never found without
            // members (the bind's insert releases this store to readers).
            group.publish()
            do throws(SocketError) {
                try anchor.bind(endpoint)
            } catch {
                group.retire()
                throw error
            }
            g[endpoint] = group
        }
    }

    /// Removes `socket` from the group of `endpoint`; the last member
    /// closes the anchor.
    ///
    /// The anchor leaves the PCB tables under the group lock, before the
    /// lock is released: a socket that joins next (its port reservation
    /// does not conflict with the leaving member's) makes a new anchor and
    /// binds it, which would fail with `addressInUse` while the old anchor
    /// were still in the table. Hence the deferred close, which never
    /// blocks (a grace period under the mutex would stall every other
    /// bind). The close comes before the member list is retired: an input
    /// core that still finds the anchor then sees either the old list or
    /// a closed anchor, never an open anchor without members (which would
    /// queue datagrams where no reader ever looks).
    func leaveReusePortGroup(_ socket: Socket, at endpoint: InetEndpoint) {
        reuseGroups.withLock { g in
            guard let group = g[endpoint] else { return }
            group.members.removeAll { $0 === socket }
            guard group.members.isEmpty else {
                group.publish()
                return
            }
            group.anchor.closeDeferred()
            group.retire()
            g[endpoint] = nil
        }
    }
}
