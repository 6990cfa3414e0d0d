import Synchronization
import SMPPrimitives

extension TCPSegmentInfo {
    /// Sequence space a segment with `payloadLength` bytes occupies
    /// (payload, +1 for SYN, +1 for FIN).
    @inlinable
    public func sequenceLength(payloadLength: Int) -> UInt32 {
        UInt32(truncatingIfNeeded: payloadLength) &+ (flags.contains(.syn) ? 1 : 0) &+ (flags.contains(.fin) ? 1 : 0)
    }
}

/// When the receiver must ACK immediately instead of delaying.
public enum TCPAckPolicy: Sendable, Equatable {
    /// RFC 1122/5681 style: ACK at once on PSH, FIN or an out-of-sequence
    /// segment, and for every second full-sized (≥ `mss` bytes) segment.
    case delayed(mss: Int)
    /// ACK every segment.
    case everySegment
    /// Never from the fast path (the worker ACKs later).
    case never

    /// Delayed ACKs for a 1460-byte MSS (Ethernet).
    public static let `default` = TCPAckPolicy.delayed(mss: 1460)
}

/// An ACK the fast path decided to send.
@frozen
public struct TCPAck: Sendable, Equatable, BitwiseCopyable {
    /// The connection, as seen by the arriving packets.
    public var key: FlowKey
    /// The acknowledgment number (next expected sequence number).
    public var ackNumber: UInt32
    /// True for a duplicate ACK triggered by an out-of-sequence segment.
    public var duplicate: Bool

    /// Creates an ACK decision (a plain value: any thread).
    public init(key: FlowKey, ackNumber: UInt32, duplicate: Bool) {
        self.key = key
        self.ackNumber = ackNumber
        self.duplicate = duplicate
    }
}

/// Minimal TCP receive state: the next expected sequence number and the
/// delayed-ACK bookkeeping. Protected by the socket's TCP lock (a try-lock
/// on the fast path, a plain lock for the worker).
@frozen
public struct TCPReceiveState: Sendable {
    /// Next expected sequence number (RCV.NXT), once known.
    public var nextExpected: UInt32 = 0
    /// False until the first segment (or `connect` with an initial number).
    public var synchronized = false
    /// Full-sized segments received since the last ACK.
    public var unackedFullSegments = 0
    /// Bytes/flags received since the last ACK (something to acknowledge).
    public var ackPending = false
    /// In-sequence segments accepted.
    public var inSequence = 0
    /// Out-of-sequence segments seen (queued anyway; the reader reassembles).
    public var outOfSequence = 0
    /// ACKs sent (fast path and worker).
    public var acksSent = 0

    /// The state before the first segment (not synchronized).
    public init() {}

    /// Processes an arriving segment under the TCP lock; returns true if an
    /// ACK must be sent now.
    @inlinable
    public mutating func receive(_ seg: TCPSegmentInfo, payloadLength: Int, policy: TCPAckPolicy) -> (ackNow: Bool, inSequence: Bool) {
        if !synchronized {
            nextExpected = seg.sequenceNumber
            synchronized = true
        }
        guard seg.sequenceNumber == nextExpected else {
            outOfSequence += 1
            // An out-of-sequence segment is answered at once (duplicate ACK),
            // unless the policy says never.
            return (policy != .never, false)
        }
        inSequence += 1
        let len = seg.sequenceLength(payloadLength: payloadLength)
        nextExpected = nextExpected &+ len
        if len == 0 { return (false, true) }  // a pure ACK needs no ACK
        ackPending = true
        switch policy {
        case .never:
            return (false, true)
        case .everySegment:
            return (true, true)
        case .delayed(let mss):
            if payloadLength >= mss { unackedFullSegments += 1 }
            let now = !seg.flags.isDisjoint(with: [.psh, .fin, .syn])
                || unackedFullSegments >= 2
            return (now, true)
        }
    }

    /// Records that an ACK for `nextExpected` was sent.
    @inlinable
    public mutating func didSendAck() {
        unackedFullSegments = 0
        ackPending = false
        acksSent += 1
    }
}

/// The lock word of a socket's TCP state, combined with the count of
/// segments waiting in the socket's backlog (Linux's "owned socket +
/// backlog", in one word): bit 0 = held, bits 1... = backlogged segments.
///
/// The fast path only ever try-locks (it must never block packet
/// demultiplexing). An input that finds the lock held puts its segment in
/// the backlog and then adds 2 to the word; the holder cannot release while
/// the count is non-zero (its release is a CAS against the whole word), so
/// it processes the backlog first. One word means no fence and no look at
/// the backlog queue on the uncontended path: a CAS to take, a CAS to
/// release.
@usableFromInline
struct TCPLock: ~Copyable {
    @usableFromInline let word = Atomic<UInt>(0)

    @usableFromInline init() {}

    /// Acquire: the state written by the previous holder is visible.
    @inlinable
    func tryLock() -> Bool {
        var unused = 0
        return tryLock(countingRMWs: &unused)
    }

    /// ``tryLock()``, adding 1 to `rmws` when it issued its CAS (not when
    /// the pre-check found the lock held).
    @inlinable
    func tryLock(countingRMWs rmws: inout Int) -> Bool {
        // A plain load first keeps a contended attempt from pulling the line
        // exclusive for nothing.
        let w = word.load(ordering: .relaxed)
        if w & 1 != 0 { return false }
        rmws &+= 1
        return word.compareExchange(expected: w, desired: w | 1, ordering: .acquiring).exchanged
    }

    /// Spins until held (control path, worker, reader).
    @inlinable
    func lock() {
        while !tryLock() { spinLoopHint() }
    }

    /// Segments announced as backlogged (racy unless held).
    @inlinable
    var backlogged: Int { Int(word.load(ordering: .acquiring) >> 1) }

    /// After putting a segment in the backlog: announces it. Returns true if
    /// the lock was free at that moment (the caller should try to take it
    /// and process the backlog itself); false if the holder will see it.
    /// Acquiring and releasing: the backlog put happens-before the holder's
    /// drain (which reads this word with acquire).
    @inlinable
    func announceBacklogged() -> Bool {
        word.add(2, ordering: .acquiringAndReleasing).oldValue & 1 == 0
    }

    /// Holder: `n` announced segments were taken from the backlog.
    /// Returns the RMWs issued (1 if `n > 0`).
    @inlinable
    @discardableResult
    func consumedBacklogged(_ n: Int) -> Int {
        guard n > 0 else { return 0 }
        word.subtract(UInt(n) << 1, ordering: .relaxed)
        return 1
    }

    /// Holder: releases if no segment is announced; returns false (still
    /// held) otherwise. Release: our writes happen-before the next holder.
    @inlinable
    func tryUnlock() -> Bool {
        word.compareExchange(expected: 1, desired: 0, ordering: .releasing).exchanged
    }
}
