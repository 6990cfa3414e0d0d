@testable import DemuxLab
import Testing

// The soak's verdicts (SoakRun.summarize) on hand-made report series: a
// working set that reaches a new peak late raises RSS in a step that is not
// a leak; growth while the working set stays within its peaks is; and the
// heap left after the run is judged whatever RSS did.

private func report(_ index: Int, rssMiB: Double, peakOpen: Int, reclaimPeak: Int = 4129) -> SoakReport {
    var flows = FlowSocketCounters()
    flows.peakOpen = peakOpen
    return SoakReport(
        index: index, seconds: Double(index * 10), residentBytes: Int(rssMiB * 1_048_576),
        reclamationPending: 0, reclamationPeak: reclaimPeak, offered: 100, delivered: 100, drops: [],
        parseDrops: [], drainedAtClose: 0, conserved: true, socketsOpen: 0, connectedEntries: 0,
        boundEntries: 0, flowSockets: flows, binds: 0, closes: 0, packetsPerSecond: 0)
}

@Suite struct SoakVerdictTests {
    let config = SoakConfiguration(duration: 60, reportInterval: 10)

    /// The CI run that failed this way: the flow socket cap first reached at
    /// 50 s (peaks rise), RSS +9.2 MiB in that step, flat afterwards.
    @Test func aLateNewPeakOfTheWorkingSetIsNotALeak() {
        let reports = [report(1, rssMiB: 47.0, peakOpen: 5000), report(2, rssMiB: 53.7, peakOpen: 6800),
                       report(3, rssMiB: 54.3, peakOpen: 6800), report(4, rssMiB: 55.9, peakOpen: 6800),
                       report(5, rssMiB: 65.1, peakOpen: 8192, reclaimPeak: 8225),
                       report(6, rssMiB: 65.4, peakOpen: 8192, reclaimPeak: 8225)]
        let s = SoakRun.summarize(reports, config, heapResidual: 40_000)
        #expect(s.passed, "\(s.failures)")
        #expect(s.growthJudgedFrom == 50)
        #expect(s.growth == Int(65.4 * 1_048_576) - Int(65.1 * 1_048_576))
        #expect(s.secondHalfGrowth! > 8 << 20)
    }

    @Test func growthWithinTheEarlierPeaksFails() {
        let reports = (1...6).map { report($0, rssMiB: 40 + 4 * Double($0), peakOpen: 8192) }
        let s = SoakRun.summarize(reports, config, heapResidual: 0)
        #expect(!s.passed)
        #expect(s.growthJudgedFrom == 30)
        #expect(s.failures.contains { $0.contains("did not level off") })
    }

    @Test func aNewPeakInTheLastIntervalLeavesRSSUnjudgedButNotTheHeap() {
        let reports = [report(1, rssMiB: 40, peakOpen: 100), report(2, rssMiB: 41, peakOpen: 200),
                       report(3, rssMiB: 60, peakOpen: 300)]
        let clean = SoakRun.summarize(reports, config, heapResidual: 10_000)
        #expect(clean.passed)
        #expect(clean.growth == nil && clean.growthJudgedFrom == nil)
        let leaking = SoakRun.summarize(reports, config, heapResidual: 3 << 20)
        #expect(!leaking.passed)
        #expect(leaking.failures.contains { $0.contains("heap in use") })
    }
}
