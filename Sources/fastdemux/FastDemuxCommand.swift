import ArgumentParser
import Workloads

@main
struct FastDemuxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fastdemux",
        abstract: "SMP packet demultiplexing in user space: benchmarks, replay and classification.",
        subcommands: [DemoCommand.self, ReplayCommand.self, ClassifyCommand.self, LiveCommand.self,
                      BenchCommand.self, CompareCommand.self]
    )
}
