import Glibc
import Testing
@testable import DemuxLab
import PacketIO
import TestSupport
@testable import FastDemux

func runSession(_ path: String, _ config: DemuxSessionConfiguration) throws -> DemuxSessionReport {
    var source = try CaptureFileSource(path: path)
    return try DemuxSession(config).run(&source)
}

@Suite struct ReplayTests {
    @Test(arguments: [1, 2, 3])
    func loopbackCaptureReplaysIntoItsTenFlows(workers: Int) throws {
        let demo = loopbackSamplePath
        let r = try runSession(demo, DemuxSessionConfiguration(workers: workers))
        #expect(r.sourceError == nil)
        #expect(r.framesIn == 112)
        #expect(r.delivered == 112)
        #expect(r.dropped == 0)
        #expect(r.isConserved)
        #expect(r.orderViolations == 0)
        #expect(r.socketsOpened == 20, "one socket per direction of 10 flows")
        #expect(r.flows.count == 10)
        let tcp = r.flows.filter { $0.key.transport == .tcp }
        let udp = r.flows.filter { $0.key.transport == .udp }
        #expect(tcp.count == 6 && tcp.allSatisfy { $0.packets == 12 && $0.deliveredPackets == 12 })
        #expect(udp.count == 4 && udp.allSatisfy { $0.packets == 10 && $0.deliveredPackets == 10 })
        #expect(r.flows.reduce(0) { $0 + $1.bytes } == r.bytesIn)
        #expect(r.flows.filter { $0.key.source.family == .ipv6 }.count == 5)
        #expect(r.input.offered == 112 && r.input.enqueued == 112)
        if workers > 1 { #expect(r.steering.reduce(0) { $0 + $1.puts } == 112) }
    }

    @Test func listenModeDeliversOnlyToListenedPorts() throws {
        let demo = loopbackSamplePath
        // The expected split, computed independently with the parser alone.
        var toServer = 0
        let reader = try PcapReader(path: demo)
        let parser = PacketParser()
        while let frame = try reader.next() {
            if let p = parser.parse(frame.bytes, linkType: frame.linkType, wireLength: frame.wireLength).packet,
               (p.flow.transport == .tcp && p.flow.destinationPort == 56099)
                || (p.flow.transport == .udp && p.flow.destinationPort == 53699) {
                toServer += 1
            }
        }
        #expect(toServer > 0)
        var config = DemuxSessionConfiguration()
        config.sockets = .listen([ListenSpec(.tcp, port: 56099), ListenSpec(.udp, port: 53699)])
        let r = try runSession(demo, config)
        #expect(r.socketsOpened == 4, "IPv4 and IPv6 wildcard for each port")
        #expect(r.delivered == toServer)
        #expect(r.input.drops[.noSocket] == 112 - toServer)
        #expect(r.isConserved)
    }

    @Test func listenSpecsParseAndRejectBadItems() throws {
        #expect(try ListenSpec.parseList("tcp:80,udp:53,TCP:8080")
                == [ListenSpec(.tcp, port: 80), ListenSpec(.udp, port: 53), ListenSpec(.tcp, port: 8080)])
        for bad in ["", "tcp", "tcp:0", "tcp:65536", "sctp:80", "tcp:80,", "udp:x"] {
            #expect(throws: ListenSpecError.self, "\(bad)") { try ListenSpec.parseList(bad) }
        }
    }

    @Test(arguments: [1, 4])
    func manyInterleavedFlowsKeepOrderAndConserve(workers: Int) throws {
        // 400 flows x 25 packets, round-robin interleaved: every flow direction
        // must see its packets in file order, whatever the input thread count
        // (4 input threads on 2 CPUs is oversubscribed on purpose).
        var w = PcapWriter(linkType: 1)
        let flows = 400, perFlow = 25
        for k in 0..<perFlow {
            for f in 0..<flows {
                let tcp = f % 2 == 0
                let client = 0x7f00_0001 + UInt32(f % 7)
                w.add(makeEthernetFrame(tcp: tcp, src: client, sport: UInt16(20_000 + f), dst: 0x7f00_0001,
                                        dport: tcp ? 80 : 53, seq: UInt32(1 + k * 10), payload: 10 + f % 50))
            }
        }
        let file = ScratchFile(w.bytes)
        var config = DemuxSessionConfiguration(workers: workers)
        config.poolBuffers = 512   // the reader must wait for the consumer now and then
        let r = try runSession(file.path, config)
        #expect(r.framesIn == flows * perFlow)
        #expect(r.flows.count == flows)
        #expect(r.flows.allSatisfy { $0.packets == perFlow && $0.deliveredPackets == perFlow })
        #expect(r.orderViolations == 0)
        #expect(r.isConserved)
        #expect(r.dropped == 0)
    }

