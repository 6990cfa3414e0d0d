import FastDemux

extension TCPHeader {
    /// The RST that answers this segment when it reaches no connection
    /// (RFC 9293 §3.10.7.1, CLOSED state, and §3.10.7.2 for an ACK to a
    /// listener): if the segment has ACK, `<SEQ=SEG.ACK><CTL=RST>`;
    /// otherwise `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`. Nil for an
    /// incoming RST ("An incoming segment containing a RST is discarded").
    ///
    /// Concurrency: a pure function (any thread).
    public func resetReply(payloadLength: Int) -> TCPHeader? {
        if flags.contains(.rst) { return nil }
        if flags.contains(.ack) {
            return TCPHeader(sourcePort: destinationPort, destinationPort: sourcePort,
                             sequenceNumber: acknowledgmentNumber, acknowledgmentNumber: 0,
                             flags: .rst, window: 0)
        }
        return TCPHeader(sourcePort: destinationPort, destinationPort: sourcePort, sequenceNumber: 0,
                         acknowledgmentNumber: sequenceNumber &+ sequenceLength(payloadLength: payloadLength),
                         flags: [.rst, .ack], window: 0)
    }
}

extension TCPEndpoints {
    /// The endpoints of a reply to a segment that arrived from `source` to
    /// `destination`.
    @inlinable
    public init(replyTo header: TCPHeader, source: IPAddress, destination: IPAddress) {
        self.init(local: destination, localPort: header.destinationPort, remote: source, remotePort: header.sourcePort)
    }
}
