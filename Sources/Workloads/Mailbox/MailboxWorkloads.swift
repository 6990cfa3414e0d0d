// mailbox-pingpong and mailbox-stream (BENCHMARKS.md).
//
// Implementations: `mailbox` (the project's MailboxMesh: per-pair SPSC rings
// with doorbells; receivers spin briefly, then park on the doorbell),
// `dispatch` (serial DispatchQueues), `actor` (Swift actors on the global
// concurrent executor), `asyncstream` (AsyncStream) and `mutex_cond`
// (pthread mutex + condition variable around a 1024-slot ring, signalling
// only when the peer waits, as the C peer does).
import Dispatch
import Glibc
import SMPPrimitives
import Synchronization

let mailboxWorkloads: [Workload] = [
    Workload(
        name: "mailbox-pingpong",
        summary: "thread A (CPU 0) sends a word to B (CPU 1), B replies; median and p99 round trip over N = 1,000,000",
        impls: [
            ("mailbox", { pingpongMailbox($0) }),
            ("dispatch", { pingpongDispatch($0) }),
            ("actor", { pingpongActor($0) }),
            ("asyncstream", { pingpongAsyncStream($0) }),
            ("mutex_cond", { pingpongMutexCond($0) }),
        ]),
    Workload(
        name: "mailbox-stream",
        summary: "sender (CPU 0) posts N = 20,000,000 words to a receiver (CPU 1) that checks order and count",
        impls: [
            ("mailbox", { streamMailbox($0) }),
            ("dispatch", { streamDispatch($0) }),
            ("actor", { streamActor($0) }),
            ("asyncstream", { streamAsyncStream($0) }),
            ("mutex_cond", { streamMutexCond($0) }),
        ]),
]

private let pingpongWarmup = 10_000

// MARK: - shared helpers

/// Round-trip samples (nanoseconds), written by one thread.
final class RTTSamples: @unchecked Sendable {
    // @unchecked: written by the one measuring thread, read after it is
    // joined (or after the awaited task ended).
    let buffer: UnsafeMutablePointer<Int>
    let capacity: Int
    var count = 0
    init(capacity: Int) {
        self.capacity = capacity
        buffer = .allocate(capacity: Swift.max(capacity, 1))
    }
    deinit { buffer.deallocate() }
    @inline(__always) func record(_ ns: Int) {
        if count < capacity {
            buffer[count] = ns
            count += 1
        }
    }
    /// (median, p99) in nanoseconds.
    func percentiles() -> (Double, Double) {
        guard count > 0 else { return (0, 0) }
        var sorted = UnsafeMutableBufferPointer(start: buffer, count: count)
        sorted.sort()
        return (Double(sorted[count / 2]), Double(sorted[Swift.min(count - 1, count * 99 / 100)]))
    }
}

/// Runs async code from a synchronous workload runner and waits for it.
func blockingAwait<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let box = Mutex<T?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let v = await body()
        box.withLock { $0 = v }
        done.signal()
    }
    done.wait()
    return box.withLock { $0 }!
}

private func pingpongResult(impl: String, samples: RTTSamples, planned: Int, seconds: Double,
                            errors: Int, note: String) -> BenchResult {
    let (median, p99) = samples.percentiles()
    let complete = samples.count == planned
    var notes = [note]
    if !complete { notes.append("capped after \(samples.count) of \(planned) round trips") }
    return BenchResult(workload: "mailbox-pingpong", impl: impl, ops: samples.count, seconds: seconds,
                       nsPerOp: median, checked: errors == 0 && samples.count > 0,
                       note: notes.joined(separator: "; "),
                       extra: [("p99_ns", .double(p99)), ("complete", .bool(complete))])
}

private func streamResult(impl: String, received: Int, planned: Int, seconds: Double, errors: Int,
                          note: String, extra: [(String, JSONValue)] = []) -> BenchResult {
    let complete = received == planned
    var notes = [note]
    if !complete { notes.append("capped after \(received) of \(planned) messages") }
    return .throughput(workload: "mailbox-stream", impl: impl, ops: received, seconds: seconds,
                       checked: errors == 0 && received > 0, note: notes.joined(separator: "; "),
                       extra: extra + [("complete", .bool(complete))])
}

