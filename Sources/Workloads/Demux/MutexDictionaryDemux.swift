// mutex_dictionary: the demux workload's lock-based baseline.
import DemuxLab
import DequeModule
import FastDemux
import SMPPrimitives
import Synchronization

/// A socket queue of the baseline: a mutex around a deque, bounded at 256.
private final class MutexDequeSocket: Sendable {
    let queue = PthreadLocked<Deque<UInt>>(Deque(minimumCapacity: demuxQueueCapacity))
    let droppedFull = Atomic<Int>(0)
}

/// A value behind a ``PthreadMutex``: a futex lock of the same cost as
/// Synchronization.Mutex whose hand-offs the thread sanitizer sees (a
/// contended Mutex hands over inside the uninstrumented standard library,
/// and TSan would report false races on the tables and queues).
final class PthreadLocked<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is only touched while holding `mutex`.
    private let mutex = PthreadMutex()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    @inline(__always)
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        mutex.lock()
        defer { mutex.unlock() }
        return try body(&value)
    }
}

/// The baseline: the same pipeline with pthread-mutex-protected
/// dictionaries and a pthread-mutex-protected Deque per socket, no TCP
/// state.
func runMutexDictionary(_ traffic: DemuxBenchmarkTraffic, capSeconds: Double) -> DemuxRunReport {
    var exact: [FlowKey: Int] = [:]
    var boundTable: [FlowKey: Int] = [:]
    for (i, f) in traffic.flows.enumerated() { exact[f.key] = i }
    for (j, p) in traffic.listenPorts.enumerated() {
        boundTable[.bound(.tcp, local: .wildcard(.ipv4), port: p)] = traffic.flowCount + j
    }
    for (j, p) in traffic.wildcardPorts.enumerated() {
        boundTable[.bound(.udp, local: .wildcard(.ipv4), port: p)] =
            traffic.flowCount + DemuxBenchmarkTraffic.listenCount + j
    }
    let exactTable = PthreadLocked(exact)
    let bound = PthreadLocked(boundTable)
    let sockets = (0..<traffic.socketCount).map { _ in MutexDequeSocket() }
    let readySet = SocketReadySet(capacity: traffic.socketCount)
    let control = DemuxControl()
    let frames = traffic.frameCount
    // Only the consumer thread uses it (allocated once, freed after the join).
    nonisolated(unsafe) let drainBuffer = UnsafeMutablePointer<UInt>.allocate(capacity: demuxQueueCapacity)
    defer { drainBuffer.deallocate() }
    let setupMemory = ResidentMemory.now()

    let consumer = PinnedThread(cpu: 1, name: "demux-consumer") {
        demuxConsume(traffic, control: control, readySet: readySet,
                     drain: { slot, body in
                         // Move the items out under the lock into the
                         // consumer's own buffer, check them after it.
                         let buffer = drainBuffer
                         let k = sockets[slot].queue.withLock { q -> Int in
                             var k = 0
                             while let v = q.popFirst() {
                                 buffer[k] = v
                                 k += 1
                             }
                             return k
                         }
                         for i in 0..<k { body(buffer[i]) }
                         return k
                     })
    }
    let input = PinnedThread(cpu: 0, name: "demux-input") {
        let parser = PacketParser()
        var stats = DemuxStats()
        var touched = [Int](repeating: 0, count: demuxBurst)
        var handoffCPU = HandoffCPUClassifier()
        var report = runDemuxInput(frames: frames, control: control, readySet: readySet,
                                   capSeconds: capSeconds) { pass, base in
            var nt = 0
            handoffCPU.sample()   // once per burst
            for i in base..<(base + demuxBurst) {
                stats.offered &+= 1
                let word = DemuxBenchmarkTraffic.packetWord(frame: i, pass: pass)
                switch parser.parse(traffic.frame(i), linkType: .ethernet) {
                case .packet(let p):
                    let key = p.flow
                    stats.sync.lockAcquisitions &+= 1
                    var sock = exactTable.withLock { $0[key] }
                    if sock == nil {
                        stats.sync.lockAcquisitions &+= 2
                        sock = bound.withLock { $0[key.boundKey] ?? $0[key.wildcardKey] }
                    }
                    guard let s = sock else {
                        stats.drops.record(.noSocket)
                        continue
                    }
                    stats.socketQueue.queueOps &+= 1
                    stats.sync.lockAcquisitions &+= 1
                    let ok = sockets[s].queue.withLock { q -> Bool in
                        guard q.count < demuxQueueCapacity else { return false }
                        q.append(word)
                        return true
                    }
                    if !ok {
                        stats.drops.record(.queueFull)
                        sockets[s].droppedFull.add(1, ordering: .relaxed)
                        stats.sync.atomicRMWs &+= 1
                        continue
                    }
                    stats.enqueued &+= 1
                    handoffCPU.classify(consumerCPU: control.consumerCPU.cpu, into: &stats.sync)
                    if nt == 0 || touched[nt - 1] != s {
                        touched[nt] = s
                        nt += 1
                    }
                case .dropped(let reason):
                    stats.parseDrops[Int(reason.rawValue)] &+= 1
                    stats.drops.record(DemuxDropReason(reason))
                }
            }
            if nt > 0 {
                // As the fast path: one fence per burst, then readiness bits.
                atomicMemoryFence(ordering: .sequentiallyConsistent)
                var newly = false
                for k in 0..<nt {
                    let mark = readySet.markReadyReporting(slot: touched[k])
                    if mark.issuedRMW { stats.sync.atomicRMWs &+= 1 }
                    if mark.newlyReady {
                        stats.sync.wakeups &+= 1
                        newly = true
                    }
                }
                if newly && readySet.wakeup.isArmed { stats.sync.recordParkerRing(woke: readySet.wakeup.ring()) }
            }
        }
        // The RMWs inside the pthread mutexes (PthreadLocked): modelled,
        // one CAS to lock and one exchange to unlock per acquisition.
        stats.sync.modelledAtomicRMWs &+= stats.sync.lockAcquisitions &* (ModelledRMWs.mutexLock &+ ModelledRMWs.mutexUnlock)
        report.stats = stats
        return report
    }
    let inputReport = input.join()
    let consumerReport = consumer.join()
    return DemuxRunReport(input: inputReport, consumer: consumerReport,
                          dropFull: sockets.map { $0.droppedFull.load(ordering: .relaxed) },
                          timedOut: control.abort.load(ordering: .relaxed), setupMemory: setupMemory)
}
