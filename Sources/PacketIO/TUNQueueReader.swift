import CPacketIO
import FastDemux
import Glibc
import SMPPrimitives
import Synchronization

/// Reads every queue of a ``TUNDevice`` on its own core: queue k is read by
/// a poller on core executor k, into `PacketPool` buffers, a batch at a
/// time, and written on the same core.
///
/// For each queue k, the reader registers a poller on executor k
/// (`CoreExecutor.addPoller(_:)`). Each loop pass it reads up to
/// ``batchSize`` packets (one `read(2)` each, until `EAGAIN`: a TUN
/// descriptor gives one packet per read, see <doc:TUN>) into buffers from a
/// `PacketPool.Cache` that core k owns, and hands them to the input
/// callback as one `UnsafeBufferPointer<PacketRef>`. No allocation and no
/// reference counting per packet.
///
/// Idle queues cost no system calls. One waker thread sleeps in
/// `epoll_wait` on every queue, each registered one-shot: when a queue
/// becomes readable it calls `CoreExecutor.wake()` on that queue's
/// executor and the registration disarms itself. The poller reads until
/// the queue is empty, then re-arms the registration (one `epoll_ctl`) and
/// reads nothing more until it fires again. So a busy queue costs no epoll
/// work at all, an idle one a load per loop pass and one wake-up per
/// idle-to-busy transition, and an executor may use a long
/// `Configuration.pollerParkTimeout` (its idle loop then sleeps): input
/// ends the park at once. docs/TUN.md has the idle CPU measured.
///
/// Counters per queue (``Statistics``): packets read and written, batches,
/// wake-ups, and packets the stack found on a core that does not own their
/// flow (the stack counts those with ``noteMisplaced(_:queue:)``; who owns
/// a flow is the stack's rule, not the reader's).
///
/// The group's executors hold the reader (through its pollers) until the
/// group shuts down.
///
/// Concurrency contract:
/// - the input callback for queue k runs on executor k only, one batch at
///   a time; it receives ownership of the packets and must free them
///   (``free(_:queue:)``, ``write(_:queue:)``) or hand them on. The buffer
///   pointer is valid only during the call.
/// - ``write(_:queue:)``, ``free(_:queue:)`` and
///   ``noteMisplaced(_:queue:)`` for queue k are called on executor k only
///   (they use core k's pool cache and single-writer counters; checked by a
///   precondition).
/// - ``statistics(queue:)`` from any thread (relaxed loads: a recent
///   value, not a snapshot of all counters at one instant).
/// - ``stop()`` once, from a thread that is not one of the group's
///   executors, before the group shuts down; after it returns no poller
///   touches the device again, so the device may be closed.
public final class TUNQueueReader: Sendable {
    /// The input: the reader (to free or write packets with), the queue
    /// index and the packets read from it (ownership passes to the callee).
    /// Runs on the queue's executor.
    public typealias Input = @Sendable (_ reader: TUNQueueReader, _ queue: Int,
                                        _ packets: UnsafeBufferPointer<PacketRef>) -> Void

    /// One queue's counters (see the type's documentation).
    public struct Statistics: Sendable, Equatable {
        /// Packets read from the queue and handed to the input.
        public var packetsRead = 0
        /// Input batches (calls of the input callback).
        public var batches = 0
        /// Packets written on the queue by ``TUNQueueReader/write(_:queue:)``.
        public var packetsWritten = 0
        /// Writes the kernel refused (the packets were freed anyway).
        public var writeErrors = 0
        /// Reads that failed with an error other than `EAGAIN`.
        public var readErrors = 0
        /// Passes that stopped early because the pool had no free buffer.
        public var poolExhausted = 0
        /// Packets that filled their whole buffer (possibly truncated:
        /// keep the interface MTU below the pool's buffer size).
        public var possiblyTruncated = 0
        /// Wake-ups by the waker thread (idle-to-busy transitions).
        public var wakeups = 0
        /// Packets the stack reported as arrived on a core that does not
        /// own their flow (``TUNQueueReader/noteMisplaced(_:queue:)``).
        public var misplaced = 0
        /// System calls the writes took: one `io_uring_enter` per batch of
        /// up to ``TUNQueueReader/batchSize`` packets, or one `write(2)` per
        /// packet without io_uring.
        public var writeSystemCalls = 0
    }