/// Cross-thread flags of one run.
private final class RunFlags: Sendable {
    let stop = Atomic<Bool>(false)
    let errors = Atomic<Int>(0)
    let count = Atomic<Int>(0)
    let seconds = Atomic<Int>(0)   // nanoseconds, stored once
}

// MARK: - mailbox (the project)

/// Polls for one message from `sender`; spins `spins` polls, then parks.
@inline(__always)
private func awaitMessage(_ mesh: MailboxMesh, from sender: Int, at me: Int,
                          buffer: UnsafeMutablePointer<MailboxMessage>, spins: Int) -> MailboxMessage {
    var tries = 0
    while true {
        if mesh.receive(from: sender, at: me, into: buffer, max: 1) == 1 { return buffer[0] }
        tries += 1
        if tries < spins {
            spinLoopHint()
        } else {
            tries = 0
            mesh.park(me)
        }
    }
}

private func pingpongMailbox(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? 1_000_000
    let mesh = MailboxMesh(cores: 2, capacity: 1024)
    let samples = RTTSamples(capacity: n)
    let flags = RunFlags()
    let cap = options.capSeconds
    let spins = 100_000
    let b = PinnedThread(cpu: 1, name: "pingpong-b") {
        let buf = UnsafeMutablePointer<MailboxMessage>.allocate(capacity: 1)
        defer { buf.deallocate() }
        while true {
            let m = awaitMessage(mesh, from: 0, at: 1, buffer: buf, spins: spins)
            while !mesh.trySend(m, from: 1, to: 0) { spinLoopHint() }
            if m.b == 1 { break }   // the last (or stop) message
        }
    }
    let a = PinnedThread(cpu: 0, name: "pingpong-a") {
        let buf = UnsafeMutablePointer<MailboxMessage>.allocate(capacity: 1)
        defer { buf.deallocate() }
        let total = pingpongWarmup + n
        let start = monotonicSeconds()
        var errors = 0
        var i = 0
        while i < total {
            let last = i == total - 1 || (i & 1023 == 0 && monotonicSeconds() - start > cap)
            let t0 = monotonicNanoseconds()
            while !mesh.trySend(MailboxMessage(UInt(i), last ? 1 : 0), from: 0, to: 1) { spinLoopHint() }
            let reply = awaitMessage(mesh, from: 1, at: 0, buffer: buf, spins: spins)
            let rtt = Int(monotonicNanoseconds() &- t0)
            if reply.a != UInt(i) { errors += 1 }
            if i >= pingpongWarmup { samples.record(rtt) }
            i += 1
            if last { break }
        }
        flags.errors.store(errors, ordering: .relaxed)
        flags.seconds.store(Int((monotonicSeconds() - start) * 1e9), ordering: .relaxed)
    }
    a.join()
    b.join()
    let s = mesh.totalStatistics
    var note = "MailboxMesh 1024-slot SPSC ring per direction, trySend + doorbell (compiler barrier + load); receivers poll (spin 100k) then park; \(pingpongWarmup) warm-up round trips not timed; clock_gettime per round trip"
    note += "; doorbells rung \(s.doorbellsRung), avoided \(s.doorbellsAvoided)"
    if let pin = pinningNote(requiredCPUs: 2) { note += "; " + pin }
    return pingpongResult(impl: "mailbox", samples: samples, planned: n,
                          seconds: Double(flags.seconds.load(ordering: .relaxed)) / 1e9,
                          errors: flags.errors.load(ordering: .relaxed), note: note)
}

