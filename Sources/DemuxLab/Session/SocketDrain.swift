import FastDemux

extension Socket {
    /// Reader side: takes every queued packet, up to 64 at a time into
    /// `scratch` (at least 64 entries), and hands each non-empty batch to
    /// `body` (outside the socket's receive lock, so `body` may free the
    /// buffers). Returns when the queue is empty. The socket's single
    /// reader only (a session's or the soak's consumer).
    @inline(__always)
    func drainBatches(into scratch: UnsafeMutablePointer<PacketRef>,
                      _ body: (UnsafeBufferPointer<PacketRef>) -> Void) {
        while true {
            var n = 0
            receive(upTo: 64) { p in
                scratch[n] = p
                n += 1
            }
            if n == 0 { return }
            body(UnsafeBufferPointer(start: scratch, count: n))
        }
    }
}
