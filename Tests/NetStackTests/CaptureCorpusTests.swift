import Testing
import Foundation
import FastDemux
import NetStack
import TestSupport

/// The tcpdump test-suite captures (SMPNET_SHARED_DIR, by default `shared`
/// beside the repository, as for OracleAgreementTests) through the input
/// path: parseNetwork, reassembly of every fragment, the reassembled
/// datagrams parsed again, every ICMP message decoded. Nothing may crash or
/// read out of bounds, every fragment is accounted for, and no buffer is
/// lost.
@Suite struct CaptureCorpusTests {
    static var corpus: String {
        let shared = ProcessInfo.processInfo.environment["SMPNET_SHARED_DIR"]
            ?? (packageRoot as NSString).deletingLastPathComponent + "/shared"
        return shared + "/captures/tcpdump-tests"
    }

    @Test func tcpdumpCorpusThroughReassemblyAndICMP() throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: Self.corpus))?.sorted() ?? []
        try #require(!names.isEmpty, "no captures in \(Self.corpus)")
        let h = Harness(configuration: ReassemblyConfiguration(maxQueues: 64, maxFragments: 256), poolBuffers: 512)
        var frames = 0, fragments = 0, tooBig = 0, icmp = 0, icmpDropped = 0, reparsed = 0
        var kinds: [String: Int] = [:]
        func decode(_ bytes: UnsafeRawBufferPointer, _ n: NetworkPacket) {
            icmp += 1
            switch ICMPInput.decode(bytes, n) {
            case .dropped(let r): icmpDropped += 1; kinds["dropped:\(r)", default: 0] += 1
            case .message(let m): kinds[String("\(m)".prefix(while: { $0 != "(" })), default: 0] += 1
            }
        }
        for name in names {
            guard let inputs = try? parserFuzzInputs(fromCapture: Self.corpus + "/" + name) else { continue }
            for input in inputs where input[1] == 0 {
                let link = ParserFuzzer.linkTypes[Int(input[0])]
                let frame = Array(input[4...])
                let wire = frame.count + (Int(input[2]) << 8 | Int(input[3]))
                frames += 1
                let result = frame.withUnsafeBytes { PacketParser().parseNetwork($0, linkType: link, wireLength: wire) }
                guard case .network(let n) = result else { continue }
                guard n.fragment != nil else {
                    frame.withUnsafeBytes { decode($0, n) }
                    continue
                }
                fragments += 1
                guard let p = frame.withUnsafeBytes({ h.pool.allocate(copying: $0) }) else { tooBig += 1; continue }
                if case .complete(let d) = h.table.insert(p, n, now: h.t0) {
                    let bytes = h.datagrams.bytes(d.packet)
                    switch PacketParser().parseNetwork(bytes, linkType: link) {
                    case .network(let whole) where whole.fragment == nil: decode(bytes, whole)
                    case .network: Issue.record("\(name): a reassembled datagram is still a fragment")
                    default: break
                    }
                    reparsed += 1
                    h.datagrams.free(d.packet)
                }
            }
            // Each capture is its own run: expire what it left.
            h.table.expire(now: h.at(120))
        }
        let s = h.table.statistics
        print("corpus: \(names.count) files, \(frames) frames, \(fragments) fragments (\(tooBig) larger than a buffer),",
              "\(s.datagramsReassembled) datagrams reassembled, \(reparsed) reparsed, \(icmp) ICMP (\(icmpDropped) refused)")
        print("corpus drops:", ReassemblyDropReason.allCases.filter { s.dropped($0) > 0 }.map { "\($0)=\(s.dropped($0))" })
        print("corpus ICMP:", kinds.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        #expect(s.isConserved && h.buffersConserved)
        #expect(s.fragmentsIn == fragments - tooBig && s.fragmentsQueued == 0)
        #expect(fragments > 0 && icmp > 0)
    }
}
