import FastDemux
import PacketIO
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
    // group g's mutex.
    let kind: OrganizationKind
    let batched: Bool
    let groupCount: Int
    var coreThreadCount: Int { 0 }
    let setup: OrganizationSetup
    let locks: UnsafeMutablePointer<PthreadMutex>
    let tables: UnsafeMutablePointer<FlowMap>

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
        _ = tables[g].insert(key, UInt(bitPattern: Unmanaged.passUnretained(socket).toOpaque()))
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

    func makeInput(index: Int, cpu: Int) -> any OrganizationInput { Input(org: self, cpu: cpu) }

    func finish() -> OrganizationStats { OrganizationStats() }

    final class Input: OrganizationInput {
        let org: ConnPLOrganization
        let delivery: SocketDelivery
        let counting: Bool
        var switches = ThreadContextSwitches()
        /// Batched mode, per chunk: each packet's group (-1 once delivered)
        /// and resolved socket bits.
        static let chunk = 64
        let groupOf: UnsafeMutablePointer<Int>
        let resolved: UnsafeMutablePointer<UInt>
        let members: UnsafeMutablePointer<Int>
        var warmSink: UInt = 0

        init(org: ConnPLOrganization, cpu: Int) {
            self.org = org
            counting = org.setup.statistics
            delivery = SocketDelivery(cpu: cpu, counting: counting)
            groupOf = .allocate(capacity: Self.chunk)
            resolved = .allocate(capacity: Self.chunk)
            members = .allocate(capacity: Self.chunk)
        }

        deinit {
            groupOf.deallocate()
            resolved.deallocate()
            members.deallocate()
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
                delivery.publishReadiness()
                return
            }
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

        /// One chunk, group by group in order of first appearance; within a
        /// group in arrival order (a flow belongs to one group, so per-flow
        /// order holds). Under the group lock: all lookups, then a touch of
        /// every socket, then the deliveries, so the misses overlap.
        func deliverBatched(_ burst: UnsafeBufferPointer<DemuxPacket>) {
            let n = burst.count
            for i in 0..<n { groupOf[i] = org.group(of: burst[i].key) }
            var sink: UInt = 0
            for i in 0..<n where groupOf[i] >= 0 {
                let g = groupOf[i]
                var m = 0
                for j in i..<n where groupOf[j] == g {
                    members[m] = j
                    m += 1
                    groupOf[j] = -1
                }
                CountedLock.lock(org.locks + g, &delivery.stats.stack.sync, counting: counting)
                for k in 0..<m { resolved[k] = org.tables[g].lookup(burst[members[k]].key) ?? 0 }
                for k in 0..<m where resolved[k] != 0 {
                    Unmanaged<Socket>.fromOpaque(UnsafeRawPointer(bitPattern: resolved[k])!)._withUnsafeGuaranteedRef { s in
                        sink &+= UInt(s.stateWord.load(ordering: .relaxed)) &+ UInt(s.queue.capacity)
                    }
                }
                for k in 0..<m {
                    delivery.stats.stack.offered &+= 1
                    if resolved[k] != 0 {
                        delivery.deliver(burst[members[k]], socketBits: resolved[k])
                    } else {
                        delivery.stats.stack.drops.record(.noSocket)
                    }
                }
                release(g)
            }
            warmSink &+= sink
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
