import Glibc

/// One JSON value of a benchmark result line.
public enum JSONValue: Sendable, Equatable {
    case int(Int)
    case double(Double)
    case bool(Bool)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool { a.rendered == b.rendered }

    /// Compact JSON text.
    public var rendered: String {
        switch self {
        case .int(let v): return String(v)
        case .double(let v):
            if !v.isFinite { return "null" }
            // Three significant decimals are plenty for timings.
            let scaled = (v * 1000).rounded() / 1000
            return scaled == scaled.rounded() && abs(scaled) < 1e15 ? String(Int(scaled)) : String(scaled)
        case .bool(let v): return v ? "true" : "false"
        case .string(let s): return JSONValue.quote(s)
        case .array(let a): return "[" + a.map(\.rendered).joined(separator: ",") + "]"
        case .object(let o):
            return "{" + o.map { JSONValue.quote($0.0) + ":" + $0.1.rendered }.joined(separator: ",") + "}"
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

/// The result of running one implementation of one workload: the fields
/// BENCHMARKS.md requires (`workload, impl, ops, seconds, mops/ns_per_op,
/// checked`) followed by workload-specific extras, in insertion order.
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
    /// Workload-specific fields, printed after the standard ones.
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

    public var json: JSONValue {
        var fields: [(String, JSONValue)] = [
            ("workload", .string(workload)), ("impl", .string(impl)),
            ("ops", .int(ops)), ("seconds", .double(seconds)),
        ]
        if let mops { fields.append(("mops", .double(mops))) }
        let ns = nsPerOp ?? (ops > 0 ? seconds * 1e9 / Double(ops) : 0)
        fields.append(("ns_per_op", .double(ns)))
        fields.append(("checked", .bool(checked)))
        fields += extra
        if let note { fields.append(("note", .string(note))) }
        return .object(fields)
    }

    /// A readable one-line summary for terminal output.
    public var summary: String {
        var s = "\(workload) \(impl): "
        if let mops { s += String(format2(mops)) + " Mops, " }
        s += format2(nsPerOp ?? (ops > 0 ? seconds * 1e9 / Double(ops) : 0)) + " ns/op, "
        s += "\(ops) ops in \(format2(seconds)) s, checked=\(checked)"
        for (k, v) in extra { s += ", \(k)=\(v.rendered)" }
        if let note { s += " (\(note))" }
        return s
    }
}

func format2(_ v: Double) -> String {
    let r = (v * 100).rounded() / 100
    return String(r)
}

/// A note to add when a workload names more CPUs than this machine has.
public func pinningNote(requiredCPUs: Int) -> String? {
    let n = onlineCPUCountForNote
    return n < requiredCPUs ? "pinned modulo \(n) CPUs (workload names \(requiredCPUs))" : nil
}

import SMPPrimitives
var onlineCPUCountForNote: Int { onlineCPUCount }
