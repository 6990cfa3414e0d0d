import Foundation
import Testing
@testable import PacketIO
import TestSupport
@testable import FastDemux

/// Agreement with an independent oracle: tshark's per-packet outer 5-tuples
/// and tiers, stored as fixtures (Tests/Fixtures/oracle) by
/// scripts/regen-oracle.sh.
///
/// The oracle's comparison rule, ported: STRICT frames (TCP/UDP directly
/// under the outer IP, clean) must be delivered with the identical directed
/// tuple; LOOSE frames (the same but fragmented/truncated/malformed) must be
/// delivered identically or rejected; NONL4 frames must be rejected; BAD
/// frames and frames of link types outside the oracle's supported list are
/// not judged (only "no crash"). In addition the canonical key of every
/// STRICT frame must equal the oracle's `canon_key`.
@Suite struct OracleAgreementTests {
    /// The oracle's supported link prefixes (tshark protocol chains before the IP layer).
    static let supportedLinks: Set<Substring> = [
        "eth:ethertype", "eth:ethertype:vlan:ethertype", "eth:ethertype:ieee8021ad:ethertype:vlan:ethertype",
        "sll:ethertype", "sll", "raw", "null", "",
    ]

    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The directory given at run time that holds the tcpdump test-suite
/// captures (under `captures/tcpdump-tests`): `SMPNET_SHARED_DIR`, by
/// default a directory named `shared` beside the repository (as in CI).
    static var sharedDirectory: URL {
        if let env = ProcessInfo.processInfo.environment["SMPNET_SHARED_DIR"] {
            return URL(fileURLWithPath: env)
        }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    }

    struct Tally: CustomStringConvertible {
        var files = 0
        var frames = 0
        var strictOK = 0, looseDelivered = 0, looseRejected = 0, nonL4OK = 0
        var bad = 0, ignoredLink = 0, mismatches = 0, readErrors = 0
        var judged: Int { strictOK + looseDelivered + looseRejected + nonL4OK + mismatches }
        var description: String {
            "files=\(files) oracle_frames=\(frames) judged=\(judged) mismatches=\(mismatches) "
                + "strict_ok=\(strictOK) loose_delivered=\(looseDelivered) loose_rejected=\(looseRejected) "
                + "nonl4_rejected=\(nonL4OK) bad_ignored=\(bad) link_ignored=\(ignoredLink) "
                + "files_with_read_errors=\(readErrors)"
        }
    }

