/// A fixed-capacity byte ring: a connection's send or receive buffer.
///
/// The storage is allocated once, when the connection is created, and
/// never grows, so steady-state traffic allocates nothing (the array is
/// uniquely referenced by its connection; copying a connection value would
/// share it copy-on-write, which the one-owner contract of
/// ``TCPConnection`` rules out in practice).
///
/// Offsets are relative to the ring's first readable byte; bytes beyond
/// ``count`` can be written at an offset (the receive side parks
/// out-of-order data there, inside the advertised window) before they
/// become readable with ``commit(_:)``.
struct TCPByteRing {
    private var storage: [UInt8]
    private var head = 0
    /// Readable bytes.
    private(set) var count = 0

    init(capacity: Int) {
        precondition(capacity > 0)
        storage = [UInt8](repeating: 0, count: capacity)
    }

    var capacity: Int { storage.count }
    var free: Int { storage.count - count }

    /// Copies `bytes` to offset `offset` (from the first readable byte);
    /// `offset + bytes.count` must not exceed the capacity.
    mutating func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        let cap = storage.count
        precondition(offset >= 0 && offset + bytes.count <= cap)
        guard let src = bytes.baseAddress, !bytes.isEmpty else { return }
        let start = (head + offset) % cap
        let firstLen = Swift.min(bytes.count, cap - start)
        storage.withUnsafeMutableBytes { dst in
            (dst.baseAddress! + start).copyMemory(from: src, byteCount: firstLen)
            if firstLen < bytes.count {
                dst.baseAddress!.copyMemory(from: src + firstLen, byteCount: bytes.count - firstLen)
            }
        }
    }

    /// Appends at the end of the readable bytes; returns how many fitted.
    mutating func append(_ bytes: UnsafeRawBufferPointer) -> Int {
        let n = Swift.min(bytes.count, free)
        write(UnsafeRawBufferPointer(rebasing: bytes[0..<n]), at: count)
        count += n
        return n
    }

    /// Makes `n` more bytes (already written past ``count``) readable.
    mutating func commit(_ n: Int) {
        precondition(n >= 0 && count + n <= storage.count)
        count += n
    }

    /// Drops `n` bytes from the front.
    mutating func consume(_ n: Int) {
        precondition(n >= 0 && n <= count)
        head = (head + n) % storage.count
        count -= n
        // (No rewind of `head` when empty: out-of-order bytes may sit past
        // the readable end, at positions relative to it.)
    }

    /// Copies up to `destination.count` bytes from the front and consumes them.
    mutating func read(into destination: UnsafeMutableRawBufferPointer) -> Int {
        let n = Swift.min(destination.count, count)
        guard n > 0 else { return 0 }
        withPieces(offset: 0, count: n) { $0.copy(into: destination) }
        consume(n)
        return n
    }

    /// Calls `body` with the bytes at `offset..<offset+count` (readable
    /// bytes) as one or two pieces; the pointers are valid only inside.
    func withPieces<R>(offset: Int, count n: Int, _ body: (TCPPayload) throws -> R) rethrows -> R {
        precondition(offset >= 0 && n >= 0 && offset + n <= count)
        let cap = storage.count
        return try storage.withUnsafeBytes { raw in
            let start = (head + offset) % cap
            let firstLen = Swift.min(n, cap - start)
            let first = UnsafeRawBufferPointer(rebasing: raw[start..<start + firstLen])
            let second = UnsafeRawBufferPointer(rebasing: raw[0..<(n - firstLen)])
            return try body(TCPPayload(first: first, second: second))
        }
    }
}