    /// The device read (the reader does not close it).
    public let device: TUNDevice
    /// The pool the packet buffers come from.
    public let pool: PacketPool
    /// The most packets one poller pass reads (and one input call gets).
    public let batchSize: Int
    private let group: CoreExecutorGroup
    private let cores: [TUNQueueCore]
    private let epollFD: Int32
    private let stopFlag = TUNStopFlag()
    /// The waker thread until it is joined, guarded by `wakerLock` (a
    /// pthread mutex, whose hand-offs the thread sanitizer sees).
    private nonisolated(unsafe) var waker: PinnedThread<Void>?
    private let wakerLock = PthreadMutex()

    /// Starts reading every queue of `device`: queue k on executor k of
    /// `executors`. Any thread that is not one of the executors; costs one
    /// epoll descriptor, one thread (the waker) and, per queue, a pool
    /// cache and a `batchSize`-slot array.
    ///
    /// - Parameters:
    ///   - device: an open device with at most `executors.executors.count`
    ///     queues.
    ///   - executors: the group whose executor k reads queue k.
    ///   - pool: where the buffers come from; its buffer size bounds the
    ///     packet size (a packet that fills a buffer is counted as possibly
    ///     truncated).
    ///   - batchSize: the most packets per input call.
    ///   - input: called on executor k with each batch read from queue k.
    /// - Throws: ``TUNError`` if the epoll set cannot be made.
    public init(device: TUNDevice, executors: CoreExecutorGroup, pool: PacketPool, batchSize: Int = 64,
                input: @escaping Input) throws(TUNError) {
        precondition(batchSize >= 1)
        precondition(device.queues.count <= executors.executors.count,
                     "\(device.queues.count) queues but only \(executors.executors.count) executors")
        let ep = smp_epoll_create()
        guard ep >= 0 else { throw TUNError(operation: "epoll_create1", code: errno) }
        self.device = device
        self.pool = pool
        self.batchSize = batchSize
        self.group = executors
        self.epollFD = ep
        self.cores = device.queues.map {
            TUNQueueCore(queue: $0, executor: executors.executors[$0.index], pool: pool, batchSize: batchSize, epollFD: ep)
        }
        for c in cores where smp_epoll_add_oneshot(ep, c.queue.fileDescriptor, UInt32(c.queue.index)) != 0 {
            let e = errno
            _ = Glibc.close(ep)
            throw TUNError(operation: "epoll_ctl \(device.name) queue \(c.queue.index)", code: e)
        }
        let cores = self.cores
        let stopFlag = self.stopFlag
        let thread = PinnedThread(name: "tun-waker") { runWaker(epollFD: ep, cores: cores, stopFlag: stopFlag) }
        wakerLock.withLock { waker = thread }
        for c in cores {
            // The poller holds the reader (the input gets it): the executor
            // keeps both until its group shuts down.
            c.executor.addPoller { [self, c] in
                // Relaxed: stop() stores the flag before its synchronous
                // call on this executor; every later pass is sequenced
                // after that call's job, which happens after the store.
                if stopFlag.stopped.load(ordering: .relaxed) { return 0 }
                return c.poll { input(self, $0, $1) }
            }
        }
    }

