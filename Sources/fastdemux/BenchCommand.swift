import ArgumentParser
import Glibc
import Workloads

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Run a workload of BENCHMARKS.md against the project's implementation and, with --impl all, every in-process baseline.",
        discussion: "Workloads: " + WorkloadRegistry.all.map(\.name).joined(separator: ", ")
            + ". Exits non-zero if any implementation fails its own check."
    )

    @Argument(help: "The workload name, or 'all'.")
    var workload: String

    @Option(help: "Implementation to run: its name, 'all', or 'project' (the default: the project's own).")
    var impl: String = "project"

    @Flag(help: "Print exactly one JSON object per implementation, one per line.")
    var json = false

    @Option(help: "Override the workload's N (smaller runs for a quick look).")
    var n: Int?

    @Option(help: "Per-implementation wall-clock cap in seconds.")
    var cap: Double = 30

    func validate() throws {
        if workload != "all" && WorkloadRegistry.named(workload) == nil {
            throw ValidationError("unknown workload '\(workload)'; known: \(WorkloadRegistry.all.map(\.name).joined(separator: ", "))")
        }
        if let n, n <= 0 { throw ValidationError("--n must be positive") }
        if cap <= 0 { throw ValidationError("--cap must be positive") }
    }

    func run() throws {
        let workloads = workload == "all" ? WorkloadRegistry.all : [WorkloadRegistry.named(workload)!]
        let options = WorkloadOptions(n: n, capSeconds: cap)
        var failed = false
        for w in workloads {
            let selected: [(name: String, run: Workload.Run)]
            switch impl {
            case "all": selected = w.impls
            case "project": selected = Array(w.impls.prefix(1))
            default:
                selected = w.impls.filter { $0.name == impl }
                if selected.isEmpty {
                    throw ValidationError("workload \(w.name) has no impl '\(impl)'; known: \(w.impls.map(\.name).joined(separator: ", "))")
                }
            }
            for entry in selected {
                let result = entry.run(options)
                if json {
                    print(result.json.rendered)
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
