import PacketIO
import Testing
import TestSupport

/// The `pcap` and `pcapng` fuzz targets' committed inputs (crashes they
/// found and hand-made hostile files, Tests/Fixtures/fuzz-regressions/),
/// replayed through their harness, `CaptureFuzzer`, as under libFuzzer
/// (scripts/fuzz.sh pcap|pcapng). An input that still breaks something traps.
@Suite("Fuzz regressions: pcap and pcapng")
struct CaptureFuzzRegressionTests {
    @Test(arguments: fuzzRegressionInputs("pcap"))
    func replayPcap(_ name: String) throws {
        let bytes = try #require(readFile(fuzzRegressionDirectory("pcap") + "/" + name))
        bytes.withUnsafeBytes { CaptureFuzzer.run($0, format: .pcap) }
    }

    @Test(arguments: fuzzRegressionInputs("pcapng"))
    func replayPcapng(_ name: String) throws {
        let bytes = try #require(readFile(fuzzRegressionDirectory("pcapng") + "/" + name))
        bytes.withUnsafeBytes { CaptureFuzzer.run($0, format: .pcapng) }
    }

    /// The committed captures, whole, pass the harness of their format.
    @Test(arguments: fuzzSeedCaptures())
    func seedCapturesPassTheHarness(_ path: String) throws {
        let bytes = try #require(readFile(path))
        let format: PcapReader.Format = path.hasSuffix(".pcapng") ? .pcapng : .pcap
        bytes.withUnsafeBytes { CaptureFuzzer.run($0, format: format) }
        #expect(try PcapReader(bytes: bytes, name: path).format == format)
    }
}