    /// Writes `packets` on queue `queue`, in their order, and frees their
    /// buffers to that core's cache, written or not. Executor `queue` only
    /// (the core that owns the packets' flows, so that the kernel steers
    /// their replies back to this queue). No allocation.
    ///
    /// Each chunk of up to ``batchSize`` packets is one io_uring submission
    /// that waits for its completions (one `io_uring_enter`): on this
    /// machine that cost 0.78× the CPU per packet of a `write(2)` each (see
    /// docs/TUN.md). Where io_uring is unavailable (``usesIOURing`` false)
    /// each packet is one `write(2)`. The queue is non-blocking, so io_uring
    /// issues the writes in submission order and a full queue fails a write
    /// rather than deferring it.
    /// - Returns: how many the kernel accepted (the rest are counted in
    ///   ``Statistics/writeErrors``).
    @discardableResult
    public func write(_ packets: UnsafeBufferPointer<PacketRef>, queue: Int) -> Int {
        let c = cores[queue]
        precondition(c.executor.isCurrent, "TUNQueueReader.write(_:queue: \(queue)) off executor \(queue)")
        return c.write(packets)
    }

    /// Writes `frames` on queue `queue`, in their order: each frame is a
    /// virtio-net header (``TUNDevice/virtioHeaderLength`` bytes, e.g. from
    /// ``TUNDevice/writeTCPSegmentationHeader(into:ipHeaderLength:tcpHeaderLength:segmentSize:ipv6:)``)
    /// followed by the packet, up to 64 KiB: a TCP super-segment the kernel
    /// cuts into MSS-sized segments (tcp_gso_segment) as it forwards or
    /// delivers it. The device must have been opened with `virtioHeader`.
    /// Executor `queue` only; the caller keeps the memory (written when
    /// this returns). One io_uring submission per ``batchSize`` frames.
    /// - Returns: how many the kernel accepted (the rest are counted in
    ///   ``Statistics/writeErrors``).
    @discardableResult
    public func writeFramed(_ frames: UnsafeBufferPointer<UnsafeRawBufferPointer>, queue: Int) -> Int {
        let c = cores[queue]
        precondition(c.executor.isCurrent, "TUNQueueReader.writeFramed(_:queue: \(queue)) off executor \(queue)")
        precondition(c.queue.virtioHeaderSize > 0, "TUNQueueReader.writeFramed on a device without virtio header")
        return c.writeFramed(frames)
    }

    /// Frees `packets` (buffers of this reader's pool) to queue `queue`'s
    /// core cache. Executor `queue` only; no lock in the steady state.
    public func free(_ packets: UnsafeBufferPointer<PacketRef>, queue: Int) {
        let c = cores[queue]
        precondition(c.executor.isCurrent, "TUNQueueReader.free(_:queue: \(queue)) off executor \(queue)")
        for p in packets { c.cache.free(p) }
    }

    /// Free buffers held by queue `queue`'s pool cache (they are free, but
    /// not on the pool's global stack: a buffer-leak check subtracts
    /// them). Executor `queue` only (the cache's owner); one load.
    public func cachedBufferCount(queue: Int) -> Int {
        let c = cores[queue]
        precondition(c.executor.isCurrent, "TUNQueueReader.cachedBufferCount(queue: \(queue)) off executor \(queue)")
        return c.cache.cachedCount
    }

    /// Counts `count` packets that arrived on queue `queue` although
    /// another core owns their flow (the stack's judgement). Executor
    /// `queue` only; one relaxed load and store.
    public func noteMisplaced(_ count: Int, queue: Int) {
        let c = cores[queue]
        precondition(c.executor.isCurrent, "TUNQueueReader.noteMisplaced(_:queue: \(queue)) off executor \(queue)")
        c.misplaced.store(c.misplaced.load(ordering: .relaxed) &+ count, ordering: .relaxed)
    }

    /// True if writes go through io_uring (false where the kernel or a
    /// seccomp filter refuses it). Any thread.
    public var usesIOURing: Bool { cores.allSatisfy { $0.ring != nil } }

    /// Queue `queue`'s counters. Any thread.
    public func statistics(queue: Int) -> Statistics {
        cores[queue].statistics
    }