    @Test func smallQueuesDropAsQueueFullAndStillConserve() throws {
        var w = PcapWriter(linkType: 1)
        for k in 0..<5_000 {
            w.add(makeEthernetFrame(tcp: false, src: 0x7f00_0002, sport: 4000, dst: 0x7f00_0001, dport: 53,
                                    payload: 20 + k % 10))
        }
        let file = ScratchFile(w.bytes)
        var config = DemuxSessionConfiguration()
        config.queueCapacity = 2
        config.pin = false
        let r = try runSession(file.path, config)
        #expect(r.framesIn == 5_000)
        #expect(r.delivered + r.input.drops[.queueFull] == 5_000)
        #expect(r.isConserved)
        #expect(r.flows.first?.deliveredPackets == r.delivered)
    }

    @Test func unsupportedLinkTypeIsADropReason() throws {
        var w = PcapWriter(linkType: 147)   // LINKTYPE_USER0
        for _ in 0..<3 { w.add([UInt8](repeating: 0x45, count: 60)) }
        let file = ScratchFile(w.bytes)
        let r = try runSession(file.path, DemuxSessionConfiguration())
        #expect(r.framesIn == 3)
        #expect(r.delivered == 0)
        #expect(r.parseDrops.count == 1)
        #expect(r.parseDrops.first?.reason == .unsupportedLinkType && r.parseDrops.first?.count == 3)
        #expect(r.input.drops[.unsupported] == 3)
        #expect(r.isConserved)
    }

    @Test func missingFileAndNonCaptureFailClearly() throws {
        #expect(throws: PcapError.self) { try CaptureFileSource(path: "/nonexistent/x.pcap") }
        do {
            _ = try CaptureFileSource(path: "/nonexistent/x.pcap")
        } catch {
            #expect("\(error)".contains("/nonexistent/x.pcap"))
            guard case .cannotOpen = error else { Issue.record("wrong error \(error)"); return }
        }
        let text = ScratchFile(Array("this is not a capture file at all\n".utf8), suffix: ".txt")
        do {
            _ = try CaptureFileSource(path: text.path)
            Issue.record("a text file was accepted")
        } catch {
            guard case .notACapture = error else { Issue.record("wrong error \(error)"); return }
        }
    }

    @Test func captureBrokenPartWayReportsWhatWasRead() throws {
        let sample = try #require(readFile(loopbackSamplePath))
        let file = ScratchFile(Array(sample.prefix(50_000)))
        let r = try runSession(file.path, DemuxSessionConfiguration())
        let error = try #require(r.sourceError as? PcapError)
        guard case .malformed(_, let n, _) = error else { Issue.record("wrong error \(error)"); return }
        #expect(n == r.framesIn)
        #expect(r.framesIn > 0 && r.framesIn < 112)
        #expect(r.isConserved)
    }

    @Test func syntheticTrafficFlowTableMatchesTheGeneratorTruth() throws {
        var source = SyntheticTrafficSource(frameCount: 20_000, passes: 2)
        var config = DemuxSessionConfiguration(workers: 2)
        config.queueCapacity = 4_096   // no queue_full drops: compare exact counts
        let r = try DemuxSession(config).run(&source)
        let traffic = source.traffic
        #expect(r.framesIn == 40_000)
        #expect(r.isConserved)
        #expect(r.dropped == 0)
        var byKey: [FlowKey: FlowRecord] = [:]
        for f in r.flows { byKey[f.key] = f }
        for (i, flow) in traffic.flows.enumerated() where traffic.perSocketPerPass[i] > 0 {
            let rec = byKey[flow.key.canonical]
            #expect(rec?.packets == 2 * traffic.perSocketPerPass[i], "flow \(i)")
            #expect(rec?.deliveredPackets == 2 * traffic.perSocketPerPass[i], "flow \(i)")
        }
    }

    @Test func syntheticTrafficInListenModeReachesOnlyListenersAndWildcards() throws {
        var source = SyntheticTrafficSource(frameCount: 20_000)
        let traffic = source.traffic
        var config = DemuxSessionConfiguration()
        config.queueCapacity = 4_096
        config.sockets = .listen(traffic.listenPorts.map { ListenSpec(.tcp, port: $0) }
                                 + traffic.wildcardPorts.map { ListenSpec(.udp, port: $0) })
        let r = try DemuxSession(config).run(&source)
        // Every TCP flow targets a listening port; UDP flows target other ports.
        var expected = 0
        for i in 0..<DemuxBenchmarkTraffic.socketCount where i >= DemuxBenchmarkTraffic.udpFlowCount {
            expected += traffic.perSocketPerPass[i]
        }
        #expect(r.delivered == expected)
        #expect(r.input.drops[.noSocket] == 20_000 - expected)
        #expect(r.isConserved)
    }
}
