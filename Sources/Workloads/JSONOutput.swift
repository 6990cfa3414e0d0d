// The JSON lines the tool writes: the package version, the schema version,
// a Codable value type for workload-specific fields, and the one encoder
// every `--json` output goes through.
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The smp-networking package's version: what `fastdemux --version` prints
/// and the `version` field of every JSON object the tool writes.
///
/// Concurrency: an immutable constant; any thread.
public let packageVersion = "0.2.0"

/// The version of the shape of the JSON objects the tool writes, carried
/// as the integer field `schemaVersion` by every top-level object (a
/// `bench` line, a `compare` run, a `replay`/`live`/`demo` report).
///
/// It is raised when a field is removed or renamed, or changes its type,
/// unit or meaning; adding a field leaves it as it is, so a reader should
/// ignore fields it does not know. Version 1: the fields of
/// ``BenchResult``, of `compare --json` and of the session reports as in
/// package version 0.2.0.
///
/// Concurrency: immutable constants; any thread.
public enum JSONSchema {
    /// The current `schemaVersion`.
    public static let version = 1
}

/// Encoding and decoding of one compact JSON object per line.
///
/// Keys are written sorted (JSON objects are unordered; sorting makes the
/// lines stable and diffable), slashes unescaped, no whitespace; strings
/// escape control characters, so a line never contains a newline.
///
/// Concurrency: stateless; any thread. Each call makes its own coder,
/// which costs a few allocations: for reports, not for hot paths.
public enum JSONLine {
    /// `value` as one line of compact JSON (no trailing newline).
    /// - Throws: `EncodingError` if `value`'s encoding throws (a
    ///   non-finite Double given to the encoder as is; ``JSONDouble`` writes
    ///   those as null instead).
    public static func encode<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// Decodes one line written by ``encode(_:)`` (or any JSON text).
    public static func decode<T: Decodable>(_ type: T.Type, from line: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(line.utf8))
    }
}

/// A Double as the JSON lines write it: rounded to three decimals (plenty
/// for timings and rates, and what keeps the lines short) or as many as
/// asked, `null` when not finite (JSON has no NaN or infinity).
///
/// Concurrency: a value type; any thread.
public struct JSONDouble: Codable, Sendable, Hashable, CustomStringConvertible {
    public var value: Double
    /// Decimals written (0...15).
    public var decimals: Int

    public init(_ value: Double, decimals: Int = 3) {
        precondition((0...15).contains(decimals), "JSONDouble: 0...15 decimals")
        self.value = value
        self.decimals = decimals
    }

    /// `v` rounded to `decimals` as it is written, or nil if it is written as null.
    public static func rounded(_ v: Double, decimals: Int = 3) -> Double? {
        guard v.isFinite else { return nil }
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (v * scale).rounded() / scale
        return scaled.isFinite ? scaled : v
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        if let r = JSONDouble.rounded(value, decimals: decimals) { try c.encode(r) } else { try c.encodeNil() }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        self.init(c.decodeNil() ? .nan : try c.decode(Double.self))
    }

    public var description: String {
        JSONDouble.rounded(value, decimals: decimals).map { String($0) } ?? "null"
    }
}

/// A JSON object key given as a string (`c.encode(x, forKey: "ops")`), for
/// objects whose keys are not all known at compile time.
public struct JSONKey: CodingKey, Hashable, ExpressibleByStringLiteral, Sendable {
    public var stringValue: String
    public var intValue: Int? { nil }

    public init(_ name: String) { stringValue = name }
    public init(stringLiteral name: String) { stringValue = name }
    public init?(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) { nil }
}

/// One JSON value of a workload-specific result field (``BenchResult/extra``).
///
/// Objects keep their fields in the order given (the text summary prints
/// them so); in JSON, keys are sorted (``JSONLine``). Doubles are written
/// as ``JSONDouble``s (three decimals). Equality is that of the JSON
/// written: numbers compare by their written value (`.int(1)` equals
/// `.double(1.0)`, as both are written `1`), objects regardless of order.
///
/// Concurrency: a value type; any thread.
public enum JSONValue: Sendable, Equatable, Codable, CustomStringConvertible {
    case int(Int)
    case double(Double)
    case bool(Bool)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    /// The field `key` of an object (nil for anything else).
    public subscript(key: String) -> JSONValue? {
        guard case .object(let fields) = self else { return nil }
        return fields.first { $0.0 == key }?.1
    }

    /// The number as written, for `.int` and `.double`.
    var writtenNumber: Double? {
        switch self {
        case .int(let v): return Double(v)
        case .double(let v): return JSONDouble.rounded(v)
        default: return nil
        }
    }

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.bool(let x), .bool(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)):
            return x.count == y.count && x.allSatisfy { field in b[field.0] == field.1 }
        default:
            guard let x = a.writtenNumber, let y = b.writtenNumber else { return false }
            return x == y
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .int(let v):
            var c = encoder.singleValueContainer()
            try c.encode(v)
        case .double(let v):
            try JSONDouble(v).encode(to: encoder)
        case .bool(let v):
            var c = encoder.singleValueContainer()
            try c.encode(v)
        case .string(let v):
            var c = encoder.singleValueContainer()
            try c.encode(v)
        case .array(let elements):
            var c = encoder.unkeyedContainer()
            for e in elements { try c.encode(e) }
        case .object(let fields):
            var c = encoder.container(keyedBy: JSONKey.self)
            for (k, v) in fields { try c.encode(v, forKey: JSONKey(k)) }
        }
    }

    /// Decodes any JSON value; an object's fields come sorted by key, a
    /// whole number as `.int`, `null` as a NaN `.double`.
    public init(from decoder: any Decoder) throws {
        if let c = try? decoder.container(keyedBy: JSONKey.self) {
            self = .object(try c.allKeys.sorted { $0.stringValue < $1.stringValue }.map {
                ($0.stringValue, try c.decode(JSONValue.self, forKey: $0))
            })
        } else if var c = try? decoder.unkeyedContainer() {
            var elements: [JSONValue] = []
            while !c.isAtEnd { elements.append(try c.decode(JSONValue.self)) }
            self = .array(elements)
        } else {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() {
                self = .double(.nan)
            } else if let v = try? c.decode(Bool.self) {
                self = .bool(v)
            } else if let v = try? c.decode(Int.self) {
                self = .int(v)
            } else if let v = try? c.decode(Double.self) {
                self = .double(v)
            } else {
                self = .string(try c.decode(String.self))
            }
        }
    }

    /// The value as one line of JSON (for text summaries).
    public var description: String {
        (try? JSONLine.encode(self)) ?? "?"
    }
}