    /// Stops reading: ends the waker thread and waits until no poller is
    /// inside a read (one synchronous call on each queue's executor).
    /// Afterwards the pollers stay registered but return at once, and the
    /// device may be closed. Once, from a thread that is not one of the
    /// executors, before the group shuts down. Idempotent. (A reader never
    /// stopped stops reading when its group shuts down and ends its waker
    /// when the group releases it.)
    public func stop() {
        guard !stopFlag.stopped.exchange(true, ordering: .relaxed) else { return }
        joinWaker()
        // Each call's job runs on executor k after the store above (the
        // job queue's lock orders them), and every poller pass after the
        // job sees the flag: when the call returns, no pass is inside a
        // read and none will start one.
        for c in cores { group.call(on: c.queue.index) {} }
        _ = Glibc.close(epollFD)
    }

    /// Joins the waker thread, which sees the stop flag within one 100 ms
    /// `epoll_wait`.
    private func joinWaker() {
        let t = wakerLock.withLock { () -> PinnedThread<Void>? in
            defer { waker = nil }
            return waker
        }
        t?.join()
    }

    // Reached only once the pollers are gone (each holds the reader), i.e.
    // after the group shut down: nothing reads any more, so a reader never
    // stopped only has its waker and epoll set left to end.
    deinit {
        guard !stopFlag.stopped.exchange(true, ordering: .relaxed) else { return }
        joinWaker()
        _ = Glibc.close(epollFD)
    }
}