    /// Parses a fixture: `#file NAME ROWS` headers, each followed by ROWS oracle lines.
    static func loadFixture(_ url: URL) throws -> [String: [[Substring]]] {
        let text = try String(contentsOf: url, encoding: .utf8)
        var result: [String: [[Substring]]] = [:]
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let cols = line.split(separator: "\t", omittingEmptySubsequences: false)
            if cols[0] == "#file" {
                current = String(cols[1])
                result[current!] = []
            } else if !line.hasPrefix("#"), let c = current {
                result[c]!.append(cols)
            }
        }
        return result
    }

    static func parseCanonicalKey(_ text: Substring) -> FlowKey? {
        let f = text.split(separator: "|")
        guard f.count == 5, let a = IPAddress(String(f[1])), let pa = UInt16(f[2]),
              let b = IPAddress(String(f[3])), let pb = UInt16(f[4]) else { return nil }
        return FlowKey(transport: f[0] == "tcp" ? .tcp : .udp, source: a, sourcePort: pa, destination: b, destinationPort: pb)
    }

    /// Classifies every capture in `directory` and judges it against `fixture`.
    static func check(directory: URL, fixture: URL) throws -> Tally {
        let oracle = try loadFixture(fixture)
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(!names.isEmpty, "no captures in \(directory.path)")
        #expect(Set(names) == Set(oracle.keys),
                "fixture \(fixture.lastPathComponent) does not cover exactly the captures in \(directory.path): run scripts/regen-oracle.sh")
        let parser = PacketParser()
        var tally = Tally()
        var reported = 0
        for name in names {
            guard let rows = oracle[name] else { continue }
            tally.files += 1
            var results: [Int: ParseResult] = [:]
            do {
                let reader = try PcapReader(path: directory.appendingPathComponent(name).path)
                while let frame = try reader.next() {
                    results[frame.index] = parser.parse(frame.bytes, linkType: frame.linkType, wireLength: frame.wireLength)
                }
            } catch {
                // Unreadable or broken files are fine as long as nothing the
                // oracle judges was lost; the rule below sees missing frames
                // as rejected.
                tally.readErrors += 1
            }
            for row in rows {
                tally.frames += 1
                guard row.count >= 10, let index = Int(row[0]) else {
                    Issue.record("bad fixture row in \(name): \(row)")
                    continue
                }
                let tier = row[1], link = row[8]
                if tier == "BAD" { tally.bad += 1; continue }
                if tier != "NONL4" && !supportedLinks.contains(link) { tally.ignoredLink += 1; continue }
                let got = results[index]?.packet
                var ok: Bool
                var wantKey: FlowKey?
                if tier == "NONL4" {
                    ok = got == nil
                } else {
                    if let a = IPAddress(String(row[3])), let pa = UInt16(row[4]),
                       let b = IPAddress(String(row[5])), let pb = UInt16(row[6]) {
                        wantKey = FlowKey(transport: row[2] == "tcp" ? .tcp : .udp, source: a, sourcePort: pa,
                                          destination: b, destinationPort: pb)
                    }
                    let same = got != nil && wantKey != nil && got!.flow == wantKey!
                    ok = tier == "STRICT" ? same : (got == nil || same)
                    if ok && tier == "STRICT" && parseCanonicalKey(row[7]) != got!.flow.canonical {
                        ok = false
                    }
                }
                if ok {
                    switch tier {
                    case "STRICT": tally.strictOK += 1
                    case "LOOSE": if got == nil { tally.looseRejected += 1 } else { tally.looseDelivered += 1 }
                    default: tally.nonL4OK += 1
                    }
                } else {
                    tally.mismatches += 1
                    if reported < 20 {
                        reported += 1
                        let ours = results[index].map { $0.classificationLine(index: index) } ?? "\(index)\t(frame not read)"
                        Issue.record("\(name) frame \(index) \(tier) [\(row[9])]: oracle \(row[2...7].joined(separator: " ")), ours \(ours)")
                    }
                }
            }
        }
        return tally
    }

    @Test func tcpdumpCorpusAgreesWithTshark() throws {
        let captures = Self.sharedDirectory.appendingPathComponent("captures/tcpdump-tests")
        try #require(FileManager.default.fileExists(atPath: captures.path),
                     "\(captures.path) is missing: the test needs the tcpdump test-suite captures directory (SMPNET_SHARED_DIR, by default beside the repository)")
        let start = Date()
        let tally = try Self.check(directory: captures,
                                   fixture: Self.packageRoot.appendingPathComponent("Tests/Fixtures/oracle/tcpdump-tests.tsv"))
        print("oracle agreement (tcpdump-tests): \(tally) seconds=\(String(format: "%.2f", Date().timeIntervalSince(start)))")
        #expect(tally.mismatches == 0)
        #expect(tally.files >= 830)
        #expect(tally.strictOK > 3000)  // the corpus really exercises delivery
    }

    @Test func linkTypeFixturesAgreeWithTshark() throws {
        let tally = try Self.check(directory: Self.packageRoot.appendingPathComponent("Tests/Fixtures/captures"),
                                   fixture: Self.packageRoot.appendingPathComponent("Tests/Fixtures/oracle/fixtures.tsv"))
        print("oracle agreement (link-type fixtures): \(tally)")
        #expect(tally.mismatches == 0)
        #expect(tally.readErrors == 0)
        #expect(tally.strictOK == tally.frames)  // clean loopback traffic: every frame judged and delivered
    }
}
