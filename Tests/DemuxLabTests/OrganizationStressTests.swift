import FastDemux
import SMPPrimitives
import Testing
@testable import DemuxLab
import PacketIO
import TestSupport

/// One test body for every parallel organization: the same conservation,
/// per-flow order and churn checks (``runOrganization(_:)`` verifies them
/// and lists violations in `failures`).
@Suite("Parallel organizations")
struct OrganizationStressTests {
    struct Round: Sendable, CustomStringConvertible {
        var connections: Int
        var inputs: Int
        var groups: Int
        var churn: Int
        var queueCapacity: Int
        var pinned: Bool
        var description: String {
            "\(connections) conns, \(inputs) inputs, \(groups) groups, churn \(churn), queue \(queueCapacity)\(pinned ? ", pinned" : "")"
        }
    }

    /// Short rounds: few and many connections, 1 to 3 input threads (3 with
    /// 2 core threads and a reader oversubscribes 2 CPUs), sockets connected
    /// and closed during traffic, small queues (queue-full drops must be
    /// counted too).
    static let rounds: [Round] = [
        Round(connections: 6, inputs: 1, groups: 4, churn: 8, queueCapacity: 1024, pinned: false),
        Round(connections: 192, inputs: 2, groups: 128, churn: 12, queueCapacity: 64, pinned: false),
        Round(connections: 64, inputs: 3, groups: 4, churn: 8, queueCapacity: 16, pinned: false),
        Round(connections: 32, inputs: 2, groups: 4, churn: 0, queueCapacity: 256, pinned: true),
    ]

    @Test("conservation, per-flow order and churn", arguments: OrganizationKind.allCases)
    func conservationOrderChurn(kind: OrganizationKind) {
        var churnDelivered = 0
        for (i, round) in Self.rounds.enumerated() {
            var c = OrganizationRunConfiguration(kind: kind, connections: round.connections)
            c.inputThreads = round.inputs
            c.groups = round.groups
            c.churnFlows = round.churn
            c.queueCapacity = round.queueCapacity
            c.pinned = round.pinned
            c.flowControl = round.queueCapacity != 16   // one open-loop round: queue_full drops
            c.packets = 12_000
            c.statistics = i != 2   // one round with counting off: same guarantees
            c.seed = 0x5eed &+ UInt64(i)
            let r = runOrganization(c)
            #expect(r.checked, "\(kind) round \(i) (\(round)): \(r.failures)")
            #expect(r.offered == c.packets / c.inputThreads * c.inputThreads)
            #expect(r.delivered > 0)
            #expect(r.stats.stack.offered == r.offered)
            #expect(r.delivered + r.stats.stack.drops.total + r.drainedAtClose == r.offered)
            // Churn flows get traffic before they connect and after they close.
            #expect(round.churn == 0 || r.stats.stack.drops[.noSocket] > 0)
            churnDelivered += r.churnDelivered
        }
        // ... and, while connected, some of it reached them.
        #expect(churnDelivered > 0)
    }

    /// Each organization pays for synchronization where its design says it
    /// does: the statistics must show it.
    @Test("statistics reflect the organization", arguments: OrganizationKind.allCases)
    func statisticsSignature(kind: OrganizationKind) {
        var c = OrganizationRunConfiguration(kind: kind, connections: 48)
        c.inputThreads = 2
        c.groups = 4
        c.packets = 8_000
        c.pinned = false
        let r = runOrganization(c)
        #expect(r.checked, "\(r.failures)")
        let s = r.stats, y = s.stack.sync
        let offered = r.offered
        switch kind {
        case .msgp:
            // The table lock and the connection lock for every packet.
            #expect(y.lockAcquisitions >= 2 * offered)
            #expect(s.coreQueue.queueOps == 0)
        case .connpL, .connpLBatched:
            #expect(y.lockAcquisitions >= offered / 32)   // at least one per group run of a burst
            #expect(y.lockAcquisitions <= offered + y.threadWakeups)
            #expect(s.coreQueue.queueOps == 0)
        case .connpT:
            // Every packet crosses the mailbox; no lock in the stack (locks
            // counted here are only reader wake-ups).
            #expect(s.coreQueue.queueOps == offered)
            #expect(y.lockAcquisitions <= y.threadWakeups)
            #expect(y.contendedAcquisitions == 0)
            #expect(s.coreQueueConsumer.queueOps > 0)
        case .fastpath:
            // One TCP try-lock per segment; no table lock.
            #expect(s.coreQueue.queueOps == 0)
            #expect(y.lockAcquisitions >= r.delivered)
            #expect(s.stack.readSections > 0)
        case .fastpathDeferred:
            #expect(s.coreQueue.queueOps == offered)
            #expect(s.stack.readSections > 0)
            #expect(s.coreQueueConsumer.queueOps > 0)
        }
        #expect(s.stack.socketQueue.queueOps == s.stack.enqueued + s.stack.drops[.queueFull])
        #expect(s.socketQueueConsumer.queueOps > 0)
    }
}
