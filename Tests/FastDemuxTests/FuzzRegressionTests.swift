import Testing
import TestSupport

/// The `parser` fuzz target's committed inputs (crashes it found and
/// hand-made hostile frames, Tests/Fixtures/fuzz-regressions/parser/),
/// replayed through its harness, `ParserFuzzer`: the same parse
/// invariants and the same Demux delivery as under libFuzzer
/// (scripts/fuzz.sh parser). An input that still breaks something traps.
@Suite("Fuzz regressions: parser")
struct ParserFuzzRegressionTests {
    @Test(arguments: fuzzRegressionInputs("parser"))
    func replay(_ name: String) throws {
        let bytes = try #require(readFile(fuzzRegressionDirectory("parser") + "/" + name))
        let harness = ParserFuzzer()
        bytes.withUnsafeBytes { harness.run($0) }
    }

    /// Every frame of the committed captures, as the seed corpus has them,
    /// passes the harness (the seeds themselves must not be findings).
    @Test func seedFramesPassTheHarness() throws {
        let harness = ParserFuzzer()
        var inputs = 0
        for path in fuzzSeedCaptures() {
            for input in try parserFuzzInputs(fromCapture: path) {
                input.withUnsafeBytes { harness.run($0) }
                inputs += 1
            }
        }
        #expect(inputs > 800)   // 419 frames, two inputs each
    }
}
