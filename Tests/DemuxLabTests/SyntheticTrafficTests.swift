import Testing
import TestSupport
import FastDemux
import DemuxLab

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
}
