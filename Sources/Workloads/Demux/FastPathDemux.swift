// fastpath: the project's demultiplexer under the demux workload.
import DemuxLab
import FastDemux
import SMPPrimitives
import Synchronization

/// The project's fast path: `Demux<QSBR>` with one socket per flow plus
/// the listening and wildcard sockets, and a SocketReadySet.
func runFastPath(_ traffic: DemuxBenchmarkTraffic, capSeconds: Double) -> DemuxRunReport {
    let demux = Demux<QSBR>(configuration: .init(queueCapacity: demuxQueueCapacity, ackPolicy: .default,
                                                 expectedConnections: traffic.flowCount))
    let readySet = SocketReadySet(capacity: traffic.socketCount)
    var sockets: [Socket] = []
    sockets.reserveCapacity(traffic.socketCount)
    for (i, f) in traffic.flows.enumerated() {
        let s = demux.makeSocket(f.proto == 6 ? .tcp : .udp)
        try! s.connect(to: InetEndpoint(IPAddress(ipv4: f.saddr), f.sport),
                       from: InetEndpoint(IPAddress(ipv4: f.daddr), f.dport),
                       initialReceiveSequence: f.proto == 6 ? traffic.initialSequence[i] : nil)
        sockets.append(s)
    }
    for p in traffic.listenPorts {
        let s = demux.makeSocket(.tcp)
        try! s.bind(InetEndpoint(.wildcard(.ipv4), p))
        try! s.listen()
        sockets.append(s)
    }
    for p in traffic.wildcardPorts {
        let s = demux.makeSocket(.udp)
        try! s.bind(InetEndpoint(.wildcard(.ipv4), p))
        sockets.append(s)
    }
    for s in sockets { readySet.add(s) }
    let control = DemuxControl()
    let ackCount = Atomic<Int>(0)
    let frames = traffic.frameCount
    let socketTable = sockets.map(SocketReference.init(unretained:))
    let setupMemory = ResidentMemory.now()

    let consumer = PinnedThread(cpu: 1, name: "demux-consumer") {
        demuxConsume(traffic, control: control, readySet: readySet,
                     drain: { slot, body in
                         socketTable[slot].withSocket { $0.receive(upTo: demuxQueueCapacity) { body($0.word) } }
                     })
    }
    let input = PinnedThread(cpu: 0, name: "demux-input") {
        QSBR.registerThread()
        let parser = PacketParser()
        let ctx = demux.makeInput(ackSink: { acks in ackCount.add(acks.count, ordering: .relaxed) })
        let batch = UnsafeMutablePointer<DemuxPacket>.allocate(capacity: demuxBurst)
        defer { batch.deallocate() }
        var report = runDemuxInput(frames: frames, control: control, readySet: readySet, capSeconds: capSeconds,
                                   periodic: { ctx.quiescent() }) { pass, base in
            ctx.burst { b in
                // Parse the burst, then deliver it as a batch (lookups,
                // socket touches and enqueues in separate passes).
                var m = 0
                for i in base..<(base + demuxBurst) {
                    let word = PacketRef(word: DemuxBenchmarkTraffic.packetWord(frame: i, pass: pass))
                    switch parser.parse(traffic.frame(i), linkType: .ethernet) {
                    case .packet(let p):
                        var tcp = p.tcp
                        if tcp != nil {
                            // Replay as if re-stamped: advance by the flow's bytes per pass.
                            tcp!.sequenceNumber &+= UInt32(truncatingIfNeeded: pass)
                                &* traffic.sequenceAdvance[Int(traffic.truth[i])]
                        }
                        batch[m] = DemuxPacket(packet: word, key: p.flow, tcp: tcp, payloadLength: p.payloadLength)
                        m += 1
                    case .dropped(let reason):
                        b.drop(parseReason: reason)
                    }
                }
                b.deliver(batch: UnsafeBufferPointer(start: batch, count: m)) { _, _ in }
            }
        }
        QSBR.unregisterThread()
        report.stats = ctx.stats
        return report
    }
    let inputReport = input.join()
    let consumerReport = consumer.join()
    let report = DemuxRunReport(input: inputReport, consumer: consumerReport,
                                dropFull: sockets.map { $0.counters.droppedQueueFull },
                                acks: ackCount.load(ordering: .relaxed),
                                timedOut: control.abort.load(ordering: .relaxed),
                                setupMemory: setupMemory, table: DemuxTableShape(demux.table, traffic))
    demux.table.close(sockets)
    withExtendedLifetime(readySet) {}
    return report
}
