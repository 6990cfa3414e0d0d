extension ParseResult {
    /// The `fastdemux classify` line for this result, without the newline:
    /// `index<TAB>proto<TAB>src<TAB>sport<TAB>dst<TAB>dport<TAB>verdict`,
    /// where proto is `tcp`/`udp`, addresses are in ``IPAddress/description``
    /// form, ports are decimal, and verdict is `deliver`; a dropped frame
    /// has `-` in the five tuple columns and the ``DropReason/name`` as
    /// verdict. A comparison against a tshark oracle reads this format;
    /// OracleAgreementTests prints it for each frame that disagrees.
    ///
    /// Allocates (it builds a String): for tools and tests, not the fast path.
    public func classificationLine(index: Int) -> String {
        switch self {
        case .packet(let p):
            let f = p.flow
            return "\(index)\t\(f.transport)\t\(f.source)\t\(f.sourcePort)\t\(f.destination)\t\(f.destinationPort)\tdeliver"
        case .dropped(let reason):
            return "\(index)\t-\t-\t-\t-\t-\t\(reason.name)"
        }
    }
}