private func streamMailbox(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? 20_000_000
    let mesh = MailboxMesh(cores: 2, capacity: 1024)
    let flags = RunFlags()
    let barrier = SpinBarrier(parties: 2)
    let cap = options.capSeconds
    let batches = Atomic<Int>(0)
    let receiver = PinnedThread(cpu: 1, name: "stream-recv") {
        let buf = UnsafeMutablePointer<MailboxMessage>.allocate(capacity: 256)
        defer { buf.deallocate() }
        var expected: UInt = 1
        var errors = 0
        var got = 0
        var nbatches = 0
        var idle = 0
        barrier.wait()
        let start = monotonicSeconds()
        while got < n {
            let k = mesh.receive(from: 0, at: 1, into: buf, max: 256)
            if k == 0 {
                if flags.stop.load(ordering: .acquiring) && !mesh.hasIncoming(at: 1) { break }
                idle += 1
                if idle < 10_000 {
                    // Back off before polling again: each poll of an empty
                    // ring pulls the slot line the sender is writing; letting
                    // a batch accumulate moves lines once per several messages.
                    for _ in 0..<32 { spinLoopHint() }
                } else {
                    idle = 0
                    mesh.park(1, timeout: .milliseconds(1))
                }
                continue
            }
            idle = 0
            nbatches += 1
            for j in 0..<k {
                if buf[j].a != expected { errors += 1 }
                expected = buf[j].a &+ 1
            }
            got += k
        }
        flags.seconds.store(Int((monotonicSeconds() - start) * 1e9), ordering: .relaxed)
        flags.errors.store(errors, ordering: .relaxed)
        flags.count.store(got, ordering: .relaxed)
        batches.store(nbatches, ordering: .relaxed)
    }
    let sender = PinnedThread(cpu: 0, name: "stream-send") {
        barrier.wait()
        let start = monotonicSeconds()
        var i = 1
        while i <= n {
            if !mesh.trySend(MailboxMessage(UInt(i)), from: 0, to: 1) {
                spinLoopHint()
                if i & 1023 == 0 && monotonicSeconds() - start > cap { break }
                continue
            }
            if i & 65535 == 0 && monotonicSeconds() - start > cap { i += 1; break }
            i += 1
        }
        flags.stop.store(true, ordering: .releasing)
        mesh.doorbell(of: 1).ring()
    }
    sender.join()
    receiver.join()
    let got = flags.count.load(ordering: .relaxed)
    let s = mesh.totalStatistics
    let nb = batches.load(ordering: .relaxed)
    var note = "MailboxMesh 1024-slot SPSC ring, one trySend (slot copy, release store, doorbell check = compiler barrier + load) per message; receiver copies batches of up to 256, releases its position once per batch, and backs off 32 pauses after an empty poll"
    if let pin = pinningNote(requiredCPUs: 2) { note += "; " + pin }
    return streamResult(impl: "mailbox", received: got, planned: n,
                        seconds: Double(flags.seconds.load(ordering: .relaxed)) / 1e9,
                        errors: flags.errors.load(ordering: .relaxed), note: note,
                        extra: [("avg_batch", .double(nb > 0 ? Double(got) / Double(nb) : 0)),
                                ("full_events", .int(s.fullEvents)),
                                ("doorbells_rung", .int(s.doorbellsRung)),
                                ("high_water", .int(s.highWater))])
}

// MARK: - dispatch

private final class DispatchPingState: @unchecked Sendable {
    // @unchecked: touched only from blocks on the two serial queues, which
    // run one at a time in a causal chain (each hop enqueues the next).
    var i = 0
    var t0 = 0
    var errors = 0
    var start = 0.0
}

private func pingpongDispatch(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? 1_000_000
    let qa = DispatchQueue(label: "pingpong.a")
    let qb = DispatchQueue(label: "pingpong.b")
    let samples = RTTSamples(capacity: n)
    let st = DispatchPingState()
    let done = DispatchSemaphore(value: 0)
    let total = pingpongWarmup + n
    let cap = options.capSeconds
    @Sendable func round() {
        let value = st.i
        st.t0 = monotonicNanoseconds()
        qb.async {
            let echoed = value
            qa.async {
                let rtt = Int(monotonicNanoseconds() &- st.t0)
                if echoed != st.i { st.errors += 1 }
                if st.i >= pingpongWarmup { samples.record(rtt) }
                st.i += 1
                if st.i < total && !(st.i & 1023 == 0 && monotonicSeconds() - st.start > cap) {
                    round()
                } else {
                    done.signal()
                }
            }
        }
    }
    st.start = monotonicSeconds()
    qa.async { round() }
    done.wait()
    let secs = monotonicSeconds() - st.start
    return pingpongResult(impl: "dispatch", samples: samples, planned: n, seconds: secs, errors: st.errors,
                          note: "two serial DispatchQueues (unpinned: libdispatch threads); A's block async-dispatches to B's queue, B's block back to A's; \(pingpongWarmup) warm-up round trips")
}

