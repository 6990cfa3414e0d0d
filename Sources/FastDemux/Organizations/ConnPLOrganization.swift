import Glibc
import SMPPrimitives

/// Connection-parallel with locks (ConnP-L, seeds/002): connections are
/// hashed to `groups` connection groups, each with its own lock and its own
/// lookup table. The input thread takes the group lock and does the lookup,
/// the protocol work and the socket enqueue itself. The paper measured 4
/// and 128 groups: more groups, fewer contended acquisitions.
///
/// Per packet: one lock acquisition and release (consecutive packets of one
/// burst for the same group share one acquisition).
///
/// Concurrency contract: see ``DemuxOrganization``; the caller keeps the
/// sockets alive until traffic has stopped.
final class ConnPLOrganization: DemuxOrganization, @unchecked Sendable {
    // @unchecked Sendable: group g's table is only touched while holding
    // group g's pthread mutex.
    let kind = OrganizationKind.connpL
    let groupCount: Int
    var coreThreadCount: Int { 0 }
    let setup: OrganizationSetup
    let locks: UnsafeMutablePointer<pthread_mutex_t>
    let tables: UnsafeMutablePointer<FlowMap>

    init(setup: OrganizationSetup) {
        self.setup = setup
        groupCount = setup.groups
        locks = CountedLock.allocate(count: groupCount)
        tables = .allocate(capacity: groupCount)
        let per = max(16, setup.maxConnections / groupCount * 2)
        for g in 0..<groupCount { (tables + g).initialize(to: FlowMap(capacity: per)) }
    }

    deinit {
        for g in 0..<groupCount { tables[g].deallocate() }
        tables.deallocate()
        CountedLock.deallocate(locks, count: groupCount)
    }

    @inline(__always)
    func group(of key: FlowKey) -> Int { organizationHash(key) % groupCount }

    func start() {}

    func attach(_ socket: Socket, key: FlowKey) {
        let g = group(of: key)
        pthread_mutex_lock(locks + g)
        _ = tables[g].insert(key, UInt(bitPattern: Unmanaged.passUnretained(socket).toOpaque()))
        pthread_mutex_unlock(locks + g)
    }

    func close(_ socket: Socket, key: FlowKey) {
        let g = group(of: key)
        // Under the group lock: no input is delivering to it meanwhile, and
        // none finds it afterwards.
        pthread_mutex_lock(locks + g)
        _ = tables[g].remove(key)
        pthread_mutex_unlock(locks + g)
        socket.close()
    }

    func makeInput(index: Int, cpu: Int) -> any OrganizationInput { Input(org: self, cpu: cpu) }

    func finish() -> OrganizationStats { OrganizationStats() }

    final class Input: OrganizationInput {
        let org: ConnPLOrganization
        let delivery: SocketDelivery
        let counting: Bool
        var switches = ThreadContextSwitches()

        init(org: ConnPLOrganization, cpu: Int) {
            self.org = org
            counting = org.setup.statistics
            delivery = SocketDelivery(cpu: cpu, counting: counting)
        }

        func begin() { if counting { switches = .now() } }

        func deliver(_ burst: UnsafeBufferPointer<DemuxPacket>) {
            var held = -1
            for p in burst {
                delivery.stats.stack.offered &+= 1
                let g = org.group(of: p.key)
                if g != held {
                    if held >= 0 { release(held) }
                    CountedLock.lock(org.locks + g, &delivery.stats.stack.sync, counting: counting)
                    held = g
                }
                if let bits = org.tables[g].lookup(p.key) {
                    delivery.deliver(p, socketBits: bits)
                } else {
                    delivery.stats.stack.drops.record(.noSocket)
                }
            }
            if held >= 0 { release(held) }
            // Outside the lock: the sockets outlive the traffic (the
            // organization's contract), a closed one just has nothing to read.
            delivery.publishReadiness()
        }

        @inline(__always)
        func release(_ g: Int) {
            CountedLock.unlock(org.locks + g, &delivery.stats.stack.sync, counting: counting)
        }

        func quiescent() {}

        func end() -> OrganizationStats {
            if counting { ThreadContextSwitches.record(since: switches, into: &delivery.stats) }
            return delivery.stats
        }
    }
}
