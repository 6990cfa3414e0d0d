/// A value a ``PCQ`` can carry: exactly one machine word, moved without
/// reference counting or allocation.
///
/// The queue stores `pcqWord` and rebuilds the element on the consumer side
/// with `init(pcqWord:)`. The round trip must be lossless for every value the
/// producers put. Conformances must be trivial (no retain/release, no side
/// effects): they run on the queue's hot path. Ownership of whatever the
/// word refers to (a buffer index, a pointer, an `Unmanaged` object) passes
/// from producer to consumer with the item; the queue never dereferences it.
public protocol PCQElement {
    /// Rebuilds an element from a word produced by ``pcqWord``.
    init(pcqWord: UInt)
    /// The element as one machine word.
    var pcqWord: UInt { get }
}

extension UInt: PCQElement {
    @inlinable @inline(__always)
    public init(pcqWord: UInt) { self = pcqWord }
    @inlinable
    public var pcqWord: UInt { @inline(__always) get { self } }
}

extension Int: PCQElement {
    @inlinable @inline(__always)
    public init(pcqWord: UInt) { self = Int(bitPattern: pcqWord) }
    @inlinable
    public var pcqWord: UInt { @inline(__always) get { UInt(bitPattern: self) } }
}

// Pointers travel as their bit patterns. The word was produced from a
// non-nil pointer by a put, so unwrapping cannot fail; `unsafelyUnwrapped`
// skips the check in optimized builds.

extension UnsafeMutableRawPointer: PCQElement {
    @inlinable @inline(__always)
    public init(pcqWord: UInt) { self = UnsafeMutableRawPointer(bitPattern: pcqWord).unsafelyUnwrapped }
    @inlinable
    public var pcqWord: UInt { @inline(__always) get { UInt(bitPattern: self) } }
}

extension UnsafeRawPointer: PCQElement {
    @inlinable @inline(__always)
    public init(pcqWord: UInt) { self = UnsafeRawPointer(bitPattern: pcqWord).unsafelyUnwrapped }
    @inlinable
    public var pcqWord: UInt { @inline(__always) get { UInt(bitPattern: self) } }
}

extension OpaquePointer: PCQElement {
    @inlinable @inline(__always)
    public init(pcqWord: UInt) { self = OpaquePointer(bitPattern: pcqWord).unsafelyUnwrapped }
    @inlinable
    public var pcqWord: UInt { @inline(__always) get { UInt(bitPattern: Int(bitPattern: self)) } }
}

/// An object reference travels unretained: the producer typically passes
/// `Unmanaged.passRetained(obj)` and the consumer balances it with
/// `takeRetainedValue()`, so the queue itself causes no ARC traffic.
extension Unmanaged: PCQElement {
    @inlinable @inline(__always)
    public init(pcqWord: UInt) {
        self = Unmanaged.fromOpaque(UnsafeRawPointer(bitPattern: pcqWord).unsafelyUnwrapped)
    }
    @inlinable
    public var pcqWord: UInt { @inline(__always) get { UInt(bitPattern: toOpaque()) } }
}