private func streamDispatch(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? 20_000_000
    let q = DispatchQueue(label: "stream.recv")
    let flags = RunFlags()
    let state = DispatchPingState()   // state.i = expected, errors
    state.i = 1
    let done = DispatchSemaphore(value: 0)
    let cap = options.capSeconds
    let sender = PinnedThread(cpu: 0, name: "stream-send") {
        let start = monotonicSeconds()
        var sent = 0
        for i in 1...n {
            q.async {
                if i != state.i { state.errors += 1 }
                state.i = i + 1
            }
            sent = i
            // Backpressure: at most ~1M blocks in flight (memory).
            if i & 4095 == 0 {
                while i - state_i_snapshot(q, state) > 1_000_000 { usleep(100) }
                if monotonicSeconds() - start > cap { break }
            }
        }
        q.async { done.signal() }
        flags.count.store(sent, ordering: .relaxed)
    }
    let start = monotonicSeconds()
    sender.join()
    done.wait()
    let secs = monotonicSeconds() - start
    let sent = flags.count.load(ordering: .relaxed)
    let received = state.i - 1
    return streamResult(impl: "dispatch", received: received, planned: n, seconds: secs,
                        errors: state.errors + (received == sent ? 0 : 1),
                        note: "sender thread (CPU 0) does queue.async { check } per message on one serial DispatchQueue (one closure allocation per message); at most ~1M blocks in flight")
}

/// Reads the receiver's progress through the queue (a sync hop) — used only
/// every 4096 messages for backpressure.
private func state_i_snapshot(_ q: DispatchQueue, _ s: DispatchPingState) -> Int {
    q.sync { s.i }
}

// MARK: - actor

private actor EchoActor {
    func ping(_ v: Int) -> Int { v }
}

private actor StreamReceiverActor {
    var expected = 1
    var errors = 0
    func receive(_ v: Int) {
        if v != expected { errors += 1 }
        expected = v + 1
    }
    func result() -> (Int, Int) { (expected - 1, errors) }
}

private func pingpongActor(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? 1_000_000
    let samples = RTTSamples(capacity: n)
    let cap = options.capSeconds
    let (secs, errors) = blockingAwait { () async -> (Double, Int) in
        let echo = EchoActor()
        var errors = 0
        let start = monotonicSeconds()
        for i in 0..<(pingpongWarmup + n) {
            let t0 = monotonicNanoseconds()
            let r = await echo.ping(i)
            let rtt = Int(monotonicNanoseconds() &- t0)
            if r != i { errors += 1 }
            if i >= pingpongWarmup { samples.record(rtt) }
            if i & 1023 == 0 && monotonicSeconds() - start > cap { break }
        }
        return (monotonicSeconds() - start, errors)
    }
    return pingpongResult(impl: "actor", samples: samples, planned: n, seconds: secs, errors: errors,
                          note: "a task awaits echo.ping(i) on an actor; both on Swift's global concurrent executor (unpinned; the hop may stay on one thread); \(pingpongWarmup) warm-up round trips")
}

private func streamActor(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? 20_000_000
    let cap = options.capSeconds
    let (secs, received, errors) = blockingAwait { () async -> (Double, Int, Int) in
        let recv = StreamReceiverActor()
        let start = monotonicSeconds()
        for i in 1...n {
            await recv.receive(i)
            if i & 65535 == 0 && monotonicSeconds() - start > cap { break }
        }
        let (got, errors) = await recv.result()
        return (monotonicSeconds() - start, got, errors)
    }
    return streamResult(impl: "actor", received: received, planned: n, seconds: secs, errors: errors,
                        note: "a sender task awaits receiver.receive(i) per message on an actor (global concurrent executor, unpinned)")
}

