/// Sizes and knobs shared by all workloads. Defaults are the sizes each
/// workload defines (its ``Workload/summary``; the definitions are in
/// docs/BenchmarkWorkloads.md); tests pass smaller ones.
public struct WorkloadOptions: Sendable {
    /// Overrides the workload's operation count N (items, lookups, messages,
    /// schedules or passes, as the workload defines N). nil = the workload's own.
    public var n: Int?
    /// Per-implementation wall-clock cap in seconds; a capped run reports
    /// `complete:false` and checks only what it did.
    public var capSeconds: Double
    /// Optional generic size knob (e.g. number of keys or flows); nil = default.
    public var size: Int?

    public init(n: Int? = nil, capSeconds: Double = 30, size: Int? = nil) {
        self.n = n
        self.capSeconds = capSeconds
        self.size = size
    }
}

/// A benchmark workload: its name (the `workload` field of its JSON lines,
/// the same in the lines of the C peer harness) and its implementations,
/// the project's own first, then the in-process baselines.
public struct Workload: Sendable {
    public typealias Run = @Sendable (WorkloadOptions) -> BenchResult

    public let name: String
    public let summary: String
    /// (impl name, runner); the first `projectImpls` are the project's
    /// implementations.
    public let impls: [(name: String, run: Run)]
    /// How many of `impls` are the project's own (what `bench` runs by
    /// default): 1 unless the project has two designs of the same thing.
    public let projectImpls: Int

    public init(name: String, summary: String, impls: [(name: String, run: Run)], projectImpls: Int = 1) {
        self.name = name
        self.summary = summary
        self.impls = impls
        self.projectImpls = projectImpls
    }
}

/// Every workload `fastdemux bench` knows, in the order
/// docs/BenchmarkWorkloads.md defines them.
public enum WorkloadRegistry {
    public static var all: [Workload] {
        var w: [Workload] = []
        // Each workload folder contributes its entries here.
        w += pcqWorkloads
        w += rcuWorkloads
        w += mailboxWorkloads
        w += deferWorkloads
        w += demuxWorkloads
        w += kernelUDPWorkloads
        return w
    }

    public static func named(_ name: String) -> Workload? {
        all.first { $0.name == name }
    }
}
