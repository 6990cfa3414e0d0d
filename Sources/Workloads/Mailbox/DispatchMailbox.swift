// dispatch: the mailbox workloads on serial DispatchQueues.
import Dispatch
import SMPPrimitives

/// The ping-pong's state, carried from hop to hop.
private final class DispatchPingState: @unchecked Sendable {
    // @unchecked Sendable: touched only from blocks on the two serial
    // queues, which run one at a time in a causal chain (each hop enqueues
    // the next).
    var i = 0
    var t0 = 0
    var errors = 0
    var start = 0.0
}

func pingpongDispatch(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? pingpongDefaultRoundTrips
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
                let rtt = monotonicNanoseconds() &- st.t0
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

/// The stream receiver's state, owned by its serial queue.
private final class DispatchStreamState: @unchecked Sendable {
    // @unchecked Sendable: touched only from blocks on the one serial
    // queue (the sender reads it through `queue.sync`), and by the driver
    // after the queue's last block signalled.
    var order = StreamOrderCheck()
}

func streamDispatch(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? streamDefaultMessages
    let q = DispatchQueue(label: "stream.recv")
    let state = DispatchStreamState()
    let done = DispatchSemaphore(value: 0)
    let cap = options.capSeconds
    let sender = PinnedThread(cpu: 0, name: "stream-send") {
        // Backpressure: the receiver's progress read through the queue (a
        // sync hop), every 4,096 messages.
        let sent = sendThrottled(n: n, cap: cap, start: monotonicSeconds(),
                                 progress: { q.sync { state.order.expected } }) { i in
            q.async { state.order.check(i) }
        }
        q.async { done.signal() }
        return sent
    }
    let start = monotonicSeconds()
    let sent = sender.join()
    done.wait()
    let secs = monotonicSeconds() - start
    let received = state.order.last
    return streamResult(impl: "dispatch", received: received, planned: n, seconds: secs,
                        errors: state.order.errors + (received == sent ? 0 : 1),
                        note: "sender thread (CPU 0) does queue.async { check } per message on one serial DispatchQueue (one closure allocation per message); at most ~1M blocks in flight")
}
