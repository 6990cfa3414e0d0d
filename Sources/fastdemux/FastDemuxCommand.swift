import ArgumentParser
import Workloads

@main
struct FastDemuxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fastdemux",
        abstract: "SMP packet demultiplexing in user space: benchmarks, replay and classification.",
        subcommands: [BenchCommand.self, ClassifyCommand.self, ReplayCommand.self, LiveCommand.self, DemoCommand.self]
    )
}
