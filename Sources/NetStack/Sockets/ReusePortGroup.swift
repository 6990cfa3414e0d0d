import SMPPrimitives
import Synchronization

/// The members of an SO_REUSEPORT group as input cores see them: an
/// immutable list, replaced (never modified) when a member joins or
/// leaves, published on the group's anchor socket (`Socket.stackWord`) and
/// freed one RCU grace period after it was replaced.
final class ReusePortMembers: @unchecked Sendable {
    // @unchecked Sendable: immutable after init (the references' memory is
    // written once here and only read afterwards).
    /// Keeps the member sockets alive while an input core may use the list.
    let sockets: [Socket]
    let references: UnsafeMutableBufferPointer<SocketReference>
    /// Counts this list as live until its `deinit` (a gauge).
    let counts: StackLiveCounts

    init(_ sockets: [Socket], counts: StackLiveCounts) {
        self.sockets = sockets
        self.counts = counts
        counts.memberLists.add(1, ordering: .relaxed)
        references = .allocate(capacity: max(1, sockets.count))
        for (i, s) in sockets.enumerated() { references.initializeElement(at: i, to: SocketReference(unretained: s)) }
    }

    deinit {
        references.deallocate()
        counts.memberLists.subtract(1, ordering: .relaxed)
    }

    /// The member for a flow hash (Linux's reuseport_select_sock picks by
    /// the flow hash too, so a flow stays with one member while the group
    /// does not change). Inside the read section of the lookup.
    @inline(__always)
    func pick(_ hash: UInt64) -> SocketReference? {
        sockets.isEmpty ? nil : references[Int(hash % UInt64(sockets.count))]
    }
}

/// An SO_REUSEPORT group: one anchor socket holds the binding in the PCB
/// tables (it never receives: the input path redirects every datagram it
/// finds there to a member), the members are sockets outside the tables.
///
/// Concurrency: membership changes under the stack's group lock
/// (`EndpointStack.reuseGroups`); input cores only read the published list.
final class ReusePortGroup: @unchecked Sendable {
    // @unchecked Sendable: `members` is touched only under the stack's
    // `reuseGroups` mutex; `anchor` is immutable.
    let anchor: Socket
    var members: [Socket] = []
    let counts: StackLiveCounts

    init(anchor: Socket, counts: StackLiveCounts) {
        self.anchor = anchor
        self.counts = counts
    }

    /// Publishes the current member list; the replaced one is released
    /// after a grace period (an input core may still be reading it).
    func publish() {
        let list = Unmanaged.passRetained(ReusePortMembers(members, counts: counts))
        // Releasing: an input core that loads the word (acquiring) sees
        // the list's initialized contents. The old value needs no
        // acquire: it was stored under the same group mutex we hold.
        let old = anchor.stackWord.exchange(UInt(bitPattern: list.toOpaque()), ordering: .releasing)
        guard old != 0 else { return }
        let bits = old
        QSBR.afterGracePeriod {
            Unmanaged<ReusePortMembers>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).release()
        }
    }

    /// Unpublishes the list for good (the anchor is closing), released
    /// after a grace period.
    func retire() {
        let old = anchor.stackWord.exchange(0, ordering: .releasing)
        guard old != 0 else { return }
        QSBR.afterGracePeriod {
            Unmanaged<ReusePortMembers>.fromOpaque(UnsafeRawPointer(bitPattern: old)!).release()
        }
    }
}
