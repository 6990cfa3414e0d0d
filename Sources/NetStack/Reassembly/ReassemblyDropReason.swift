/// Why ``ReassemblyTable`` dropped a fragment.
///
/// Raw values are dense from 0 so that per-reason counters are a plain
/// array (see ``ReassemblyStatistics/dropped(_:)``). When a reason drops a
/// whole datagram (its queue), every fragment queued for it and the one
/// that caused it are counted under that reason; otherwise only the
/// fragment itself is. The article <doc:Reassembly> gives the rule behind
/// each reason.
@frozen
public enum ReassemblyDropReason: UInt8, CaseIterable, Sendable, BitwiseCopyable, CustomStringConvertible {
    /// The `NetworkPacket` has no fragment fields (not a
    /// fragment): the fragment only.
    case notAFragment = 0
    /// The fragment was cut short by the capture (snaplen): its data cannot
    /// be reassembled. The fragment only.
    case truncated
    /// The fragment's data lies entirely inside data already received
    /// (Linux: inet_frag_queue_insert's IPFRAG_DUP; RFC 5722 erratum 3089):
    /// the fragment only, the queue is kept.
    case duplicate
    /// The fragment partly overlaps received data: the whole datagram
    /// (RFC 5722 §4 for IPv6; Linux's IPv4 since 2018, IPFRAG_OVERLAP).
    case overlap
    /// A last fragment that ends before data already received or
    /// elsewhere than an earlier last fragment, or data past a received
    /// last fragment: the whole datagram (Linux: ip_frag_queue /
    /// ip6_frag_queue, "discard_qp"). For IPv6 also a non-last fragment
    /// whose length is not a multiple of 8 (RFC 8200 §4.5: the fragment
    /// only, a Parameter Problem is owed).
    case inconsistentLength
    /// A fragment with no data (Linux: `end == offset`, the whole datagram).
    case emptyFragment
    /// The datagram would exceed 65535 bytes (IPv4 total length, IPv6
    /// payload length): IPv4 the whole datagram (Linux: ip_frag_reasm's
    /// out_oversize); IPv6 the fragment only (RFC 8200 §4.5, ip6_frag_queue).
    case oversizeDatagram
    /// The datagram was about to queue more than
    /// ``ReassemblyConfiguration/maxFragmentsPerDatagram`` fragments: the
    /// whole datagram (FreeBSD's net.inet.ip.maxfragsperpacket).
    case tooManyFragments
    /// The table holds ``ReassemblyConfiguration/maxFragments`` buffers
    /// or ``ReassemblyConfiguration/maxQueues`` datagrams already: the new
    /// fragment only (Linux: inet_frag_find refuses above ipfrag_high_thresh).
    case memoryCap
    /// The datagram was not complete within its timeout: the whole datagram.
    case timeout
    /// The reassembled datagram does not fit a buffer of the datagram pool:
    /// the whole datagram.
    case bufferTooSmall
    /// The datagram pool had no free buffer: the whole datagram.
    case noBuffer
    /// An IPv6 first fragment (offset 0) that does not hold the whole header
    /// chain up to the upper-layer header (RFC 8200 §4.5, RFC 7112; Linux:
    /// ipv6_frag_thdr_truncated): the fragment only, a Parameter Problem is
    /// owed.
    case incompleteHeaderChain

    /// Number of reasons; raw values are `0..<count`.
    public static let count = ReassemblyDropReason.allCases.count

    /// A stable snake_case name for statistics and reports.
    public var description: String {
        switch self {
        case .notAFragment: return "not_a_fragment"
        case .truncated: return "truncated"
        case .duplicate: return "duplicate"
        case .overlap: return "overlap"
        case .inconsistentLength: return "inconsistent_length"
        case .emptyFragment: return "empty_fragment"
        case .oversizeDatagram: return "oversize_datagram"
        case .tooManyFragments: return "too_many_fragments"
        case .memoryCap: return "memory_cap"
        case .timeout: return "timeout"
        case .bufferTooSmall: return "buffer_too_small"
        case .noBuffer: return "no_buffer"
        case .incompleteHeaderChain: return "incomplete_header_chain"
        }
    }
}
