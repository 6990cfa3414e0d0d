// Typed command-line values: comma lists, organization names, listening
// sockets, workload and implementation names. ArgumentParser parses them
// and, for a bad value, prints the option's help and exits non-zero.
import ArgumentParser
import DemuxLab
import FastDemux
import Workloads

/// One option value that is a comma-separated list (`--connections
/// 6,192`). The option may also be repeated (`--connections 6
/// --connections 192`); ``Swift/Array/joined()`` puts the lists together.
/// Spaces are ignored; an empty item or one that `Element`
/// does not parse makes the whole value invalid.
struct CommaList<Element: ExpressibleByArgument>: ExpressibleByArgument {
    var elements: [Element]

    init(_ elements: [Element]) { self.elements = elements }

    init?(argument: String) {
        var out: [Element] = []
        for item in argument.split(separator: ",", omittingEmptySubsequences: false) {
            guard let element = Element(argument: String(item.filter { $0 != " " })) else { return nil }
            out.append(element)
        }
        elements = out
    }

    var defaultValueDescription: String { elements.map(\.defaultValueDescription).joined(separator: ",") }
    static var allValueStrings: [String] { Element.allValueStrings }
    static var defaultCompletionKind: CompletionKind { Element.defaultCompletionKind }
}

extension Array {
    /// The elements of every list given, in command-line order.
    func joined<E>() -> [E] where Element == CommaList<E> { flatMap(\.elements) }
}

// OrganizationKind is String-raw-valued and CaseIterable: its names parse
// and are listed in the help and in the error for a bad one.
extension OrganizationKind: ExpressibleByArgument {}

/// `--listen` items: `tcp:80`, `udp:53` (``ListenSpec/parseList(_:)`` with
/// exactly one item).
extension ListenSpec: ExpressibleByArgument {
    public init?(argument: String) {
        guard let specs = try? ListenSpec.parseList(argument), specs.count == 1 else { return nil }
        self = specs[0]
    }
}

/// A command-line value that is one of `allCases`, named by its
/// `description` (which the help lists as the values).
protocol NamedChoice: ExpressibleByArgument, CaseIterable, CustomStringConvertible {}

extension NamedChoice {
    init?(argument: String) {
        guard let choice = Self.allCases.first(where: { $0.description == argument }) else { return nil }
        self = choice
    }
}

/// `bench`'s WORKLOAD: a workload of ``WorkloadRegistry`` by name, or all.
enum WorkloadChoice: NamedChoice, Hashable {
    case all
    case named(String)

    /// `all`, the registry's workloads, then stack-udp-echo, stack-http
    /// and stack-tcp-stream (which `all` does not run: they need root and
    /// run in rounds of their own).
    static var allCases: [WorkloadChoice] {
        [.all] + WorkloadRegistry.all.map { .named($0.name) } + [.named(StackUDPEchoBenchmark.workload)]
            + StackHTTPBenchmark.Kind.allCases.map { .named($0.rawValue) }
    }

    /// Whether this is stack-udp-echo.
    var isStackUDPEcho: Bool { self == .named(StackUDPEchoBenchmark.workload) }

    /// stack-http or stack-tcp-stream, if this is one of them.
    var stackHTTPKind: StackHTTPBenchmark.Kind? {
        guard case .named(let name) = self else { return nil }
        return StackHTTPBenchmark.Kind(rawValue: name)
    }

    var description: String {
        switch self {
        case .all: return "all"
        case .named(let name): return name
        }
    }

    /// The workloads chosen, in registry order.
    var workloads: [Workload] {
        switch self {
        case .all: return WorkloadRegistry.all
        case .named(let name): return WorkloadRegistry.all.filter { $0.name == name }
        }
    }
}

/// `bench --impl`: the project's implementation, all of them, or one by
/// name (any workload's; ``BenchCommand`` checks the workload has it).
enum ImplChoice: NamedChoice, Hashable {
    case project
    case all
    case named(String)

    /// `project`, `all`, then every implementation name of the registry
    /// once, in registry order.
    static var allCases: [ImplChoice] {
        var names: [String] = []
        for w in WorkloadRegistry.all {
            for i in w.impls where !names.contains(i.name) { names.append(i.name) }
        }
        for i in StackUDPEchoBenchmark.Implementation.allCases.map(\.rawValue)
            + StackHTTPBenchmark.Implementation.allCases.map(\.rawValue) where !names.contains(i) {
            names.append(i)
        }
        return [.project, .all] + names.map { .named($0) }
    }

    var description: String {
        switch self {
        case .project: return "project"
        case .all: return "all"
        case .named(let name): return name
        }
    }

    /// The implementations of `workload` chosen; empty if it has no
    /// implementation of this name.
    func implementations(of workload: Workload) -> [(name: String, run: Workload.Run)] {
        switch self {
        case .project: return Array(workload.impls.prefix(workload.projectImpls))
        case .all: return workload.impls
        case .named(let name): return workload.impls.filter { $0.name == name }
        }
    }
}

/// Prints `value` as one JSON line (``JSONLine``) on standard output.
func printJSONLine<T: Encodable>(_ value: T) throws {
    print(try JSONLine.encode(value))
}
