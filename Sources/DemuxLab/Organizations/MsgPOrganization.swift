import FastDemux
import PacketIO
import Glibc
import SMPPrimitives

/// Message-parallel (MsgP, in Willmann, Rixner and Cox's evaluation): any
/// input thread processes any packet. As in FreeBSD's stack of the paper,
/// the lookup runs under one
/// global table lock (the pcbinfo lock); the thread then takes the
/// connection's own lock (the inpcb lock) before dropping the table lock,
/// and does the protocol work and the socket enqueue under it.
///
/// Per packet: two lock acquisitions, two releases; a contended acquisition
/// whenever two input threads meet at the table lock or one connection.
///
/// Concurrency contract: see ``DemuxOrganization``; the caller keeps the
/// sockets alive until traffic has stopped (the table holds them unretained).
final class MsgPOrganization: DemuxOrganization, @unchecked Sendable {
    // @unchecked Sendable: `table`, `slots` and `freeSlots` are only touched
    // while holding `tableLock` (a PthreadMutex); each connection slot's
    // lock guards that connection's TCP state and enqueue order.
    let kind = OrganizationKind.msgp
    var groupCount: Int { 1 }
    var coreThreadCount: Int { 0 }
    let setup: OrganizationSetup
    let tableLock: UnsafeMutablePointer<PthreadMutex>
    let connectionLocks: UnsafeMutablePointer<PthreadMutex>
    /// The socket of each connection slot (nil: free).
    let slots: UnsafeMutablePointer<SocketReference?>
    /// Connection slot by flow.
    nonisolated(unsafe) var table: FlowMap<Int>
    nonisolated(unsafe) var freeSlots: [Int]

    init(setup: OrganizationSetup) {
        self.setup = setup
        tableLock = CountedLock.allocate(count: 1)
        connectionLocks = CountedLock.allocate(count: setup.maxConnections)
        slots = .allocate(capacity: setup.maxConnections)
        slots.initialize(repeating: nil, count: setup.maxConnections)
        table = FlowMap(capacity: setup.maxConnections)
        freeSlots = Array((0..<setup.maxConnections).reversed())
    }

    deinit {
        CountedLock.deallocate(tableLock, count: 1)
        CountedLock.deallocate(connectionLocks, count: setup.maxConnections)
        slots.deallocate()
        table.deallocate()
    }

    func start() {}

    func attach(_ socket: Socket, key: FlowKey) {
        tableLock.pointee.lock()
        defer { tableLock.pointee.unlock() }
        guard let slot = freeSlots.popLast() else { preconditionFailure("MsgP: more than maxConnections sockets") }
        slots[slot] = SocketReference(unretained: socket)
        if !table.insert(key, slot) { freeSlots.append(slot) }
    }

    func close(_ socket: Socket, key: FlowKey) {
        tableLock.pointee.lock()
        if let slot = table.remove(key) {
            // Taking the connection lock waits for a thread that found the
            // socket before the removal and is still delivering to it.
            connectionLocks[slot].lock()
            slots[slot] = nil
            connectionLocks[slot].unlock()
            freeSlots.append(slot)
        }
        tableLock.pointee.unlock()
        socket.close()
    }

    func makeInput(index: Int) -> any OrganizationInput { Input(org: self) }

    func finish() -> OrganizationStats { OrganizationStats() }

    final class Input: OrganizationInput {
        let org: MsgPOrganization
        let counting: Bool
        var delivery: SocketDelivery
        var switches = ThreadContextSwitches()

        init(org: MsgPOrganization) {
            self.org = org
            counting = org.setup.statistics
            delivery = org.setup.makeDelivery()
        }

        func begin() { if counting { switches = .now() } }

        func deliver(_ burst: UnsafeBufferPointer<DemuxPacket>) {
            let tableLock = org.tableLock
            for p in burst {
                CountedLock.lock(tableLock, &delivery.stats.sync, counting: counting)
                guard let slot = org.table.lookup(p.key) else {
                    CountedLock.unlock(tableLock, &delivery.stats.sync, counting: counting)
                    delivery.deliver(p, to: nil, tcp: .caller, counting: counting)
                    continue
                }
                let connLock = org.connectionLocks + slot
                CountedLock.lock(connLock, &delivery.stats.sync, counting: counting)
                let socket = org.slots[slot]
                CountedLock.unlock(tableLock, &delivery.stats.sync, counting: counting)
                // The connection lock serializes the TCP state and the
                // enqueue order of this connection.
                delivery.deliver(p, to: socket, tcp: .caller, counting: counting)
                CountedLock.unlock(connLock, &delivery.stats.sync, counting: counting)
            }
            // Outside the locks: the sockets outlive the traffic (the
            // organization's contract).
            delivery.flush(counting: counting)
        }

        func quiescent() {}

        func end() -> OrganizationStats {
            delivery.flush(counting: counting)
            var stats = OrganizationStats(stack: delivery.stats)
            if counting { ThreadContextSwitches.record(since: switches, into: &stats) }
            return stats
        }
    }
}