/// The waker thread: one-shot epoll over every queue; a readable queue's
/// executor is woken and its registration stays disarmed until the poller
/// re-arms it. Ends within 100 ms of `stopped`.
private func runWaker(epollFD: Int32, cores: [TUNQueueCore], stopFlag: TUNStopFlag) {
    let tokens = UnsafeMutablePointer<UInt32>.allocate(capacity: 256)
    defer { tokens.deallocate() }
    while !stopFlag.stopped.load(ordering: .relaxed) {
        let n = smp_epoll_wait_tokens(epollFD, tokens, 256, 100)
        if n <= 0 { continue }   // timeout, EINTR
        for i in 0..<Int(n) {
            let c = cores[Int(tokens[i])]
            // Relaxed: wake()'s releasing store and the loop's acquiring
            // exchange (CoreExecutor.runPollers) order this store before
            // the next poller pass.
            c.fired.store(true, ordering: .relaxed)
            c.wakeups.store(c.wakeups.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            c.executor.wake()
        }
    }
}

/// The reader's stop request, shared with its waker thread and pollers
/// (which must not keep the reader itself alive).
final class TUNStopFlag: Sendable {
    let stopped = Atomic<Bool>(false)
}

/// One queue's state: owned by its executor's thread, except the atomics.
final class TUNQueueCore: @unchecked Sendable {
    // @unchecked Sendable: `cache` and `refs` are touched only on
    // `executor`'s thread (its poller, and the reader's write/free, which
    // check `isCurrent`); the counters are single-writer atomics (the
    // executor, or the waker for `wakeups`), read relaxed by anyone.
    let queue: TUNQueue
    let executor: CoreExecutor
    let pool: PacketPool
    let batchSize: Int
    let epollFD: Int32
    @exclusivity(unchecked) var cache: PacketPool.Cache
    let refs: UnsafeMutablePointer<PacketRef>
    /// Set by the waker when the one-shot registration fired (it is then
    /// disarmed until the poller re-arms it); cleared by the poller when it
    /// starts reading.
    let fired = Atomic<Bool>(false)
    /// Owner-only: the queue was empty and the registration is armed, so
    /// the poller does not read until `fired`. Starts true: the
    /// registration is armed when the reader starts (and fires at once if
    /// packets are already queued).
    @exclusivity(unchecked) var idle = true
    let packetsRead = Atomic<Int>(0)
    let batches = Atomic<Int>(0)
    let packetsWritten = Atomic<Int>(0)
    let writeErrors = Atomic<Int>(0)
    let readErrors = Atomic<Int>(0)
    let poolExhausted = Atomic<Int>(0)
    let possiblyTruncated = Atomic<Int>(0)
    let wakeups = Atomic<Int>(0)
    let misplaced = Atomic<Int>(0)
    let writeCalls = Atomic<Int>(0)
    /// The io_uring for batched writes, or nil where io_uring is
    /// unavailable (writes then take one `write(2)` each).
    let ring: OpaquePointer?
    let writeBuffers: UnsafeMutablePointer<UnsafeRawPointer?>
    let writeLengths: UnsafeMutablePointer<UInt32>
    let writeResults: UnsafeMutablePointer<Int32>

    init(queue: TUNQueue, executor: CoreExecutor, pool: PacketPool, batchSize: Int, epollFD: Int32) {
        self.queue = queue
        self.executor = executor
        self.pool = pool
        self.batchSize = batchSize
        self.epollFD = epollFD
        self.cache = PacketPool.Cache(pool: pool)
        self.refs = .allocate(capacity: batchSize)
        self.ring = smp_uring_create(UInt32(batchSize))
        self.writeBuffers = .allocate(capacity: batchSize)
        self.writeLengths = .allocate(capacity: batchSize)
        self.writeResults = .allocate(capacity: batchSize)
    }

    deinit {
        smp_uring_destroy(ring)
        refs.deallocate()
        writeBuffers.deallocate()
        writeLengths.deallocate()
        writeResults.deallocate()
    }

    /// One poller pass: up to `batchSize` reads, one input call.
    ///
    /// While `idle` (the queue was found empty and its one-shot epoll
    /// registration re-armed), a pass costs one relaxed load and no system
    /// call, until the waker reports the queue readable: NAPI's rule
    /// (Linux's napi_complete_done re-enables the interrupt only once the
    /// ring is empty), with the epoll registration as the interrupt.
    func poll(_ input: (_ queue: Int, _ packets: UnsafeBufferPointer<PacketRef>) -> Void) -> Int {
        if idle {
            // The waker stores `fired` before its wake(); this pass comes
            // after the loop consumed that wake with an acquiring exchange
            // (CoreExecutor.runPollers), so it sees the store. A pass that
            // misses it is followed by one that does (the wake stays
            // pending until consumed).
            if !fired.load(ordering: .relaxed) { return 0 }
            fired.store(false, ordering: .relaxed)
            idle = false
        }
        let fd = queue.fileDescriptor
        var n = 0
        var drained = false
        while n < batchSize {
            guard let ref = cache.allocate() else {
                bump(poolExhausted)
                break
            }
            let buffer = pool.buffer(ref)
            let r = readPacket(fd, queue.virtioHeaderSize, buffer)
            if r < 0 {
                cache.free(ref)
                let e = errno
                if e == EINTR { continue }
                // An error (say the interface went away) ends the pass
                // like an empty queue does, so a failing queue is retried
                // on epoll's report, not on every pass.
                if e != EAGAIN && e != EWOULDBLOCK { bump(readErrors) }
                drained = true
                break
            }
            if r == buffer.count { bump(possiblyTruncated) }
            pool.setLength(r, of: ref)
            refs[n] = ref
            n += 1
        }
        if n > 0 {
            packetsRead.store(packetsRead.load(ordering: .relaxed) &+ n, ordering: .relaxed)
            bump(batches)
            input(queue.index, UnsafeBufferPointer(start: refs, count: n))
        }
        if drained {
            // Empty: arm the one-shot registration again and stop reading
            // until it fires. EPOLL_CTL_MOD looks at the queue's readiness
            // itself, so a packet that arrived after the read above fires
            // it at once: nothing is left unread.
            idle = true
            _ = smp_epoll_rearm_oneshot(epollFD, fd, UInt32(queue.index))
        }
        return n
    }

    /// Writes `packets` in chunks of `batchSize`: one io_uring submission
    /// per chunk when the ring exists, else one `write(2)` per packet (each
    /// behind a zeroed virtio-net header on a device that has one). Every
    /// buffer is freed.
    func write(_ packets: UnsafeBufferPointer<PacketRef>) -> Int {
        let header = queue.virtioHeaderSize
        let written = writeChunks(count: packets.count, prefix: header) { i in
            let bytes = pool.bytes(packets[i])
            return (bytes.baseAddress, bytes.count)
        } done: { range in
            for i in range { cache.free(packets[i]) }
        }
        return written
    }

    /// Writes `frames` (each its own virtio-net header and packet) as they
    /// are, in chunks of `batchSize`; the caller keeps the memory.
    func writeFramed(_ frames: UnsafeBufferPointer<UnsafeRawBufferPointer>) -> Int {
        writeChunks(count: frames.count, prefix: 0) { i in (frames[i].baseAddress, frames[i].count) } done: { _ in }
    }

    /// The write loop of ``write(_:)`` and ``writeFramed(_:)``: items
    /// 0..<count, item i's bytes from `item`, `prefix` bytes of the zero
    /// header before each; `done` after each chunk. Counts writes, system
    /// calls and refusals.
    @inline(__always)
    private func writeChunks(count: Int, prefix: Int, item: (Int) -> (UnsafeRawPointer?, Int),
                             done: (Range<Int>) -> Void) -> Int {
        let fd = queue.fileDescriptor
        var written = 0
        var calls = 0
        var start = 0
        while start < count {
            let n = min(batchSize, count - start)
            if let ring {
                for i in 0..<n {
                    let (base, length) = item(start + i)
                    writeBuffers[i] = base
                    writeLengths[i] = UInt32(length)
                }
                let r = smp_uring_write_batch_prefixed(ring, fd, zeroVirtioHeader, UInt32(prefix), writeBuffers,
                                                       writeLengths, writeResults, UInt32(n))
                calls += max(Int(r), 1)
                for i in 0..<n where writeResults[i] == Int32(writeLengths[i]) + Int32(prefix) { written += 1 }
            } else {
                for i in 0..<n {
                    let (base, length) = item(start + i)
                    let bytes = UnsafeRawBufferPointer(start: base, count: length)
                    var r: Int
                    repeat {
                        r = writePacket(fd, prefix, bytes)
                        calls += 1
                    } while r < 0 && errno == EINTR
                    if r == length { written += 1 }
                }
            }
            done(start ..< start + n)
            start += n
        }
        packetsWritten.store(packetsWritten.load(ordering: .relaxed) &+ written, ordering: .relaxed)
        writeCalls.store(writeCalls.load(ordering: .relaxed) &+ calls, ordering: .relaxed)
        if written < count {
            writeErrors.store(writeErrors.load(ordering: .relaxed) &+ (count - written), ordering: .relaxed)
        }
        return written
    }

    /// Single-writer increment: relaxed load and store (no read-modify-write).
    private func bump(_ counter: borrowing Atomic<Int>) {
        counter.store(counter.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
    }

    var statistics: TUNQueueReader.Statistics {
        TUNQueueReader.Statistics(
            packetsRead: packetsRead.load(ordering: .relaxed), batches: batches.load(ordering: .relaxed),
            packetsWritten: packetsWritten.load(ordering: .relaxed), writeErrors: writeErrors.load(ordering: .relaxed),
            readErrors: readErrors.load(ordering: .relaxed), poolExhausted: poolExhausted.load(ordering: .relaxed),
            possiblyTruncated: possiblyTruncated.load(ordering: .relaxed), wakeups: wakeups.load(ordering: .relaxed),
            misplaced: misplaced.load(ordering: .relaxed), writeSystemCalls: writeCalls.load(ordering: .relaxed))
    }
}
