import Testing
import TestSupport
import FastDemux
import DemuxLab
import Glibc

@Suite("Synthetic traffic")
struct SyntheticTrafficTests {
    @Test func benchmarkFramesMatchTheirTruth() {
        let t = DemuxBenchmarkTraffic(frameCount: 4096)
        let parser = PacketParser()
        #expect(Set(t.listenPorts).count == 16 && Set(t.flows).count == 4096)
        var nonMatching = 0
        for i in 0..<t.frameCount {
            guard let p = parser.parse(t.frame(i), linkType: .ethernet).packet else {
                Issue.record("frame \(i) did not parse")
                return
            }
            let sock = Int(t.truth[i])
            if sock < DemuxBenchmarkTraffic.flowCount {
                #expect(p.flow == t.flows[sock].key)
            } else {
                nonMatching += 1
            }
        }
        // About 1% match no flow.
        #expect(nonMatching > 10 && nonMatching < 100)
        #expect(t.perSocketPerPass.reduce(0, +) == t.frameCount)
    }

    /// `--flows`: the same generator over more flows; socket numbers past
    /// 65,535 survive (truth is 32 bits), half the flows are UDP, and
    /// with the default count the frames are those of the defined set.
    @Test func scaledFlowCount() {
        let n = 70_000
        let t = DemuxBenchmarkTraffic(frameCount: 8192, flowCount: n)
        #expect(t.flowCount == n && t.udpFlowCount == n / 2 && t.socketCount == n + 32)
        #expect(Set(t.flows).count == n && t.perSocketPerPass.count == n + 32)
        #expect(t.flows.prefix(n / 2).allSatisfy { $0.proto == 17 } && t.flows.suffix(n / 2).allSatisfy { $0.proto == 6 })
        let parser = PacketParser()
        var beyond16Bits = false
        for i in 0..<t.frameCount {
            let sock = Int(t.truth[i])
            #expect(sock < t.socketCount)
            if sock >= 65_536 { beyond16Bits = true }
            if sock < n, let p = parser.parse(t.frame(i), linkType: .ethernet).packet { #expect(p.flow == t.flows[sock].key) }
        }
        #expect(beyond16Bits)
        let d = DemuxBenchmarkTraffic(frameCount: 1024), e = DemuxBenchmarkTraffic(frameCount: 1024, flowCount: 4096)
        #expect(d.flows == e.flows && (0..<1024).allSatisfy { d.truth[$0] == e.truth[$0] })
        #expect(memcmp(d.frames, e.frames, 1024 * DemuxBenchmarkTraffic.stride) == 0)
    }
}
