// mailbox-pingpong and mailbox-stream (specified in
// docs/BenchmarkWorkloads.md).
//
// Implementations: `mailbox` (the project's MailboxMesh: per-pair SPSC rings
// with doorbells; receivers spin briefly, then park on the doorbell),
// `dispatch` (serial DispatchQueues), `actor` (Swift actors on the global
// concurrent executor), `asyncstream` (AsyncStream) and `mutex_cond`
// (pthread mutex + condition variable around a 1024-slot ring, signalling
// only when the peer waits, as the C peer harness does).
//
// Files: this one (the workloads and their result lines), MailboxLoops.swift
// (the round-trip samples and the loops several implementations share),
// then one file per implementation: MeshMailbox.swift (the project's),
// DispatchMailbox.swift, ActorMailbox.swift, AsyncStreamMailbox.swift,
// MutexCondMailbox.swift.

/// Each implementation's two runners, in the order the workloads list them.
private let mailboxImpls: [(name: String, pingpong: Workload.Run, stream: Workload.Run)] = [
    ("mailbox", pingpongMailbox, streamMailbox),
    ("dispatch", pingpongDispatch, streamDispatch),
    ("actor", pingpongActor, streamActor),
    ("asyncstream", pingpongAsyncStream, streamAsyncStream),
    ("mutex_cond", pingpongMutexCond, streamMutexCond),
]

let mailboxWorkloads: [Workload] = [
    Workload(
        name: "mailbox-pingpong",
        summary: "thread A (CPU 0) sends a word to B (CPU 1), B replies; median and p99 round trip over N = 1,000,000",
        impls: mailboxImpls.map { ($0.name, $0.pingpong) }),
    Workload(
        name: "mailbox-stream",
        summary: "sender (CPU 0) posts N = 20,000,000 words to a receiver (CPU 1) that checks order and count",
        impls: mailboxImpls.map { ($0.name, $0.stream) }),
]

/// Round trips per mailbox-pingpong run when `--n` does not say.
let pingpongDefaultRoundTrips = 1_000_000
/// Untimed round trips before the timed ones.
let pingpongWarmup = 10_000
/// Messages per mailbox-stream run when `--n` does not say.
let streamDefaultMessages = 20_000_000

/// A mailbox-pingpong result line: `ns_per_op` is the median round trip.
func pingpongResult(impl: String, samples: RTTSamples, planned: Int, seconds: Double,
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

/// A mailbox-stream result line.
func streamResult(impl: String, received: Int, planned: Int, seconds: Double, errors: Int,
                  note: String, extra: [(String, JSONValue)] = []) -> BenchResult {
    let complete = received == planned
    var notes = [note]
    if !complete { notes.append("capped after \(received) of \(planned) messages") }
    return .throughput(workload: "mailbox-stream", impl: impl, ops: received, seconds: seconds,
                       checked: errors == 0 && received > 0, note: notes.joined(separator: "; "),
                       extra: extra + [("complete", .bool(complete))])
}
