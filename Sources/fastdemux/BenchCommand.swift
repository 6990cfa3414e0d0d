import ArgumentParser
import Glibc
import Workloads

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Run a benchmark workload against the project's implementation and, with --impl all, every in-process baseline.",
        discussion: """
            Each implementation's run checks its own result; the command exits non-zero if any check \
            fails. The workloads (docs/Benchmarks.md has them measured against C peers):
            \(WorkloadRegistry.all.map { "- \($0.name): \($0.summary)" }.joined(separator: "\n"))

            With --json, one JSON object per implementation, one per line, with the fields workload, \
            impl, ops, seconds, mops (throughput workloads), ns_per_op, checked, note, the workload's \
            own fields (complete: false if --cap stopped the run), schemaVersion (\(JSONSchema.version); \
            raised when a field is removed or changes meaning) and version (the package version).
            """
    )

    @Argument(help: "The workload, or 'all'.")
    var workload: WorkloadChoice

    @Option(help: "Implementation to run: 'project' (the project's own), 'all', or one by name.")
    var impl: ImplChoice = .project

    @Flag(help: "Print exactly one JSON object per implementation, one per line.")
    var json = false

    @Option(help: "Override the workload's N (smaller runs for a quick look).")
    var n: Int?

    @Option(help: ArgumentHelp("Per-implementation wall-clock cap in seconds.", valueName: "seconds"))
    var cap: Double = 30

    func validate() throws {
        if let n, n <= 0 { throw ValidationError("--n must be positive") }
        if !(cap > 0) { throw ValidationError("--cap must be positive") }
        for w in workload.workloads where impl.implementations(of: w).isEmpty {
            throw ValidationError("workload \(w.name) has no impl '\(impl)'; known: \(w.impls.map(\.name).joined(separator: ", "))")
        }
    }

    func run() throws {
        let options = WorkloadOptions(n: n, capSeconds: cap)
        var failed = false
        for w in workload.workloads {
            for entry in impl.implementations(of: w) {
                let result = entry.run(options)
                if json {
                    try printJSONLine(result)
                } else {
                    print(result.summary)
                }
                fflush(nil)
                if !result.checked { failed = true }
            }
        }
        if failed { throw ExitCode(1) }
    }
}
