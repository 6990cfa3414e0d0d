import FastDemux
import PacketIO
import Glibc
import SMPPrimitives

/// Connection-parallel with locks (ConnP-L, in Willmann, Rixner and Cox's
/// evaluation): connections are hashed to `groups` connection groups, each
/// with its own lock and its own lookup table. The input thread takes the group lock and does the lookup,
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
    // group g's mutex.
    let kind: OrganizationKind
    let batched: Bool
    let groupCount: Int
    var coreThreadCount: Int { 0 }
    let setup: OrganizationSetup
    let locks: UnsafeMutablePointer<PthreadMutex>
    let tables: UnsafeMutablePointer<FlowMap<SocketReference>>

    init(setup: OrganizationSetup, batched: Bool) {
        self.setup = setup
        self.batched = batched
        kind = batched ? .connpLBatched : .connpL
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
        locks[g].lock()
        _ = tables[g].insert(key, SocketReference(unretained: socket))
        locks[g].unlock()
    }

    func close(_ socket: Socket, key: FlowKey) {
        let g = group(of: key)
        // Under the group lock: no input is delivering to it meanwhile, and
        // none finds it afterwards.
        locks[g].lock()
        _ = tables[g].remove(key)
        locks[g].unlock()
        socket.close()
    }

    func makeInput(index: Int) -> any OrganizationInput { Input(org: self) }

    func finish() -> OrganizationStats { OrganizationStats() }

    final class Input: OrganizationInput {
        let org: ConnPLOrganization
        let counting: Bool
        var delivery: SocketDelivery
        var switches = ThreadContextSwitches()
        /// Batched mode, per chunk: each packet's group (-1 once delivered),
        /// the members of the group being delivered and their sockets.
        static let chunk = 64
        let groupOf: UnsafeMutablePointer<Int>
        let members: UnsafeMutablePointer<Int>
        let resolved: UnsafeMutablePointer<SocketReference?>
        var warmSink: UInt = 0

        init(org: ConnPLOrganization) {
            self.org = org
            counting = org.setup.statistics
            delivery = org.setup.makeDelivery()
            groupOf = .allocate(capacity: Self.chunk)
            members = .allocate(capacity: Self.chunk)
            resolved = .allocate(capacity: Self.chunk)
        }

        deinit {
            groupOf.deallocate()
            members.deallocate()
            resolved.deallocate()
        }

        func begin() { if counting { switches = .now() } }

        func deliver(_ burst: UnsafeBufferPointer<DemuxPacket>) {
            if org.batched {
                var start = 0
                while start < burst.count {
                    let n = min(Self.chunk, burst.count - start)
                    deliverBatched(UnsafeBufferPointer(rebasing: burst[start..<(start + n)]))
                    start += n
                }
            } else {
                var held = -1
                for p in burst {
                    let g = org.group(of: p.key)
                    if g != held {
                        if held >= 0 { release(held) }
                        CountedLock.lock(org.locks + g, &delivery.stats.sync, counting: counting)
                        held = g
                    }
                    delivery.deliver(p, to: org.tables[g].lookup(p.key), tcp: .caller, counting: counting)
                }
                if held >= 0 { release(held) }
            }
            // Outside the lock: the sockets outlive the traffic (the
            // organization's contract), a closed one just has nothing to read.
            delivery.flush(counting: counting)
        }

        /// One chunk, group by group in order of first appearance; within a
        /// group in arrival order (a flow belongs to one group, so per-flow
        /// order holds). Under the group lock: all lookups, then a touch of
        /// every socket, then the deliveries, so the misses overlap (the
        /// passes of ``DemuxInput/deliver(batch:onDrop:)``).
        func deliverBatched(_ burst: UnsafeBufferPointer<DemuxPacket>) {
            let n = burst.count
            for i in 0..<n { groupOf[i] = org.group(of: burst[i].key) }
            for i in 0..<n where groupOf[i] >= 0 {
                let g = groupOf[i]
                var m = 0
                for j in i..<n where groupOf[j] == g {
                    members[m] = j
                    m += 1
                    groupOf[j] = -1
                }
                CountedLock.lock(org.locks + g, &delivery.stats.sync, counting: counting)
                for k in 0..<m { resolved[k] = org.tables[g].lookup(burst[members[k]].key) }
                warmSink &+= SocketDelivery.warm(resolved, count: m)
                for k in 0..<m {
                    delivery.deliver(burst[members[k]], to: resolved[k], tcp: .caller, counting: counting)
                }
                release(g)
            }
        }

        @inline(__always)
        func release(_ g: Int) {
            CountedLock.unlock(org.locks + g, &delivery.stats.sync, counting: counting)
        }

        func quiescent() {}

        func end() -> OrganizationStats {
            var stats = OrganizationStats(stack: delivery.stats)
            if counting { ThreadContextSwitches.record(since: switches, into: &stats) }
            return stats
        }
    }
}
