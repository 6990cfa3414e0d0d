import Glibc
import SMPPrimitives

/// The result of running one implementation of one workload, and the JSON
/// line `fastdemux bench --json` prints for it.
///
/// The line has the fields every workload has, which the lines of the C
/// peer harness have too and which are compared field by field:
/// `workload`, `impl`, `ops`, `seconds`, `mops` (throughput workloads),
/// `ns_per_op`, `checked` and `note` (when there is one); then the
/// workload-specific ``extra`` fields under their own names (`complete`
/// among them); and `schemaVersion` (``JSONSchema/version``) and
/// `version` (``packageVersion``). Decoding a line gives the result back, with every
/// field not listed here in ``extra`` (sorted by key).
///
/// Concurrency: a value type; any thread.
public struct BenchResult: Sendable {
    public var workload: String
    public var impl: String
    public var ops: Int
    public var seconds: Double
    /// Million operations per second; nil for latency workloads.
    public var mops: Double?
    /// Nanoseconds per operation; defaults to seconds/ops when nil.
    public var nsPerOp: Double?
    /// True only if the run verified its own result.
    public var checked: Bool
    /// Why `checked` is false (or anything a reader should know).
    public var note: String?
    /// Workload-specific fields, in the order the summary prints them (the
    /// JSON line sorts keys); none may have a standard field's name.
    public var extra: [(String, JSONValue)]

    public init(workload: String, impl: String, ops: Int, seconds: Double,
                mops: Double? = nil, nsPerOp: Double? = nil, checked: Bool,
                note: String? = nil, extra: [(String, JSONValue)] = []) {
        self.workload = workload
        self.impl = impl
        self.ops = ops
        self.seconds = seconds
        self.mops = mops
        self.nsPerOp = nsPerOp
        self.checked = checked
        self.note = note
        self.extra = extra
    }

    /// Throughput-style result: `mops = ops / seconds / 1e6`.
    public static func throughput(workload: String, impl: String, ops: Int, seconds: Double,
                                  checked: Bool, note: String? = nil,
                                  extra: [(String, JSONValue)] = []) -> BenchResult {
        BenchResult(workload: workload, impl: impl, ops: ops, seconds: seconds,
                    mops: seconds > 0 ? Double(ops) / seconds / 1e6 : 0,
                    nsPerOp: ops > 0 ? seconds * 1e9 / Double(ops) : 0,
                    checked: checked, note: note, extra: extra)
    }

    /// The workload-specific field `key`, if the result has it.
    public subscript(extra key: String) -> JSONValue? {
        extra.first { $0.0 == key }?.1
    }

    /// Whether the run did all its N operations: the `complete` field,
    /// false when the wall-clock cap stopped it (nil if the workload does
    /// not report it).
    public var complete: Bool? {
        if case .bool(let b)? = self[extra: "complete"] { return b }
        return nil
    }

    /// Nanoseconds per operation as reported: ``nsPerOp``, or seconds/ops.
    public var reportedNsPerOp: Double {
        nsPerOp ?? (ops > 0 ? seconds * 1e9 / Double(ops) : 0)
    }

    /// The JSON line (``JSONLine``, compact, keys sorted).
    public func jsonLine() throws -> String { try JSONLine.encode(self) }

    /// A readable one-line summary for terminal output.
    public var summary: String {
        var s = "\(workload) \(impl): "
        if let mops { s += String(format2(mops)) + " Mops, " }
        s += format2(reportedNsPerOp) + " ns/op, "
        s += "\(ops) ops in \(format2(seconds)) s, checked=\(checked)"
        for (k, v) in extra { s += ", \(k)=\(v)" }
        if let note { s += " (\(note))" }
        return s
    }
}

/// The standard fields' keys; every other key of a line is an extra.
private let standardKeys: Set<String> = [
    "schemaVersion", "version", "workload", "impl", "ops", "seconds", "mops", "ns_per_op", "checked", "note",
]

extension BenchResult: Codable {
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: JSONKey.self)
        try c.encode(JSONSchema.version, forKey: "schemaVersion")
        try c.encode(packageVersion, forKey: "version")
        try c.encode(workload, forKey: "workload")
        try c.encode(impl, forKey: "impl")
        try c.encode(ops, forKey: "ops")
        try c.encode(JSONDouble(seconds), forKey: "seconds")
        try c.encodeIfPresent(mops.map { JSONDouble($0) }, forKey: "mops")
        try c.encode(JSONDouble(reportedNsPerOp), forKey: "ns_per_op")
        try c.encode(checked, forKey: "checked")
        try c.encodeIfPresent(note, forKey: "note")
        for (key, value) in extra {
            // An extra never replaces a standard field (the C peer
            // harness's lines are compared by those names).
            assert(!standardKeys.contains(key), "extra field '\(key)' has a standard field's name")
            guard !standardKeys.contains(key) else { continue }
            try c.encode(value, forKey: JSONKey(key))
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: JSONKey.self)
        workload = try c.decode(String.self, forKey: "workload")
        impl = try c.decode(String.self, forKey: "impl")
        ops = try c.decode(Int.self, forKey: "ops")
        seconds = try c.decode(JSONDouble.self, forKey: "seconds").value
        mops = try c.decodeIfPresent(JSONDouble.self, forKey: "mops")?.value
        nsPerOp = try c.decodeIfPresent(JSONDouble.self, forKey: "ns_per_op")?.value
        checked = try c.decode(Bool.self, forKey: "checked")
        note = try c.decodeIfPresent(String.self, forKey: "note")
        extra = try c.allKeys.filter { !standardKeys.contains($0.stringValue) }
            .sorted { $0.stringValue < $1.stringValue }
            .map { ($0.stringValue, try c.decode(JSONValue.self, forKey: $0)) }
    }
}

func format2(_ v: Double) -> String {
    let r = (v * 100).rounded() / 100
    return String(r)
}

/// A note to add when a workload names more CPUs than this machine has.
public func pinningNote(requiredCPUs: Int) -> String? {
    let n = onlineCPUCount
    return n < requiredCPUs ? "pinned modulo \(n) CPUs (workload names \(requiredCPUs))" : nil
}

/// `note`, then the ``pinningNote(requiredCPUs:)`` if there is one.
func pinnedNote(_ note: String, requiredCPUs: Int = 2) -> String {
    pinningNote(requiredCPUs: requiredCPUs).map { note + "; " + $0 } ?? note
}