// MARK: - AsyncStream

private func pingpongAsyncStream(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? 1_000_000
    let samples = RTTSamples(capacity: n)
    let cap = options.capSeconds
    let (secs, errors) = blockingAwait { () async -> (Double, Int) in
        let (toB, toBCont) = AsyncStream<Int>.makeStream()
        let (toA, toACont) = AsyncStream<Int>.makeStream()
        let echo = Task {
            for await v in toB { toACont.yield(v) }
            toACont.finish()
        }
        var it = toA.makeAsyncIterator()
        var errors = 0
        let start = monotonicSeconds()
        for i in 0..<(pingpongWarmup + n) {
            let t0 = monotonicNanoseconds()
            toBCont.yield(i)
            let r = await it.next()
            let rtt = Int(monotonicNanoseconds() &- t0)
            if r != i { errors += 1 }
            if i >= pingpongWarmup { samples.record(rtt) }
            if i & 1023 == 0 && monotonicSeconds() - start > cap { break }
        }
        let secs = monotonicSeconds() - start
        toBCont.finish()
        await echo.value
        return (secs, errors)
    }
    return pingpongResult(impl: "asyncstream", samples: samples, planned: n, seconds: secs, errors: errors,
                          note: "two AsyncStreams; an echo task forwards B's stream to A's; unpinned tasks; \(pingpongWarmup) warm-up round trips")
}

private func streamAsyncStream(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? 20_000_000
    let cap = options.capSeconds
    let flags = RunFlags()
    let (stream, cont) = AsyncStream<Int>.makeStream()
    let start = monotonicSeconds()
    let sender = PinnedThread(cpu: 0, name: "stream-send") {
        var sent = 0
        for i in 1...n {
            cont.yield(i)
            sent = i
            if i & 4095 == 0 {
                // Backpressure (AsyncStream has none): at most ~1M in flight.
                while i - flags.count.load(ordering: .relaxed) > 1_000_000 { usleep(100) }
                if monotonicSeconds() - start > cap { break }
            }
        }
        cont.finish()
        _ = sent
    }
    let (received, errors) = blockingAwait { () async -> (Int, Int) in
        var expected = 1
        var errors = 0
        for await v in stream {
            if v != expected { errors += 1 }
            expected = v + 1
            if v & 4095 == 0 { flags.count.store(v, ordering: .relaxed) }
        }
        return (expected - 1, errors)
    }
    let secs = monotonicSeconds() - start
    sender.join()
    return streamResult(impl: "asyncstream", received: received, planned: n, seconds: secs, errors: errors,
                        note: "sender thread (CPU 0) yields into an unbounded AsyncStream (throttled to ~1M in flight); one consumer task iterates")
}

// MARK: - mutex + condition variable

/// A pthread mutex + condition variable (CLOCK_MONOTONIC for timed waits):
/// the classic monitor the doorbell is compared with.
final class PThreadMonitor: Sendable {
    let mutex = PthreadMutex()
    let condition = PthreadCondition()
    func lock() { mutex.lock() }
    func unlock() { mutex.unlock() }
    func wait() { condition.wait(mutex) }
    /// Waits until the monotonic time `deadline` (nanoseconds) at the latest.
    func wait(untilNanoseconds deadline: Int) {
        condition.wait(mutex, untilMonotonicNanoseconds: deadline)
    }
    func signal() { condition.signal() }
}

/// A 1024-slot ring under a PThreadMonitor; signals only a waiting peer.
private final class CondMailbox: @unchecked Sendable {
    // @unchecked: every field is accessed with `monitor` locked.
    let monitor = PThreadMonitor()
    var ring = [Int](repeating: 0, count: 1024)
    var head = 0
    var tail = 0
    var consumerWaiting = false
    var producerWaiting = false

