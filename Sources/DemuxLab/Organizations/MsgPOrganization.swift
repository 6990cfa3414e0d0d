import FastDemux
import PacketIO
import Glibc
import SMPPrimitives

/// Message-parallel (MsgP, seeds/002): any input thread processes any
/// packet. As in FreeBSD's stack of the paper, the lookup runs under one
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
    /// Socket bits per connection slot.
    let slots: UnsafeMutablePointer<UInt>
    nonisolated(unsafe) var table: FlowMap
    nonisolated(unsafe) var freeSlots: [Int]

    init(setup: OrganizationSetup) {
        self.setup = setup
        tableLock = CountedLock.allocate(count: 1)
        connectionLocks = CountedLock.allocate(count: setup.maxConnections)
        slots = .allocate(capacity: setup.maxConnections)
        slots.initialize(repeating: 0, count: setup.maxConnections)
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
        slots[slot] = UInt(bitPattern: Unmanaged.passUnretained(socket).toOpaque())
        if !table.insert(key, UInt(slot)) { freeSlots.append(slot) }
    }

    func close(_ socket: Socket, key: FlowKey) {
        tableLock.pointee.lock()
        if let slot = table.remove(key) {
            // Taking the connection lock waits for a thread that found the
            // socket before the removal and is still delivering to it.
            connectionLocks[Int(slot)].lock()
            slots[Int(slot)] = 0
            connectionLocks[Int(slot)].unlock()
            freeSlots.append(Int(slot))
        }
        tableLock.pointee.unlock()
        socket.close()
    }

    func makeInput(index: Int, cpu: Int) -> any OrganizationInput { Input(org: self, cpu: cpu) }

    func finish() -> OrganizationStats { OrganizationStats() }

    final class Input: OrganizationInput {
        let org: MsgPOrganization
        let delivery: SocketDelivery
        let counting: Bool
        var switches = ThreadContextSwitches()

        init(org: MsgPOrganization, cpu: Int) {
            self.org = org
            counting = org.setup.statistics
            delivery = SocketDelivery(cpu: cpu, counting: counting)
        }

        func begin() { if counting { switches = .now() } }

        func deliver(_ burst: UnsafeBufferPointer<DemuxPacket>) {
            let tableLock = org.tableLock
            for p in burst {
                delivery.stats.stack.offered &+= 1
                CountedLock.lock(tableLock, &delivery.stats.stack.sync, counting: counting)
                guard let slot = org.table.lookup(p.key) else {
                    CountedLock.unlock(tableLock, &delivery.stats.stack.sync, counting: counting)
                    delivery.stats.stack.drops.record(.noSocket)
                    continue
                }
                let connLock = org.connectionLocks + Int(slot)
                CountedLock.lock(connLock, &delivery.stats.stack.sync, counting: counting)
                let bits = org.slots[Int(slot)]
                CountedLock.unlock(tableLock, &delivery.stats.stack.sync, counting: counting)
                delivery.deliver(p, socketBits: bits)
                CountedLock.unlock(connLock, &delivery.stats.stack.sync, counting: counting)
            }
            delivery.publishReadiness()
        }

        func quiescent() {}

        func end() -> OrganizationStats {
            delivery.publishReadiness()
            if counting { ThreadContextSwitches.record(since: switches, into: &delivery.stats) }
            return delivery.stats
        }
    }
}
