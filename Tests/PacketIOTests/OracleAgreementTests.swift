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
///
/// Where the parser follows Linux and tshark's dissector does not, a STRICT
/// frame the parser drops is accepted only through an entry of the
/// fixture's exceptions list (`NAME.exceptions.tsv` beside `NAME.tsv`),
/// which names the drop reason the parser must give and why Linux drops
/// the frame. Entries whose reason is about addresses are also checked
/// against the oracle's own addresses (a `multicast_destination` exception
/// holds only where tshark saw a multicast destination, ...), and every
/// entry must match at least one frame, so the list cannot go stale.
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
        /// STRICT frames dropped as an exception entry allows, by reason.
        var excepted: [String: Int] = [:]
        var exceptedTotal: Int { excepted.values.reduce(0, +) }
        var judged: Int { strictOK + looseDelivered + looseRejected + nonL4OK + mismatches + exceptedTotal }
        var description: String {
            "files=\(files) oracle_frames=\(frames) judged=\(judged) mismatches=\(mismatches) "
                + "strict_ok=\(strictOK) loose_delivered=\(looseDelivered) loose_rejected=\(looseRejected) "
                + "nonl4_rejected=\(nonL4OK) bad_ignored=\(bad) link_ignored=\(ignoredLink) "
                + "files_with_read_errors=\(readErrors) linux_exceptions=\(exceptedTotal) "
                + excepted.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",")
        }
    }

    /// One line of an exceptions list: `file<TAB>frames<TAB>reason<TAB>why`.
    /// `file` is a capture name or `*`; `frames` is `*` or a comma list of
    /// frame numbers and ranges (`3,7-9`).
    struct Exception {
        var file: String
        var frames: [ClosedRange<Int>]?  // nil: every frame
        var reason: DropReason
        var line: Int

        func matches(file name: String, frame: Int, reason r: DropReason) -> Bool {
            (file == "*" || file == name) && r == reason
                && (frames == nil || frames!.contains { $0.contains(frame) })
        }
    }

    static func loadExceptions(_ url: URL) throws -> [Exception] {
        guard FileManager.default.fileExists(atPath: url.path) else { return [] }
        var result: [Exception] = []
        let text = try String(contentsOf: url, encoding: .utf8)
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.isEmpty || line.hasPrefix("#") { continue }
            let cols = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard cols.count == 4, let reason = DropReason(name: String(cols[2])), !cols[3].isEmpty else {
                Issue.record("\(url.lastPathComponent):\(n + 1): want file<TAB>frames<TAB>reason<TAB>why with a known reason")
                continue
            }
            var frames: [ClosedRange<Int>]?
            if cols[1] != "*" {
                frames = []
                for part in cols[1].split(separator: ",") {
                    let ends = part.split(separator: "-").compactMap { Int($0) }
                    guard ends.count == 1 || (ends.count == 2 && ends[0] <= ends[1]) else {
                        Issue.record("\(url.lastPathComponent):\(n + 1): bad frame list \(cols[1])")
                        continue
                    }
                    frames!.append(ends[0]...ends[ends.count - 1])
                }
            }
            if cols[0] == "*" && !Self.addressReasons.contains(reason) {
                Issue.record("\(url.lastPathComponent):\(n + 1): a '*' file needs a reason checked against the oracle's addresses")
            }
            result.append(Exception(file: String(cols[0]), frames: frames, reason: reason, line: n + 1))
        }
        return result
    }

    /// Reasons whose claim the oracle's own columns can confirm.
    static let addressReasons: Set<DropReason> = [
        .multicastDestination, .broadcastDestination, .martianSource, .martianDestination, .v4MappedSource,
    ]

    /// Whether tshark's tuple supports the parser's reason (true for reasons
    /// the oracle's columns cannot judge).
    static func oracleAgrees(with reason: DropReason, proto: Substring, source: IPAddress, destination: IPAddress) -> Bool {
        func isMulticast(_ a: IPAddress) -> Bool {
            a.family == .ipv4 ? a.ipv4Value >> 28 == 0xe : a.high >> 56 == 0xff
        }
        func isLoopback(_ a: IPAddress) -> Bool {
            a.family == .ipv4 ? a.ipv4Value >> 24 == 127 : a.high == 0 && a.low == 1
        }
        switch reason {
        case .multicastDestination:
            return isMulticast(destination)
        case .broadcastDestination:
            return destination.family == .ipv4
                && (destination.ipv4Value == 0xffff_ffff || (source.ipv4Value == 0 && destination.ipv4Value == 0))
        case .martianSource:
            return isLoopback(source) || isMulticast(source)
                || (source.family == .ipv4 && (source.ipv4Value >> 24 == 0 || source.ipv4Value == 0xffff_ffff))
        case .martianDestination:
            return isLoopback(destination)
                || (destination.family == .ipv4 && destination.ipv4Value >> 24 == 0)
                || (destination.family == .ipv6 && (destination.high | destination.low == 0
                    || (isMulticast(destination) && (destination.high >> 48) & 0xf <= 1)))
        case .v4MappedSource:
            return proto == "tcp" && source.family == .ipv6 && source.high == 0 && source.low >> 32 == 0xffff
        default:
            return true
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

    /// Classifies every capture in `directory` and judges it against `fixture`
    /// and its exceptions list.
    static func check(directory: URL, fixture: URL) throws -> Tally {
        let oracle = try loadFixture(fixture)
        let exceptionsURL = fixture.deletingPathExtension().appendingPathExtension("exceptions.tsv")
        let exceptions = try loadExceptions(exceptionsURL)
        var used = [Bool](repeating: false, count: exceptions.count)
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
                if !ok && tier == "STRICT" && got == nil, let reason = results[index]?.dropReason,
                   let a = wantKey?.source, let b = wantKey?.destination,
                   oracleAgrees(with: reason, proto: row[2], source: a, destination: b),
                   let e = exceptions.firstIndex(where: { $0.matches(file: name, frame: index, reason: reason) }) {
                    used[e] = true
                    tally.excepted[reason.name, default: 0] += 1
                    continue
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
                    if let dump = mismatchDump {
                        let ours = results[index].map { $0.classificationLine(index: index) } ?? "\(index)\t(frame not read)"
                        dump.append("\(name)\t\(index)\t\(tier)\t\(row[2...7].joined(separator: " "))\t\(ours)\n")
                    }
                }
            }
        }
        for (e, wasUsed) in zip(exceptions, used) where !wasUsed {
            Issue.record("\(exceptionsURL.lastPathComponent):\(e.line): exception for \(e.file) \(e.reason.name) matches no frame: remove it")
        }
        return tally
    }

    /// With SMPNET_ORACLE_MISMATCHES=PATH set, every mismatch is also
    /// appended to PATH (`file frame tier oracle-tuple ours`), to review
    /// candidates for the exceptions lists after a parser rule changes.
    final class MismatchDump: @unchecked Sendable {
        // @unchecked Sendable: used by one test at a time, under `lock`.
        let path: String
        let lock = NSLock()
        init(path: String) { self.path = path }
        func append(_ line: String) {
            lock.lock()
            defer { lock.unlock() }
            if let h = FileHandle(forWritingAtPath: path) {
                h.seekToEndOfFile()
                h.write(line.data(using: .utf8)!)
                h.closeFile()
            } else {
                _ = FileManager.default.createFile(atPath: path, contents: line.data(using: .utf8))
            }
        }
    }

    static let mismatchDump: MismatchDump? = ProcessInfo.processInfo.environment["SMPNET_ORACLE_MISMATCHES"]
        .map { MismatchDump(path: $0) }

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
        // The corpus really exercises delivery (and the stricter rules):
        // 3273 frames are STRICT for tshark; 466 of them are Linux
        // exceptions, mostly multicast and broadcast traffic.
        #expect(tally.strictOK > 2500)
        #expect(tally.strictOK + tally.exceptedTotal > 3000)
    }

    @Test func linkTypeFixturesAgreeWithTshark() throws {
        let tally = try Self.check(directory: Self.packageRoot.appendingPathComponent("Tests/Fixtures/captures"),
                                   fixture: Self.packageRoot.appendingPathComponent("Tests/Fixtures/oracle/fixtures.tsv"))
        print("oracle agreement (link-type fixtures): \(tally)")
        #expect(tally.mismatches == 0)
        #expect(tally.readErrors == 0)
        // Clean loopback traffic: every frame judged and delivered, except
        // where the capture was relinked to raw IP (a tun device for Linux,
        // where 127.0.0.1 and ::1 are martian).
        #expect(tally.strictOK + tally.exceptedTotal == tally.frames)
    }
}
