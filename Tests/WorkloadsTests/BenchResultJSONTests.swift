import Testing
import Workloads

/// The JSON line of a bench result: the standard fields under the names the
/// C peer harness's lines use, the extras under their own, `schemaVersion`
/// and `version`, one line, and decoding it gives the result back.
@Suite struct BenchResultJSONTests {
    static let sample = BenchResult.throughput(
        workload: "pcq-1p1c", impl: "pcq", ops: 2_000_000, seconds: 0.0141234, checked: true,
        note: "a note with \"quotes\", a / and a\nnewline",
        extra: [
            ("complete", .bool(true)),
            ("producers", .int(1)),
            ("other_load", .double(0.123456)),
            ("received_per_producer", .array([.int(1_000_000), .int(1_000_000)])),
            ("stats", .object([("high_water", .int(1024)), ("kind", .string("exact"))])),
        ])

    @Test func lineCarriesSchemaVersionAndTheStandardFields() throws {
        let line = try Self.sample.jsonLine()
        #expect(!line.contains("\n"))
        let object = try JSONLine.decode(JSONValue.self, from: line)
        #expect(object["schemaVersion"] == .int(JSONSchema.version))
        #expect(object["version"] == .string(packageVersion))
        #expect(object["workload"] == .string("pcq-1p1c"))
        #expect(object["impl"] == .string("pcq"))
        #expect(object["ops"] == .int(2_000_000))
        #expect(object["seconds"] == .double(0.014))  // three decimals
        #expect(object["mops"] == .double(141.609))
        #expect(object["ns_per_op"] == .double(7.062))
        #expect(object["checked"] == .bool(true))
        #expect(object["note"] == .string("a note with \"quotes\", a / and a\nnewline"))
        #expect(object["complete"] == .bool(true))
        #expect(object["producers"] == .int(1))
        #expect(object["other_load"] == .double(0.123))
        #expect(object["received_per_producer"] == .array([.int(1_000_000), .int(1_000_000)]))
        #expect(object["stats"]?["high_water"] == .int(1024))
        #expect(object["stats"]?["kind"] == .string("exact"))
        // Names as the C peer harness's lines spell them; no other standard field.
        #expect(line.contains("\"ns_per_op\":7.062"))
        #expect(line.contains("\"checked\":true"))
        #expect(line.contains("\"schemaVersion\":1"))
        guard case .object(let fields) = object else { Issue.record("not an object"); return }
        #expect(Set(fields.map(\.0)) == [
            "schemaVersion", "version", "workload", "impl", "ops", "seconds", "mops", "ns_per_op", "checked",
            "note", "complete", "producers", "other_load", "received_per_producer", "stats",
        ])
    }

    @Test func decodingGivesTheResultBack() throws {
        let back = try JSONLine.decode(BenchResult.self, from: Self.sample.jsonLine())
        #expect(back.workload == "pcq-1p1c")
        #expect(back.impl == "pcq")
        #expect(back.ops == 2_000_000)
        #expect(back.seconds == 0.014)
        #expect(back.mops == 141.609)
        #expect(back.checked)
        #expect(back.note == Self.sample.note)
        #expect(back.complete == true)
        // Extras come back sorted by key, equal as JSON.
        #expect(back.extra.map(\.0) == ["complete", "other_load", "producers", "received_per_producer", "stats"])
        for (key, value) in Self.sample.extra { #expect(back[extra: key] == value, "\(key)") }
        #expect(try back.jsonLine() == Self.sample.jsonLine())
    }

    @Test func latencyResultHasNoMops() throws {
        let r = BenchResult(workload: "mailbox-pingpong", impl: "mailbox", ops: 10, seconds: 1,
                            nsPerOp: 250.5, checked: false, note: "why")
        let object = try JSONLine.decode(JSONValue.self, from: r.jsonLine())
        #expect(object["mops"] == nil)
        #expect(object["ns_per_op"] == .double(250.5))
        #expect(object["checked"] == .bool(false))
        #expect(object["complete"] == nil)
        #expect(r.complete == nil)
    }

    @Test func nonFiniteNumbersAreNull() throws {
        let r = BenchResult(workload: "w", impl: "i", ops: 0, seconds: .infinity, mops: .nan, checked: false,
                            extra: [("ratio", .double(.nan))])
        let line = try r.jsonLine()
        #expect(line.contains("\"seconds\":null"))
        #expect(line.contains("\"mops\":null"))
        #expect(line.contains("\"ratio\":null"))
        #expect(line.contains("\"ns_per_op\":0"))
    }

    @Test func valuesCompareAsWritten() {
        #expect(JSONValue.int(1) == .double(1.0))
        #expect(JSONValue.double(0.1234) == .double(0.1229))
        #expect(JSONValue.double(0.1234) != .double(0.1244))
        #expect(JSONValue.object([("a", .int(1)), ("b", .bool(true))]) == .object([("b", .bool(true)), ("a", .int(1))]))
        #expect(JSONValue.object([("a", .int(1))]) != .object([("a", .int(1)), ("b", .int(2))]))
        #expect(JSONValue.string("1") != .int(1))
        #expect(JSONDouble(0.12345, decimals: 4).description == "0.1235")
        #expect(JSONValue.array([.double(1.5), .string("x/y")]).description == "[1.5,\"x/y\"]")
    }

    @Test func summaryPrintsExtrasAsJSON() {
        let s = Self.sample.summary
        #expect(s.hasPrefix("pcq-1p1c pcq: 141.61 Mops, 7.06 ns/op, 2000000 ops in 0.01 s, checked=true"))
        #expect(s.contains("complete=true"))
        #expect(s.contains("received_per_producer=[1000000,1000000]"))
        #expect(s.contains("stats={\"high_water\":1024,\"kind\":\"exact\"}"))
    }
}
