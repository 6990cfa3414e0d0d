import ArgumentParser
import Workloads

@main
struct FastDemuxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fastdemux",
        abstract: "SMP packet demultiplexing in user space: replay, classify and demultiplex live traffic; benchmark the primitives; compare stack organizations.",
        version: packageVersion,
        subcommands: [DemoCommand.self, ReplayCommand.self, ClassifyCommand.self, LiveCommand.self,
                      BenchCommand.self, CompareCommand.self, SoakCommand.self, ServeCommand.self]
    )
}
