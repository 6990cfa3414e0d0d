// mutex_cond: the mailbox workloads on a pthread mutex and condition
// variable around a ring (the classic monitor the doorbell is compared with).
import SMPPrimitives

/// A 1024-slot ring under a pthread mutex; the condition variable is
/// signalled only when the peer waits, as the C peer harness does.
private final class CondMailbox: @unchecked Sendable {
    // @unchecked Sendable: every `var` is accessed with `mutex` locked.
    let mutex = PthreadMutex()
    let condition = PthreadCondition()
    var ring = [Int](repeating: 0, count: 1024)
    var head = 0
    var tail = 0
    var consumerWaiting = false
    var producerWaiting = false

    func put(_ v: Int) {
        mutex.lock()
        while tail - head == ring.count {
            producerWaiting = true
            condition.wait(mutex)
        }
        producerWaiting = false
        ring[tail & 1023] = v
        tail += 1
        if consumerWaiting { condition.signal() }
        mutex.unlock()
    }

    /// Takes everything queued (waiting while empty).
    func takeAll(_ body: (Int) -> Void) {
        mutex.lock()
        while tail == head {
            consumerWaiting = true
            condition.wait(mutex)
        }
        consumerWaiting = false
        while head < tail {
            body(ring[head & 1023])
            head += 1
        }
        if producerWaiting { condition.signal() }
        mutex.unlock()
    }
}

func pingpongMutexCond(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? pingpongDefaultRoundTrips
    let toB = CondMailbox()
    let toA = CondMailbox()
    let samples = RTTSamples(capacity: n)
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
        let result = measureRoundTrips(n: n, samples: samples, cap: cap) { i, _ in
            toB.put(i)
            var r = -2
            toA.takeAll { r = $0 }
            return r
        }
        // Stop B (it echoes the stop message too).
        toB.put(-1)
        toA.takeAll { _ in }
        return result
    }
    let (errors, seconds) = a.join()
    b.join()
    let note = "pthread mutex + condvar + 1024-slot ring per direction, signal only when the peer waits; \(pingpongWarmup) warm-up round trips"
    return pingpongResult(impl: "mutex_cond", samples: samples, planned: n, seconds: seconds,
                          errors: errors, note: pinnedNote(note))
}

func streamMutexCond(_ options: WorkloadOptions) -> BenchResult {
    let n = options.n ?? streamDefaultMessages
    let box = CondMailbox()
    let barrier = SpinBarrier(parties: 2)
    let cap = options.capSeconds
    let receiver = PinnedThread(cpu: 1, name: "stream-recv") {
        var order = StreamOrderCheck()
        var stop = false
        barrier.wait()
        let start = monotonicSeconds()
        while !stop {
            box.takeAll { v in
                if v < 0 { stop = true; return }
                order.check(v)
            }
        }
        return (received: order.last, errors: order.errors, seconds: monotonicSeconds() - start)
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
    let r = receiver.join()
    let note = "pthread mutex + condvar + 1024-slot ring, signal only when the peer waits; the receiver takes everything queued"
    return streamResult(impl: "mutex_cond", received: r.received, planned: n, seconds: r.seconds,
                        errors: r.errors, note: pinnedNote(note))
}
