// mailbox: the project's MailboxMesh under the mailbox workloads.
import DemuxLab
import SMPPrimitives
import Synchronization

/// Polls for one message from `sender`: spins `spins` polls, then parks on
/// the doorbell (and spins again when woken).
@inline(__always)
private func awaitMessage(_ mesh: MailboxMesh, from sender: Int, at me: Int,
                          buffer: UnsafeMutablePointer<MailboxMessage>, spins: Int) -> MailboxMessage {
    _ = pollUntilFinished(spinning: spins, {
        mesh.receive(from: sender, at: me, into: buffer, max: 1) == 1 ? .finished : .idle
    }, park: { mesh.park(me) })
    return buffer[0]
}

/// Sends `message`, spinning while the ring is full.
@inline(__always)
private func sendSpinning(_ message: MailboxMessage, _ mesh: MailboxMesh, from: Int, to: Int) {
    while !mesh.trySend(message, from: from, to: to) { spinLoopHint() }
}

func pingpongMailbox(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? pingpongDefaultRoundTrips
    let mesh = MailboxMesh(cores: 2, capacity: 1024)
    let samples = RTTSamples(capacity: n)
    let cap = options.capSeconds
    let spins = 100_000
    let b = PinnedThread(cpu: 1, name: "pingpong-b") {
        let buf = UnsafeMutablePointer<MailboxMessage>.allocate(capacity: 1)
        defer { buf.deallocate() }
        while true {
            let m = awaitMessage(mesh, from: 0, at: 1, buffer: buf, spins: spins)
            sendSpinning(m, mesh, from: 1, to: 0)
            if m.b == 1 { break }   // the last (or stop) message
        }
    }
    let a = PinnedThread(cpu: 0, name: "pingpong-a") {
        let buf = UnsafeMutablePointer<MailboxMessage>.allocate(capacity: 1)
        defer { buf.deallocate() }
        return measureRoundTrips(n: n, samples: samples, cap: cap) { i, last in
            sendSpinning(MailboxMessage(UInt(i), last ? 1 : 0), mesh, from: 0, to: 1)
            return Int(bitPattern: awaitMessage(mesh, from: 1, at: 0, buffer: buf, spins: spins).a)
        }
    }
    let (errors, seconds) = a.join()
    b.join()
    let s = mesh.totalStatistics
    var note = "MailboxMesh 1024-slot SPSC ring per direction, trySend + doorbell (compiler barrier + load); receivers poll (spin 100k) then park; \(pingpongWarmup) warm-up round trips not timed; clock_gettime per round trip"
    note += "; doorbells rung \(s.doorbellsRung), avoided \(s.doorbellsAvoided)"
    return pingpongResult(impl: "mailbox", samples: samples, planned: n, seconds: seconds,
                          errors: errors, note: pinnedNote(note))
}

/// PAUSEs the stream receiver waits after an empty poll: each poll of an
/// empty ring pulls the slot line the sender is writing; letting a batch
/// accumulate moves lines once per several messages.
private let streamEmptyBackoff = 32
/// Empty polls in a row after which the stream receiver parks (1 ms at most).
private let streamSpinPolls = 10_000

/// What the stream receiver hands back when it is joined.
private struct StreamReceiverOutcome: Sendable {
    var received = 0
    var errors = 0
    var batches = 0
    var seconds = 0.0
}

func streamMailbox(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? streamDefaultMessages
    let mesh = MailboxMesh(cores: 2, capacity: 1024)
    let senderDone = Atomic<Bool>(false)
    let barrier = SpinBarrier(parties: 2)
    let cap = options.capSeconds
    // @Sendable: both threads share the `senderDone` atomic.
    let receiver = PinnedThread(cpu: 1, name: "stream-recv") { @Sendable in
        let buf = UnsafeMutablePointer<MailboxMessage>.allocate(capacity: 256)
        defer { buf.deallocate() }
        var order = StreamOrderCheck()
        var outcome = StreamReceiverOutcome()
        barrier.wait()
        let start = monotonicSeconds()
        _ = pollUntilFinished(spinning: streamSpinPolls, {
            if outcome.received >= n { return .finished }
            let k = mesh.receive(from: 0, at: 1, into: buf, max: 256)
            if k == 0 {
                // Acquiring: pairs with the sender's releasing store, so
                // every message it sent is visible to hasIncoming.
                if senderDone.load(ordering: .acquiring) && !mesh.hasIncoming(at: 1) { return .finished }
                // pollUntilFinished adds the last pause of the back-off.
                for _ in 1..<streamEmptyBackoff { spinLoopHint() }
                return .idle
            }
            outcome.batches += 1
            for j in 0..<k { order.check(Int(bitPattern: buf[j].a)) }
            outcome.received += k
            return .progress
        }, park: { mesh.park(1, timeout: .milliseconds(1)) })
        outcome.seconds = monotonicSeconds() - start
        outcome.errors = order.errors
        return outcome
    }
    let sender = PinnedThread(cpu: 0, name: "stream-send") { @Sendable in
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
        senderDone.store(true, ordering: .releasing)
        mesh.doorbell(of: 1).ring()
    }
    sender.join()
    let r = receiver.join()
    let s = mesh.totalStatistics
    let note = "MailboxMesh 1024-slot SPSC ring, one trySend (slot copy, release store, doorbell check = compiler barrier + load) per message; receiver copies batches of up to 256, releases its position once per batch, and backs off 32 pauses after an empty poll"
    return streamResult(impl: "mailbox", received: r.received, planned: n, seconds: r.seconds,
                        errors: r.errors, note: pinnedNote(note),
                        extra: [("avg_batch", .double(r.batches > 0 ? Double(r.received) / Double(r.batches) : 0)),
                                ("full_events", .int(s.fullEvents)),
                                ("doorbells_rung", .int(s.doorbellsRung)),
                                ("high_water", .int(s.highWater))])
}
