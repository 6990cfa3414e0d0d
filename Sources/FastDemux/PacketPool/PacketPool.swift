import Glibc
import Synchronization
import SMPPrimitives

/// A packet as it travels through queues: one machine word.
///
/// The word is opaque to the demultiplexer. Two encodings are used in this
/// module:
/// - a ``PacketPool`` buffer: `index + 1` (never 0), see ``PacketPool/handle(index:)``;
/// - the demux benchmark's pre-built frames: `(frameIndex << 4 | pass) + 1`
///   (the frame slab is the "buffer"; see the demux workloads of the
///   Workloads module).
/// Whoever created the word knows how to read and free it; the demultiplexer
/// only frees words when a closed socket is torn down, through the
/// ``PacketPool`` given in ``Demux/Configuration``.
@frozen
public struct PacketRef: Hashable, Sendable, BitwiseCopyable {
    /// The word itself; its meaning belongs to whoever created it.
    public var word: UInt

    /// Wraps a word (a plain value: any thread).
    @inlinable public init(word: UInt) { self.word = word }
}

/// Pooled fixed-size packet buffers: one slab, no allocation per packet.
///
/// The slab holds `bufferCount` buffers of `bufferSize` bytes. A buffer is
/// named by its index; its ``PacketRef`` word is `index + 1`. Free buffers
/// live on a global stack guarded by a mutex, but threads normally go
/// through a ``Cache``: a thread-owned stack that refills from and spills to
/// the global stack in batches of `batchSize`, so the steady state costs no
/// atomic operation at all and one lock per `batchSize` packets otherwise.
///
/// Concurrency contract: ``allocate()`` / ``free(_:)`` on the pool itself may be
/// called from any thread (one lock each); a ``Cache`` belongs to one thread.
/// A buffer's bytes belong to whoever holds its ``PacketRef``; handing the
/// word through a `PCQ` transfers ownership (the queue's release/acquire
/// orders the bytes).
public final class PacketPool: @unchecked Sendable {
    // @unchecked Sendable: the slab and length array are raw memory whose
    // parts are owned by whoever holds the buffer's PacketRef (ownership is
    // transferred through queues); the free stack and `transfers` are only
    // touched while holding `freeLock` (a pthread mutex).
    /// Number of buffers in the slab (immutable: any thread).
    public let bufferCount: Int
    /// Bytes per buffer (immutable: any thread).
    public let bufferSize: Int
    /// Buffers a ``Cache`` moves per transfer with the global stack (immutable:
    /// any thread).
    public let batchSize: Int
    @usableFromInline let slab: UnsafeMutableRawPointer
    @usableFromInline let lengths: UnsafeMutablePointer<UInt32>
    /// The global free stack: `freeItems[0..<freeCount]`, guarded by `freeLock`.
    private let freeItems: UnsafeMutablePointer<UInt32>
    private nonisolated(unsafe) var freeCount: Int
    /// Lock acquisitions of the global stack (batch transfers, direct calls).
    private nonisolated(unsafe) var transfers = 0
    private let freeLock = PthreadMutex()

    /// Creates a pool with every buffer free. Any thread; allocates the slab
    /// (page-aligned, `bufferCount × bufferSize` bytes) and two arrays of
    /// `bufferCount` words, once.
    ///
    /// - Parameters:
    ///   - bufferCount: number of buffers (≥ 1).
    ///   - bufferSize: bytes per buffer (default 2 KiB, enough for a
    ///     1500-byte MTU frame plus headroom).
    ///   - batchSize: buffers moved per transfer between a ``Cache`` and the
    ///     global stack.
    public init(bufferCount: Int, bufferSize: Int = 2048, batchSize: Int = 64) {
        precondition(bufferCount >= 1 && bufferSize >= 64 && batchSize >= 1)
        self.bufferCount = bufferCount
        self.bufferSize = bufferSize
        self.batchSize = batchSize
        slab = .allocate(byteCount: bufferCount * bufferSize, alignment: 4096)
        lengths = .allocate(capacity: bufferCount)
        lengths.initialize(repeating: 0, count: bufferCount)
        freeItems = .allocate(capacity: bufferCount)
        // Low indices on top: the first buffers handed out are adjacent.
        for i in 0..<bufferCount { freeItems[i] = UInt32(bufferCount - 1 - i) }
        freeCount = bufferCount
    }

    deinit {
        freeItems.deallocate()
        slab.deallocate()
        lengths.deallocate()
    }

    private func withFreeStack<R>(_ body: () -> R) -> R {
        freeLock.withLock {
            transfers += 1
            return body()
        }
    }

    /// The ``PacketRef`` of buffer `index`.
    @inlinable public func handle(index: Int) -> PacketRef { PacketRef(word: UInt(index) &+ 1) }

    /// The buffer index of a pool ``PacketRef``.
    @inlinable public func index(of packet: PacketRef) -> Int {
        let i = Int(bitPattern: packet.word &- 1)
        precondition(i >= 0 && i < bufferCount, "not a buffer of this pool")
        return i
    }

