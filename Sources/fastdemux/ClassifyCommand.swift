import PacketIO
import ArgumentParser
import FastDemux
#if canImport(Glibc)
import Glibc
#endif

struct ClassifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "classify",
        abstract: "Print, for every packet of a pcap/pcapng file, the TCP/UDP flow it is delivered to or why it is dropped.",
        discussion: """
            One line per packet record, 1-based, in file order:
              index<TAB>proto<TAB>src<TAB>sport<TAB>dst<TAB>dport<TAB>verdict
            proto is tcp or udp; a packet not delivered to a TCP/UDP socket has '-' in the five \
            tuple columns. verdict is 'deliver' or a drop reason: \
            \(DropReason.allCases.map(\.name).joined(separator: ", ")).
            The parser behind it is checked against tshark's verdicts for the test captures \
            (Tests/Fixtures/oracle, Tests/PacketIOTests/OracleAgreementTests.swift).
            """
    )

    @Argument(help: "The capture file (pcap or pcapng).")
    var file: String

    @Flag(help: "Verify TCP/UDP checksums; failures are dropped as 'checksum'. (The IPv4 header checksum is always verified, as Linux does.)")
    var verifyChecksums = false

    func run() throws {
        let reader: PcapReader
        do {
            reader = try PcapReader(path: file)
        } catch {
            printError("fastdemux classify: error: \(error)")
            throw ExitCode(1)
        }
        let parser = PacketParser(options: ParserOptions(verifyChecksums: verifyChecksums))
        do {
            while let frame = try reader.next() {
                let result = parser.parse(frame.bytes, linkType: frame.linkType, wireLength: frame.wireLength)
                print(result.classificationLine(index: frame.index))
            }
        } catch {
            // The packets before the broken record were printed; say where it stopped.
            fflush(nil)
            printError("fastdemux classify: error: \(error)")
            throw ExitCode(1)
        }
    }
}

/// Writes a line to standard error (unbuffered, so it is ordered after the
/// flushed standard output).
func printError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { buf in
        _ = write(2, buf.baseAddress, buf.count)
    }
}