    func put(_ v: Int) {
        monitor.lock()
        while tail - head == ring.count {
            producerWaiting = true
            monitor.wait()
        }
        producerWaiting = false
        ring[tail & 1023] = v
        tail += 1
        if consumerWaiting { monitor.signal() }
        monitor.unlock()
    }

    /// Takes everything queued (waiting while empty).
    func takeAll(_ body: (Int) -> Void) {
        monitor.lock()
        while tail == head {
            consumerWaiting = true
            monitor.wait()
        }
        consumerWaiting = false
        while head < tail {
            body(ring[head & 1023])
            head += 1
        }
        if producerWaiting { monitor.signal() }
        monitor.unlock()
    }
}

private func pingpongMutexCond(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? 1_000_000
    let toB = CondMailbox()
    let toA = CondMailbox()
    let samples = RTTSamples(capacity: n)
    let flags = RunFlags()
    let cap = options.capSeconds
    let b = PinnedThread(cpu: 1, name: "pingpong-b") {
        var stop = false
        while !stop {
            toB.takeAll { v in
                if v < 0 { stop = true }
                toA.put(v)
            }
        }
    }
    let a = PinnedThread(cpu: 0, name: "pingpong-a") {
        let start = monotonicSeconds()
        var errors = 0
        for i in 0..<(pingpongWarmup + n) {
            let t0 = monotonicNanoseconds()
            toB.put(i)
            var r = -2
            toA.takeAll { r = $0 }
            let rtt = Int(monotonicNanoseconds() &- t0)
            if r != i { errors += 1 }
            if i >= pingpongWarmup { samples.record(rtt) }
            if i & 1023 == 0 && monotonicSeconds() - start > cap { break }
        }
        flags.seconds.store(Int((monotonicSeconds() - start) * 1e9), ordering: .relaxed)
        toB.put(-1)
        toA.takeAll { _ in }
        flags.errors.store(errors, ordering: .relaxed)
    }
    a.join()
    b.join()
    var note = "pthread mutex + condvar + 1024-slot ring per direction, signal only when the peer waits; \(pingpongWarmup) warm-up round trips"
    if let pin = pinningNote(requiredCPUs: 2) { note += "; " + pin }
    return pingpongResult(impl: "mutex_cond", samples: samples, planned: n,
                          seconds: Double(flags.seconds.load(ordering: .relaxed)) / 1e9,
                          errors: flags.errors.load(ordering: .relaxed), note: note)
}

private func streamMutexCond(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? 20_000_000
    let box = CondMailbox()
    let flags = RunFlags()
    let barrier = SpinBarrier(parties: 2)
    let cap = options.capSeconds
    let receiver = PinnedThread(cpu: 1, name: "stream-recv") {
        var expected = 1
        var errors = 0
        var stop = false
        barrier.wait()
        let start = monotonicSeconds()
        while !stop {
            box.takeAll { v in
                if v < 0 { stop = true; return }
                if v != expected { errors += 1 }
                expected = v + 1
            }
        }
        flags.seconds.store(Int((monotonicSeconds() - start) * 1e9), ordering: .relaxed)
        flags.count.store(expected - 1, ordering: .relaxed)
        flags.errors.store(errors, ordering: .relaxed)
    }
    let sender = PinnedThread(cpu: 0, name: "stream-send") {
        barrier.wait()
        let start = monotonicSeconds()
        for i in 1...n {
            box.put(i)
            if i & 65535 == 0 && monotonicSeconds() - start > cap { break }
        }
        box.put(-1)
    }
    sender.join()
    receiver.join()
    var note = "pthread mutex + condvar + 1024-slot ring, signal only when the peer waits; the receiver takes everything queued"
    if let pin = pinningNote(requiredCPUs: 2) { note += "; " + pin }
    return streamResult(impl: "mutex_cond", received: flags.count.load(ordering: .relaxed), planned: n,
                        seconds: Double(flags.seconds.load(ordering: .relaxed)) / 1e9,
                        errors: flags.errors.load(ordering: .relaxed), note: note)
}
