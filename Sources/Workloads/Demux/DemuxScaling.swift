// What the demux lines report about size (`fastdemux bench demux --flows
// N`): the flow count, resident memory, and how the fast path's connected
// table looks to the packets of the frame set (docs/Benchmarks.md, "How
// cost grows").
import DemuxLab
import FastDemux
import SMPPrimitives

/// The fast path's connected (exact 5-tuple) table as the frame set's
/// packets meet it, measured after the run (the table did not change
/// during it): chain shape, and the nodes a lookup visits
/// (``PCBTable/connectedLookupProbes(_:)``), averaged over the packets of
/// one pass, so weighted by the Zipf popularity.
struct DemuxTableShape: Sendable {
    var buckets = 0
    var keys = 0
    var longestChain = 0
    /// Mean nodes visited by an exact lookup that finds its flow.
    var probesPerHit = 0.0
    /// Mean nodes visited by an exact lookup that misses (the 1% of
    /// packets for listening and wildcard sockets).
    var probesPerMiss = 0.0
    /// Over all packets.
    var probesPerLookup = 0.0

    /// Walks the table: O(flows + misses per pass) stripe-locked probes,
    /// outside the measured time.
    init<Flavor>(_ table: PCBTable<Flavor>, _ traffic: DemuxBenchmarkTraffic) {
        let chains = table.connectedChainStatistics
        buckets = chains.bucketCount
        keys = chains.keys
        longestChain = chains.longestChain
        var hitProbes = 0, hits = 0
        for (i, f) in traffic.flows.enumerated() where traffic.perSocketPerPass[i] > 0 {
            hitProbes += table.connectedLookupProbes(f.key) * traffic.perSocketPerPass[i]
            hits += traffic.perSocketPerPass[i]
        }
        var missProbes = 0, misses = 0
        let parser = PacketParser()
        for i in 0..<traffic.frameCount where Int(traffic.truth[i]) >= traffic.flowCount {
            if case .packet(let p) = parser.parse(traffic.frame(i), linkType: .ethernet) {
                missProbes += table.connectedLookupProbes(p.flow)
                misses += 1
            }
        }
        probesPerHit = Double(hitProbes) / Double(max(hits, 1))
        probesPerMiss = Double(missProbes) / Double(max(misses, 1))
        probesPerLookup = Double(hitProbes + missProbes) / Double(max(hits + misses, 1))
    }
}

/// The size fields of a demux line: `flows`, the flows the frame set
/// reaches at all (`flows_seen`), exact-lookup misses per pass (packets
/// for listening/wildcard sockets), resident memory after set-up and at
/// the run's peak (KiB, process-wide: the frame set counts in both), and
/// for the fast path its table's shape and probes.
func demuxScalingFields(traffic: DemuxBenchmarkTraffic, report r: DemuxRunReport) -> [(String, JSONValue)] {
    let seen = traffic.perSocketPerPass.prefix(traffic.flowCount).reduce(0) { $0 + ($1 > 0 ? 1 : 0) }
    let misses = traffic.perSocketPerPass.dropFirst(traffic.flowCount).reduce(0, +)
    var fields: [(String, JSONValue)] = [
        ("flows", .int(traffic.flowCount)),
        ("flows_seen", .int(seen)),
        ("exact_lookup_misses_per_pass", .int(misses)),
        ("rss_setup_kb", .int(r.setupMemory.rssKB)),
        // At least what was resident at set-up: the peak (VmHWM) is the
        // process's, and another run in the same process (tests run in
        // parallel) may have reset it since, to a resident size below ours.
        ("rss_peak_kb", .int(max(ResidentMemory.now().peakKB, r.setupMemory.rssKB))),
    ]
    if let t = r.table {
        func round3(_ v: Double) -> JSONValue { .double((v * 1000).rounded() / 1000) }
        fields.append(("table", .object([
            ("buckets", .int(t.buckets)),
            ("keys", .int(t.keys)),
            ("longest_chain", .int(t.longestChain)),
            ("probes_per_hit", round3(t.probesPerHit)),
            ("probes_per_miss", round3(t.probesPerMiss)),
            ("probes_per_lookup", round3(t.probesPerLookup)),
        ])))
    }
    return fields
}