    /// The whole buffer (`bufferSize` bytes). Caller must hold the packet.
    @inlinable public func buffer(_ packet: PacketRef) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: slab + index(of: packet) * bufferSize, count: bufferSize)
    }

    /// The packet's bytes (`length` of them). Caller must hold the packet.
    @inlinable public func bytes(_ packet: PacketRef) -> UnsafeRawBufferPointer {
        let i = index(of: packet)
        return UnsafeRawBufferPointer(start: slab + i * bufferSize, count: Int(lengths[i]))
    }

    /// The packet's length in bytes.
    @inlinable public func length(of packet: PacketRef) -> Int { Int(lengths[index(of: packet)]) }

    /// Sets the packet's length (≤ `bufferSize`). Caller must hold the packet.
    @inlinable public func setLength(_ length: Int, of packet: PacketRef) {
        precondition(length >= 0 && length <= bufferSize)
        lengths[index(of: packet)] = UInt32(length)
    }

    /// Copies `bytes` into a fresh buffer; nil if the pool is empty or the
    /// bytes do not fit. One lock; prefer a ``Cache`` on hot paths.
    public func allocate(copying bytes: UnsafeRawBufferPointer) -> PacketRef? {
        guard bytes.count <= bufferSize, let p = allocate() else { return nil }
        if let base = bytes.baseAddress { buffer(p).baseAddress!.copyMemory(from: base, byteCount: bytes.count) }
        setLength(bytes.count, of: p)
        return p
    }

    /// Takes one buffer from the global stack (one lock). nil = exhausted.
    public func allocate() -> PacketRef? {
        let i: UInt32? = withFreeStack {
            guard freeCount > 0 else { return nil }
            freeCount -= 1
            return freeItems[freeCount]
        }
        guard let i else { return nil }
        lengths[Int(i)] = 0
        return handle(index: Int(i))
    }

    /// Returns one buffer to the global stack (one lock).
    public func free(_ packet: PacketRef) {
        let i = UInt32(index(of: packet))
        withFreeStack {
            precondition(freeCount < bufferCount, "double free of a packet buffer")
            freeItems[freeCount] = i
            freeCount += 1
        }
    }

    /// Buffers currently on the global stack (not counting caches).
    public var globalFreeCount: Int {
        freeLock.withLock { freeCount }
    }

    /// Lock acquisitions of the global stack so far (batch transfers and
    /// direct allocate/free calls).
    public var globalTransfers: Int {
        freeLock.withLock { transfers }
    }

    /// Moves up to `max` indices from the global stack into `dst`; returns the number moved.
    @usableFromInline
    func takeBatch(into dst: UnsafeMutablePointer<UInt32>, max: Int) -> Int {
        withFreeStack {
            let n = Swift.min(max, freeCount)
            freeCount -= n
            dst.update(from: freeItems + freeCount, count: n)
            return n
        }
    }

    /// Moves `n` indices from `src` onto the global stack.
    @usableFromInline
    func returnBatch(from src: UnsafeMutablePointer<UInt32>, count n: Int) {
        guard n > 0 else { return }
        withFreeStack {
            precondition(freeCount + n <= bufferCount, "double free of a packet buffer")
            (freeItems + freeCount).update(from: src, count: n)
            freeCount += n
        }
    }

    /// A thread-owned cache of free buffers.
    ///
    /// `allocate`/`free` touch only the cache's own memory; every
    /// `batchSize`-th refill or spill takes the pool's lock once. The cache
    /// holds up to `2 × batchSize` buffers and returns them all on `deinit`.
    /// Not shareable: it is `~Copyable` and not `Sendable`-safe to use
    /// concurrently (move it into the thread that uses it).
    public struct Cache: ~Copyable {
        /// The pool the cache takes buffers from and returns them to.
        public let pool: PacketPool
        @usableFromInline let items: UnsafeMutablePointer<UInt32>
        @usableFromInline var count = 0
        /// Batch transfers with the global stack made by this cache.
        public private(set) var transfers = 0

        /// An empty cache on `pool`; allocates its `2 × batchSize`-slot stack
        /// once. The first ``allocate()`` refills it from the pool (one lock).
        public init(pool: PacketPool) {
            self.pool = pool
            items = .allocate(capacity: 2 * pool.batchSize)
        }

        deinit {
            pool.returnBatch(from: items, count: count)
            items.deallocate()
        }

        /// A free buffer (length 0), or nil if the whole pool is exhausted.
        @inlinable
        public mutating func allocate() -> PacketRef? {
            if count == 0 { refill() }
            guard count > 0 else { return nil }
            count -= 1
            let i = Int(items[count])
            pool.lengths[i] = 0
            return pool.handle(index: i)
        }

        /// Returns a buffer (from this pool) to the cache.
        @inlinable
        public mutating func free(_ packet: PacketRef) {
            if count == 2 * pool.batchSize { spill() }
            items[count] = UInt32(pool.index(of: packet))
            count += 1
        }

        @usableFromInline
        mutating func refill() {
            count = pool.takeBatch(into: items, max: pool.batchSize)
            transfers += 1
        }

        @usableFromInline
        mutating func spill() {
            // Keep the lower half (most recently freed are on top: keep them
            // hot in this thread's cache), return the older half.
            let b = pool.batchSize
            pool.returnBatch(from: items, count: b)
            items.update(from: items + b, count: count - b)
            count -= b
            transfers += 1
        }

        /// Buffers currently held by this cache.
        public var cachedCount: Int { count }
    }
}
