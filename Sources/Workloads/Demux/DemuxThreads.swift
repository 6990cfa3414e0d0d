// The two threads of a demux run, as far as both implementations share
// them: the input thread's frame (barrier, passes, bursts, cap, the final
// publication) and the whole consumer loop.
import DemuxLab
import FastDemux
import SMPPrimitives

/// The input thread's frame: meets the consumer at the start barrier, runs
/// `burst(pass, base)` for frames `base..<base + demuxBurst` of every pass,
/// calls `periodic()` every 1,024 frames and stops at the cap (looked at
/// every 65,536 frames), then publishes `done` and wakes the consumer.
/// Returns the timings and the frame count; the caller adds its statistics.
@inline(__always)
func runDemuxInput(frames: Int, control: DemuxControl, readySet: SocketReadySet, capSeconds: Double,
                   periodic: () -> Void = {}, burst: (_ pass: Int, _ base: Int) -> Void) -> DemuxInputReport {
    let deadline = monotonicSeconds() + capSeconds
    control.barrier.wait()
    var r = DemuxInputReport()
    r.start = monotonicSeconds()
    let cpu0 = threadCPUSeconds()
    let switches = ThreadContextSwitches.now()
    passes: for pass in 0..<demuxPasses {
        for base in stride(from: 0, to: frames, by: demuxBurst) {
            burst(pass, base)
            r.packets &+= demuxBurst
            if base & 1023 == 0 {
                periodic()
                if base & 0xffff == 0 && monotonicSeconds() > deadline {
                    control.abort.store(true, ordering: .relaxed)
                    break passes
                }
            }
        }
    }
    r.end = monotonicSeconds()
    r.cpuSeconds = threadCPUSeconds() - cpu0
    r.contextSwitches = ThreadContextSwitches.since(switches)
    // Release: everything enqueued happens-before the consumer's final scan.
    control.done.store(true, ordering: .releasing)
    readySet.wakeReader()
    return r
}

/// The consumer loop (as the C peer harness's): scan the ready set, drain
/// every socket taken with `drain(slot, body)`, check truth and per-socket
/// order; after `demuxSpinScans` empty scans, park.
func demuxConsume(
    _ traffic: DemuxBenchmarkTraffic, control: DemuxControl, readySet: SocketReadySet,
    drain: (Int, (UInt) -> Void) -> Int
) -> DemuxConsumerReport {
    let n = traffic.socketCount
    var lastSeq = [Int](repeating: -1, count: n)
    var delivered = [Int](repeating: 0, count: n)
    var misdelivered = 0, orderErrors = 0, sleeps = 0, total = 0, queueOps = 0
    var batches = Log2Histogram()
    let frames = traffic.frameCount
    control.barrier.wait()
    let t0 = monotonicSeconds()
    let cpu0 = threadCPUSeconds()
    let switches = ThreadContextSwitches.now()
    lastSeq.withUnsafeMutableBufferPointer { last in
        delivered.withUnsafeMutableBufferPointer { del in
            sleeps = pollUntilFinished(spinning: demuxSpinScans, {
                let done = control.done.load(ordering: .acquiring)
                control.consumerCPU.noteCurrentCPU()
                var found = 0
                _ = readySet.takeReady { slot in
                    var last_ = last[slot]
                    queueOps &+= 1
                    let got = drain(slot) { word in
                        let (idx, pass) = DemuxBenchmarkTraffic.decode(word)
                        if idx >= frames || Int(traffic.truth[idx]) != slot { misdelivered &+= 1 }
                        let sq = pass * frames + idx
                        if last_ >= 0 && sq <= last_ { orderErrors &+= 1 }
                        last_ = sq
                    }
                    last[slot] = last_
                    del[slot] &+= got
                    batches.record(got)
                    found &+= got
                }
                if found > 0 {
                    total &+= found
                    return .progress
                }
                // `done` was read before this (empty) scan, so everything
                // enqueued before it has been taken.
                if done { return .finished }
                // Aborted: keep draining (without parking) until the input
                // thread is done.
                return control.abort.load(ordering: .relaxed) ? .progress : .idle
            }, park: {
                readySet.parkUntilReady(extraCheck: { control.done.load(ordering: .acquiring) })
            })
        }
    }
    let cpuSeconds = threadCPUSeconds() - cpu0
    return DemuxConsumerReport(start: t0, end: monotonicSeconds(), cpuSeconds: cpuSeconds,
                               delivered: delivered, deliveredTotal: total, misdelivered: misdelivered,
                               orderErrors: orderErrors, sleeps: sleeps, queueOps: queueOps, batches: batches,
                               contextSwitches: ThreadContextSwitches.since(switches))
}
