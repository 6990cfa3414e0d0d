/// A ``Socket`` as one machine word, without reference counting: what the
/// PCB tables, ready sets and the delivery step store and pass around, so
/// that the input path never retains or releases a socket.
///
/// A `SocketReference` does not keep its socket alive. Something else must:
/// for a reference returned by ``PCBTable/lookup(_:)`` that is the table
/// (its entries are released only a grace period after removal), so the
/// reference is valid until the caller leaves its read section; for the
/// references an organization or a ready set keeps, it is their owner's
/// strong references.
///
/// Concurrency contract: a plain value (`BitwiseCopyable`, `Sendable`):
/// copy it to any thread. ``withSocket(_:)`` costs nothing at run time (no
/// retain, no release, no check) and is valid only while the socket is kept
/// alive as above.
@frozen
public struct SocketReference: BitwiseCopyable, Sendable, Equatable {
    @usableFromInline let unmanaged: Unmanaged<Socket>

    /// A reference to `socket` that does not retain it. Any thread; costs
    /// nothing at run time.
    @inlinable
    public init(unretained socket: Socket) {
        unmanaged = .passUnretained(socket)
    }

    /// The reference whose ``bits`` are `bits` (a word that came from
    /// ``bits`` of a live reference, never 0; unchecked in release builds).
    @inlinable
    package init(bits: UInt) {
        unmanaged = .fromOpaque(UnsafeRawPointer(bitPattern: bits).unsafelyUnwrapped)
    }

    /// The reference as a word (never 0), for word-valued tables and queues.
    @inlinable
    package var bits: UInt { UInt(bitPattern: unmanaged.toOpaque()) }

    /// A reference that holds one strong reference to `socket` (a table
    /// entry); balanced by one ``release()``.
    @inlinable
    package static func retained(_ socket: Socket) -> SocketReference {
        SocketReference(unmanaged: .passRetained(socket))
    }

    @inlinable
    init(unmanaged: Unmanaged<Socket>) { self.unmanaged = unmanaged }

    /// Gives up the strong reference taken by ``retained(_:)``.
    @inlinable
    package func release() { unmanaged.release() }

    /// Runs `body` on the socket without retaining it (valid only while the
    /// socket is kept alive; see the type's documentation).
    @inlinable
    @inline(__always)
    public func withSocket<R>(_ body: (Socket) throws -> R) rethrows -> R {
        try unmanaged._withUnsafeGuaranteedRef(body)
    }

    /// A strong reference to the socket (one retain; control paths only).
    @inlinable
    public var socket: Socket { unmanaged.takeUnretainedValue() }

    /// Identity: true if both refer to the same socket object. Any thread; a
    /// pointer compare, no retain.
    @inlinable
    public static func == (a: SocketReference, b: SocketReference) -> Bool {
        a.unmanaged.toOpaque() == b.unmanaged.toOpaque()
    }
}
